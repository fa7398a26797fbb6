#!/usr/bin/python3
"""An independent Gated DeltaNet-2 in NumPy, and a check of `gdn2 forward` against it.

Written from the paper's Eq. 10 in matrix form, S_t = (I - k_t (b_t*k_t)^T) Diag(exp g_t) S_{t-1} + k_t (w_t*v_t)^T,
o_t = S_t^T (scale q_t), sharing no code with the C++ reference. It generates random inputs (mild and strong decay,
initial states, grouped value heads, packed sequences), runs the `gdn2` binary on them for both forms, several chunk
sizes and both precisions, and compares. Exit status 0 if every case is within its bound, 1 otherwise, 77 (skipped)
when NumPy is missing.

    /usr/bin/python3 tests/independent/gdn2_numpy.py --gdn2 build/reference/gdn2
"""
import argparse
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:
    print("SKIPPED: numpy is not installed (apt-get install python3-numpy)")
    sys.exit(77)


def gdn2_numpy(q, k, v, g, b, w, h0=None, cu_seqlens=None, scale=None):
    """q, k, g, b: [B,T,H,K]; v, w: [B,T,HV,V]; h0: [N,HV,K,V]. Returns o [B,T,HV,V], ht [N,HV,K,V]."""
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    scale = K ** -0.5 if scale is None else scale
    spans = [(n, 0, T) for n in range(B)] if cu_seqlens is None else \
        [(0, int(cu_seqlens[i]), int(cu_seqlens[i + 1])) for i in range(len(cu_seqlens) - 1)]
    o = np.zeros((B, T, HV, V))
    ht = np.zeros((len(spans), HV, K, V))
    eye = np.eye(K)
    for i, (n, t0, t1) in enumerate(spans):
        for hv in range(HV):
            h = hv // (HV // H)
            S = np.zeros((K, V)) if h0 is None else h0[i, hv].astype(np.float64)
            for t in range(t0, t1):
                kt = k[n, t, h].astype(np.float64)
                erase = eye - np.outer(kt, b[n, t, h] * kt)
                S = erase @ np.diag(np.exp(g[n, t, h].astype(np.float64))) @ S + np.outer(kt, w[n, t, hv] * v[n, t, hv])
                o[n, t, hv] = S.T @ (scale * q[n, t, h])
            ht[i, hv] = S
    return o, ht


def random_inputs(rng, B, T, H, HV, K, V, gate, with_h0, N=None):
    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)
    x = dict(q=unit(rng.standard_normal((B, T, H, K))), k=unit(rng.standard_normal((B, T, H, K))),
             v=rng.standard_normal((B, T, HV, V)), g=gate(rng, (B, T, H, K)),
             b=rng.uniform(0, 1, (B, T, H, K)), w=rng.uniform(0, 1, (B, T, HV, V)))
    if with_h0:
        x["h0"] = 0.5 * rng.standard_normal((N or B, HV, K, V))
    return x


def ratio(x, ref):
    return float(np.linalg.norm((x - ref).ravel()) / np.linalg.norm(ref.ravel()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gdn2", required=True, help="path of the gdn2 binary")
    args = ap.parse_args()
    rng = np.random.default_rng(2026)

    def huge_reset(r, shape):
        g = r.uniform(-0.05, 0, shape)
        g[:, shape[1] // 2] = -1e4
        return g

    cases = [
        ("mild, h0", dict(B=2, T=100, H=2, HV=2, K=16, V=8), lambda r, s: r.uniform(-0.05, 0, s), True, None),
        ("strong decay U(-5,0), h0, GVA", dict(B=2, T=90, H=1, HV=2, K=12, V=10), lambda r, s: r.uniform(-5, 0, s), True, None),
        ("huge reset -1e4", dict(B=1, T=80, H=2, HV=2, K=8, V=8), huge_reset, False, None),
        ("packed [0,7,50,77], h0", dict(B=1, T=77, H=2, HV=4, K=8, V=6), lambda r, s: r.uniform(-1, 0, s), True,
         np.array([0, 7, 50, 77], dtype=np.int64)),
    ]
    bounds = {"f64": 1e-12, "f32": 2e-5}
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, shape, gate, with_h0, cu in cases:
            N = None if cu is None else len(cu) - 1
            x = random_inputs(rng, gate=gate, with_h0=with_h0, N=N, **shape)
            indir = os.path.join(tmp, "in")
            os.makedirs(indir, exist_ok=True)
            for f in os.listdir(indir):
                os.remove(os.path.join(indir, f))
            for key, val in x.items():
                np.save(os.path.join(indir, key + ".npy"), val)
            if cu is not None:
                np.save(os.path.join(indir, "cu_seqlens.npy"), cu)
            o_ref, ht_ref = gdn2_numpy(**x, cu_seqlens=cu)
            for form, sizes in (("recurrent", [64]), ("chunk", [1, 16, 64, 100])):
                for C in sizes:
                    for prec in ("f64", "f32"):
                        out = os.path.join(tmp, "out")
                        subprocess.run([args.gdn2, "forward", "--in", indir, "--out", out, "--form", form,
                                        "--chunk-size", str(C), "--precision", prec], check=True)
                        ro = ratio(np.load(os.path.join(out, "o.npy")), o_ref)
                        rh = ratio(np.load(os.path.join(out, "ht.npy")), ht_ref)
                        ok = ro <= bounds[prec] and rh <= bounds[prec]
                        failures += not ok
                        print(f"  [measured] {name:32s} {form:9s} C={C:<4d} {prec}: ratio(o)={ro:.2e} "
                              f"ratio(ht)={rh:.2e} bound {bounds[prec]:.0e} {'ok' if ok else 'FAIL'}")
    print(f"{'FAILED' if failures else 'passed'}: gdn2 forward vs independent NumPy, {failures} case(s) out of bound")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
