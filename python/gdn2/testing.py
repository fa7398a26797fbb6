"""gdn2 for pytest: check a GDN-2 implementation against the float64 reference.

    import gdn2.testing
    from my_project import my_gdn2                   # yours: a dict of inputs -> a dict of outputs and gradients

    def test_my_gdn2_matches_the_reference():
        inputs = gdn2.random_inputs(seed=0)
        gdn2.testing.assert_matches_reference(inputs, my_gdn2(inputs))

The verdict is gdn2.check's (the logic of `gdn2 check`): every tensor the reference produces for these inputs must
be present (or name a subset with only=[...]), finite, and within the bound both over the whole tensor and in
every (sequence, chunk of C tokens, head) block. A failure shows the command line's table.
"""

from . import check as _check

__all__ = ["assert_matches_reference"]


def assert_matches_reference(inputs, candidate, **options):
    """Fails (AssertionError with the table) unless gdn2.check(inputs, candidate, **options) passes; returns the
    report. A pass prints the table (the measured ratios, in pytest's captured output or with -s); a failure puts
    it in the AssertionError only, so it is shown once. Options: tolerance, only, and gdn2.forward's (form,
    chunk_size, variant, scale, front-end)."""
    __tracebackhide__ = True
    report = _check(inputs, candidate, **options)
    if not report.passed:
        raise AssertionError("gdn2: the candidate does not match the float64 reference\n" + report.table)
    print(report.table)
    return report
