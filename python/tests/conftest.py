"""Shared fixtures: random layer inputs (fixed seeds) and the gdn2 command line the bindings are compared with."""

import os
import pathlib
import shutil

import numpy as np
import pytest


def random_inputs(seed=0, B=2, T=70, H=2, HV=4, K=8, V=6, h0=True, dtype=np.float64, g_low=-0.5,
                  value_head_gates=False):
    """q, k, v, g, b, w (+ h0, do, dht) in the reference's ranges, as arrays named like the CLI's files; the gates
    g, b per key head [B,T,H,K], or per value head [B,T,HV,K] with value_head_gates."""
    rng = np.random.default_rng(seed)
    GH = HV if value_head_gates else H
    x = {
        "q": rng.standard_normal((B, T, H, K)),
        "k": rng.standard_normal((B, T, H, K)) / np.sqrt(K),
        "v": rng.standard_normal((B, T, HV, V)),
        "g": rng.uniform(g_low, 0, (B, T, GH, K)),
        "b": rng.uniform(0, 1, (B, T, GH, K)),
        "w": rng.uniform(0, 1, (B, T, HV, V)),
        "do": rng.standard_normal((B, T, HV, V)),
        "dht": rng.standard_normal((B, HV, K, V)),
    }
    if h0:
        x["h0"] = rng.standard_normal((B, HV, K, V))
    return {n: a.astype(dtype) for n, a in x.items()}


@pytest.fixture(scope="session")
def cli():
    """Path of the gdn2 command line (GDN2_CLI, set by CTest; else the build next to the package)."""
    path = os.environ.get("GDN2_CLI")
    if not path:
        import gdn2
        path = str(pathlib.Path(gdn2.__file__).parents[2] / "reference" / "gdn2")  # <build>/python/gdn2/..
        if not os.path.exists(path):
            path = shutil.which("gdn2") or path
    if not os.path.exists(path):
        pytest.skip(f"the gdn2 command line is not built ({path})")
    return path


def pytest_sessionfinish(session, exitstatus):
    """A run in which every test was skipped (no PyTorch, no GPU) or none was collected exits 77, which CTest
    reports as skipped (SKIP_RETURN_CODE), rather than 0 (passed) or 5 (failed)."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    stats = reporter.stats if reporter else {}
    ran = sum(len(stats.get(k, [])) for k in ("passed", "failed", "error", "xfailed", "xpassed"))
    if exitstatus in (0, 5) and ran == 0:
        session.exitstatus = 77
