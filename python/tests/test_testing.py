"""gdn2.check and gdn2.testing.assert_matches_reference: the command line's verdict on arrays in memory."""

import json
import subprocess

import numpy as np
import pytest

import gdn2
import gdn2.testing

NAMES = ("q", "k", "v", "g", "b", "w")


def candidate_of(inputs, precision="f32", **options):
    """A correct implementation: the reference itself run in float32 (as a user's float32 kernel would be)."""
    args = [inputs[n] for n in NAMES]
    o, ht = gdn2.forward(*args, initial_state=inputs.get("h0"), precision=precision, **options)
    grads = gdn2.backward(*args, do=inputs["do"], dht=inputs["dht"], initial_state=inputs.get("h0"),
                          precision=precision, **options)
    return {"o": o, "ht": ht, **grads}


def cli_check_json(cli, tmp_path, inputs, cand):
    """`gdn2 check --json` on inputs and candidate saved as .npy files under tmp_path (in/, cand/)."""
    for d, arrays in (("in", inputs), ("cand", cand)):
        (tmp_path / d).mkdir()
        for n, a in arrays.items():
            np.save(tmp_path / d / f"{n}.npy", a)
    return subprocess.run([cli, "check", "--in", str(tmp_path / "in"), "--candidate", str(tmp_path / "cand"), "--json"],
                          capture_output=True, text=True)


def test_a_correct_float32_candidate_passes():
    inputs = gdn2.random_inputs(B=2, T=150, H=2, HV=4, K=8, V=8, seed=1)
    report = gdn2.check(inputs, candidate_of(inputs))
    print(report)
    assert report.passed and bool(report)
    assert sorted(r.name for r in report.rows) == sorted(["o", "ht", "dq", "dk", "dv", "dh0", "db", "dw", "dg"])
    assert all(r.verdict == "ok" and r.ratio <= r.bound for r in report.rows)


def test_a_planted_one_percent_error_in_one_chunk_of_db_is_caught():
    inputs = gdn2.random_inputs(B=2, T=300, H=2, HV=2, K=8, V=8, seed=2)
    cand = candidate_of(inputs)
    chunk = 2
    db = cand["db"].copy()
    db[1, chunk * 64:(chunk + 1) * 64, 0] *= 1.01  # 1% in one chunk of 64 tokens, one head, one sequence
    cand["db"] = db
    report = gdn2.check(inputs, cand)
    print(report.table)
    row = {r.name: r for r in report.rows}["db"]
    print("db: ratio", row.ratio, "local", row.local_ratio, "block", row.worst_block.sequence, row.worst_block.chunk,
          row.worst_block.head)
    assert not report.passed and row.verdict == "FAIL"
    assert (row.worst_block.sequence, row.worst_block.chunk, row.worst_block.head) == (1, chunk, 0)
    assert all(r.verdict == "ok" for r in report.rows if r.name != "db")
    with pytest.raises(AssertionError, match="db .*FAIL"):
        gdn2.testing.assert_matches_reference(inputs, cand)


def test_missing_tensors_fail_unless_only_names_the_subset():
    inputs = gdn2.random_inputs(seed=3)
    cand = candidate_of(inputs)
    del cand["dq"]
    report = gdn2.check(inputs, cand)
    print(report.table)
    assert not report.passed and {r.name: r.verdict for r in report.rows}["dq"] == "missing"
    report = gdn2.check(inputs, {"o": cand["o"], "ht": cand["ht"]}, only=["o", "ht"])
    print(report.table)
    assert report.passed and [r.name for r in report.rows] == ["o", "ht"]


def test_report_equals_the_cli_json(tmp_path, cli):
    inputs = gdn2.random_inputs(B=1, T=90, H=2, HV=2, K=8, V=8, seed=4)
    cand = candidate_of(inputs)
    cand["dw"] = cand["dw"] * np.float32(1.001)
    r = cli_check_json(cli, tmp_path, inputs, cand)
    print("CLI exit", r.returncode)
    report = gdn2.check(inputs, cand)
    print(report.json)
    assert r.returncode == 1 and not report.passed
    assert json.loads(r.stdout) == json.loads(report.json)


def test_bad_inputs_raise_value_error():
    inputs = gdn2.random_inputs(seed=5)
    inputs["b"] = inputs["b"] + 1
    with pytest.raises(ValueError, match="erase gate must lie in") as e:
        gdn2.check(inputs, {"o": np.zeros(1)})
    print(e.value)
    with pytest.raises(ValueError, match="tolerance"):
        gdn2.check(gdn2.random_inputs(seed=5), {"o": np.zeros(1)}, tolerance="loose")


def test_the_five_line_example_of_the_docs():
    def my_gdn2(inputs):  # a user's implementation (here: the reference in float32)
        return candidate_of(inputs)

    # -- the docs' example, as written --
    inputs = gdn2.random_inputs(seed=0, HV=4)
    gdn2.testing.assert_matches_reference(inputs, my_gdn2(inputs))


