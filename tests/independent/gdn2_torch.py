#!/usr/bin/python3
"""Gradients of `gdn2 backward` against PyTorch autograd, and `gdn2 check` on PyTorch's float32 tensors.

An independent Gated DeltaNet-2 written in PyTorch from the paper's Eq. 10, differentiated by autograd:
  1. float64: `gdn2 backward` (both forms, several chunk sizes) vs autograd, every gradient, bound ratio <= 1e-4
     (the issue's bound; float64 against float64 should land near 1e-15);
  2. float32: PyTorch's own float32 outputs and gradients pass `gdn2 check` (exit 0);
  3. the same tensors with db off by 1% in one chunk of 64 tokens are rejected (exit 1, db marked FAIL).
Exit 0 if all hold, 1 otherwise, 77 (skipped) without PyTorch (Debian: apt-get install python3-torch).

    /usr/bin/python3 tests/independent/gdn2_torch.py --gdn2 build/reference/gdn2
"""
import argparse
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
except ImportError as e:
    print(f"SKIPPED: {e.name} is not installed (Debian: apt-get install python3-torch)")
    sys.exit(77)


def gdn2_torch(q, k, v, g, b, w, h0, scale):
    """q, k, g, b: [B,T,H,K]; v, w: [B,T,HV,V]; h0: [B,HV,K,V] -> o [B,T,HV,V], ht [B,HV,K,V]."""
    B, T, H, K = q.shape
    HV = v.shape[2]
    rep = HV // H
    q, k, g, b = (x.repeat_interleave(rep, dim=2) for x in (q, k, g, b))  # value head j reads key head j // rep
    S = h0
    eye = torch.eye(K, dtype=q.dtype)
    outs = []
    for t in range(T):
        kt, et = k[:, t], b[:, t] * k[:, t]                           # [B,HV,K]
        erase = eye - kt.unsqueeze(-1) * et.unsqueeze(-2)             # I - k e^T
        S = erase @ (torch.exp(g[:, t]).unsqueeze(-1) * S) + kt.unsqueeze(-1) * (w[:, t] * v[:, t]).unsqueeze(-2)
        outs.append(torch.einsum("bhkv,bhk->bhv", S, scale * q[:, t]))
    return torch.stack(outs, dim=1), S


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gdn2", required=True, help="path of the gdn2 binary")
    args = ap.parse_args()
    torch.manual_seed(2026)
    B, T, H, HV, K, V = 2, 150, 2, 4, 16, 12
    unit = lambda x: x / x.norm(dim=-1, keepdim=True)
    inputs = dict(q=unit(torch.randn(B, T, H, K)), k=unit(torch.randn(B, T, H, K)), v=torch.randn(B, T, HV, V),
                  g=-2.0 * torch.rand(B, T, H, K), b=torch.rand(B, T, H, K), w=torch.rand(B, T, HV, V),
                  h0=0.5 * torch.randn(B, HV, K, V))
    inputs = {n: x.double() for n, x in inputs.items()}
    do, dht = torch.randn(B, T, HV, V, dtype=torch.float64), torch.randn(B, HV, K, V, dtype=torch.float64)
    scale = K ** -0.5
    names = ["q", "k", "v", "g", "b", "w", "h0"]

    def autograd(dtype):
        leaves = {n: inputs[n].to(dtype).clone().requires_grad_(True) for n in names}
        o, ht = gdn2_torch(*(leaves[n] for n in names), scale)
        ((o * do.to(dtype)).sum() + (ht * dht.to(dtype)).sum()).backward()
        return o.detach(), ht.detach(), {"d" + n: leaves[n].grad for n in names}

    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        indir, out, cand = (os.path.join(tmp, d) for d in ("in", "out", "cand"))
        os.makedirs(indir)
        for n in names:
            np.save(os.path.join(indir, n + ".npy"), inputs[n].numpy())
        np.save(os.path.join(indir, "do.npy"), do.numpy())
        np.save(os.path.join(indir, "dht.npy"), dht.numpy())

        _, _, ref = autograd(torch.float64)
        for form, C in (("recurrent", 64), ("chunk", 16), ("chunk", 64)):
            subprocess.run([args.gdn2, "backward", "--in", indir, "--out", out, "--form", form, "--chunk-size", str(C)],
                           check=True)
            for name, r in ref.items():
                x = np.load(os.path.join(out, name + ".npy"))
                ratio = float(np.linalg.norm(x - r.numpy()) / np.linalg.norm(r.numpy()))
                ok = ratio <= 1e-4
                failures += not ok
                print(f"  [measured] gdn2 backward {form:9s} C={C:<3d} {name:4s} vs PyTorch autograd float64: "
                      f"ratio {ratio:.2e} (bound 1e-04) {'ok' if ok else 'FAIL'}")

        o32, ht32, g32 = autograd(torch.float32)
        os.makedirs(cand)
        np.save(os.path.join(cand, "o.npy"), o32.numpy())
        np.save(os.path.join(cand, "ht.npy"), ht32.numpy())
        for name, x in g32.items():
            np.save(os.path.join(cand, name + ".npy"), x.numpy())
        check = [args.gdn2, "check", "--in", indir, "--candidate", cand]
        r = subprocess.run(check, capture_output=True, text=True)
        print(r.stdout, end="")
        accepted = r.returncode == 0
        print(f"  [measured] gdn2 check on PyTorch float32 tensors: exit {r.returncode} (expected 0) "
              f"{'ok' if accepted else 'FAIL'}")
        failures += not accepted

        db = g32["db"].numpy().copy()
        db[:, 64:128] *= 1.01  # one chunk of one gate gradient off by 1%
        np.save(os.path.join(cand, "db.npy"), db)
        r = subprocess.run(check, capture_output=True, text=True)
        print(r.stdout, end="")
        rejected = r.returncode == 1 and any(line.startswith("db ") and "FAIL" in line for line in r.stdout.splitlines())
        print(f"  [measured] gdn2 check with db off by 1% in tokens 64..127: exit {r.returncode} (expected 1, db FAIL) "
              f"{'ok' if rejected else 'FAIL'}")
        failures += not rejected
    print(f"{'FAILED' if failures else 'passed'}: gdn2 vs PyTorch autograd, {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