def test_big_endian_candidates_and_only_as_a_string():
    """A '>f4' candidate is read by value (it read as bytes: non-finite, FAIL), and only="o,ht" means the two names."""
    inputs = gdn2.random_inputs(seed=2, B=1, T=40, H=1, HV=1, K=4, V=4)
    o, ht = gdn2.forward(*(inputs[n] for n in "qkvgbw"), initial_state=inputs["h0"])
    cand = {"o": o.astype(">f4"), "ht": ht.astype(">f8")}
    report = gdn2.check(inputs, cand, only="o,ht")
    print(report)
    assert report.passed
    cand["o"] = (o * 1.01).astype(">f4")
    assert not gdn2.check(inputs, cand, only="o,ht").passed


def test_big_endian_inputs_and_candidates_are_judged_as_the_cli_judges_their_files(tmp_path, cli):
    """Before: the command line refused a big-endian input file (exit 2) and failed a big-endian candidate's row
    ("dtype '>f4' (big-endian float32) is not supported"), while gdn2.check read both arrays by value."""
    inputs = gdn2.random_inputs(seed=8, B=1, T=40, H=2, HV=2, K=4, V=4)
    cand = candidate_of(inputs)
    big_in = {n: a.astype(a.dtype.newbyteorder(">")) for n, a in inputs.items()}
    big_cand = {n: a.astype(a.dtype.newbyteorder(">")) for n, a in cand.items()}
    print("candidate dtypes:", sorted({a.dtype.str for a in big_cand.values()}))
    report = gdn2.check(big_in, big_cand)
    print(report.table)
    assert report.passed and report.json == gdn2.check(inputs, cand).json
    r = cli_check_json(cli, tmp_path, big_in, big_cand)
    print("CLI exit", r.returncode, r.stderr)
    assert r.returncode == 0 and json.loads(r.stdout) == json.loads(report.json)


def test_the_table_is_shown_once(capsys):
    """A pass prints the table; a failure puts it in the AssertionError only (before: printed as well, so pytest
    showed it twice, under the error and under 'Captured stdout')."""
    inputs = gdn2.random_inputs(seed=6, B=1, T=20, H=1, HV=1, K=4, V=4)
    good = candidate_of(inputs)
    gdn2.testing.assert_matches_reference(inputs, good)
    passed_out = capsys.readouterr().out
    bad = dict(good, o=good["o"] * 1.01)
    with pytest.raises(AssertionError) as e:
        gdn2.testing.assert_matches_reference(inputs, bad)
    failed_out = capsys.readouterr().out
    print("pass printed", len(passed_out), "characters; failure printed", len(failed_out))
    assert "PASSED" in passed_out and failed_out == ""
    assert "FAIL" in str(e.value)


@pytest.mark.parametrize("dtype, code, note", [
    (np.float16, "f2", "dtype must be float32 or float64, got float16 ('<f2'); convert it with x.astype(np.float32)"),
    (np.int32, "i4", "dtype must be float32 or float64, got int32 ('<i4'); convert it with x.astype(np.float32)"),
    (np.complex128, "c16", "dtype '<c16' (complex128) is not supported: gdn2 reads float32, float64, int32 and int64; "
                           "gdn2's tensors are real: save x.real if its imaginary part is zero"),
])
def test_a_candidate_of_a_dtype_gdn2_does_not_read_fails_its_row_as_in_the_cli(tmp_path, cli, dtype, code, note):
    """Before: a float16 (or complex) candidate raised ValueError and no report was made, while an int32 one failed
    its row ("dtype i4, expected float32 or float64"); gdn2 check exited 2 on a float16 file likewise. And its row's
    bound read "1e-05  auto: f4 output", a float32 candidate's, though nothing was compared: now none ("-")."""
    inputs = gdn2.random_inputs(B=1, T=40, H=2, HV=2, K=4, V=4, seed=7)
    cand = candidate_of(inputs)
    cand["o"] = cand["o"].astype(dtype)
    report = gdn2.check(inputs, cand)
    print(report.table)
    rows = {r.name: r for r in report.rows}
    assert not report.passed and rows["o"].verdict == "FAIL"
    assert rows["o"].dtype == code and rows["o"].note == note and rows["o"].shape == [1, 40, 2, 4]
    o_line = next(line for line in report.table.splitlines() if line.startswith("o "))
    print("o's row:", o_line, "| bound", rows["o"].bound, repr(rows["o"].bound_reason))
    assert rows["o"].bound == 0 and rows["o"].bound_reason == ""
    assert "auto" not in o_line and "e-05" not in o_line
    assert all(r.verdict == "ok" for r in report.rows if r.name != "o")
    r = cli_check_json(cli, tmp_path, inputs, cand)
    print("CLI exit", r.returncode, r.stderr)
    assert r.returncode == 1 and json.loads(r.stdout) == json.loads(report.json)
