"""gdn2.torch against flash-linear-attention's GDN-2 ops in one process, on the same tensors.

Times (triton.testing.do_bench, median) the chunk forward, forward + backward and decoding of gdn2's CUDA kernels
(gdn2.torch.chunk_gdn2 / fused_recurrent_gdn2) and of fla.ops.gdn2.chunk_gdn2 / fused_recurrent_gdn2, H = 16,
K = V = 128, bfloat16 storage; and measures the accuracy of both against the float64 reference (gdn2.forward /
gdn2.backward run on the very values the kernels read) on a small case, in bfloat16 and float32.

    PYTHONPATH=build/python:<fla source> python3 python/bench/bench_peer.py --json bench_peer.json
    ... bench_peer.py --cases train   # forward + backward only

Needs a CUDA GPU, PyTorch with CUDA, Triton and fla's source (with einops and transformers); prints a table and
writes JSON (the figures of docs/python.md are scripts/python_bench_table.py's rendering of that file).
"""

import argparse
import json
import platform

import numpy as np
import torch
import triton.testing
from fla.ops.gdn2 import chunk_gdn2 as fla_chunk, fused_recurrent_gdn2 as fla_recurrent

import gdn2
from gdn2.torch import chunk_gdn2 as gdn2_chunk, fused_recurrent_gdn2 as gdn2_recurrent

H, K, V = 16, 128, 128
CHUNK_FORWARD = [(1, 4096), (8, 4096), (2, 16384), (1, 65536)]
FORWARD_BACKWARD = [(1, 4096), (8, 4096)]
DECODE = [1, 16, 64, 256]
CASES = ("chunk", "train", "decode", "accuracy")


def inputs(B, T, dtype, seed=0, h0=False, requires_grad=False, heads=H, k_dim=K, v_dim=V):
    gen = torch.Generator(device="cuda").manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, device="cuda")

    def rand(*shape):
        return torch.rand(*shape, generator=gen, device="cuda")
    x = {
        "q": torch.nn.functional.normalize(randn(B, T, heads, k_dim), dim=-1).to(dtype),
        "k": torch.nn.functional.normalize(randn(B, T, heads, k_dim), dim=-1).to(dtype),
        "v": randn(B, T, heads, v_dim).to(dtype),
        "g": torch.nn.functional.logsigmoid(randn(B, T, heads, k_dim)) * 0.1,  # float32 log-decay in [-inf, 0]
        "b": rand(B, T, heads, k_dim).to(dtype),
        "w": rand(B, T, heads, v_dim).to(dtype),
    }
    if h0:
        x["initial_state"] = randn(B, heads, k_dim, v_dim)
    if requires_grad:
        for t in x.values():
            t.requires_grad_()
    return x


def median_ms(fn):
    return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")


def time_cases(cases):
    rows = []
    for B, T in CHUNK_FORWARD if "chunk" in cases else []:
        x = inputs(B, T, torch.bfloat16)
        with torch.no_grad():
            t = {name: median_ms(lambda op=op: op(**x, output_final_state=True))
                 for name, op in (("gdn2", gdn2_chunk), ("fla", fla_chunk))}
        rows.append(dict(case="chunk forward", B=B, T=T, **{f"{n}_ms": v for n, v in t.items()}))
        print("timed", rows[-1], flush=True)
        del x
        torch.cuda.empty_cache()
    for B, T in FORWARD_BACKWARD if "train" in cases else []:
        x = inputs(B, T, torch.bfloat16, requires_grad=True)
        do = torch.randn(B, T, H, V, device="cuda", dtype=torch.bfloat16)
        leaves = list(x.values())

        def step(op):
            o, _ = op(**x)
            return torch.autograd.grad(o, leaves, do)
        t = {name: median_ms(lambda op=op: step(op)) for name, op in (("gdn2", gdn2_chunk), ("fla", fla_chunk))}
        rows.append(dict(case="forward + backward", B=B, T=T, **{f"{n}_ms": v for n, v in t.items()}))
        print("timed", rows[-1], flush=True)
        del x, leaves
        torch.cuda.empty_cache()
    for B in DECODE if "decode" in cases else []:
        x = inputs(B, 1, torch.bfloat16, h0=True)
        with torch.no_grad():
            t = {name: median_ms(lambda op=op: op(**x, output_final_state=True))
                 for name, op in (("gdn2", gdn2_recurrent), ("fla", fla_recurrent))}
        rows.append(dict(case="decode", B=B, T=1, **{f"{n}_ms": v for n, v in t.items()}))
    for r in rows:
        r["gdn2_over_fla"] = r["gdn2_ms"] / r["fla_ms"]
    return rows


def ratio(x, ref):
    x = x.detach().double().cpu().numpy()
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


def accuracy(B=1, T=512, heads=2):
    """Both ops against the float64 reference on the values they read; o, ht and every gradient."""
    rows = []
    for dtype_name, dtype in (("bf16", torch.bfloat16), ("f32", torch.float32)):
        x = inputs(B, T, dtype, seed=3, h0=True, requires_grad=True, heads=heads)
        gen = torch.Generator(device="cuda").manual_seed(4)
        do = torch.randn(B, T, heads, V, generator=gen, device="cuda").to(dtype)
        dht = torch.randn(B, heads, K, V, generator=gen, device="cuda")
        stored = {n: t.detach().double().cpu().numpy() for n, t in x.items()}
        o_ref, ht_ref = gdn2.forward(*(stored[n] for n in "qkvgbw"), initial_state=stored["initial_state"])
        grads = gdn2.backward(*(stored[n] for n in "qkvgbw"), do=do.double().cpu().numpy(),
                              dht=dht.double().cpu().numpy(), initial_state=stored["initial_state"])
        ref = {"o": o_ref, "ht": ht_ref, **grads}
        for name, op in (("gdn2", gdn2_chunk), ("fla", fla_chunk)):
            for t in x.values():
                t.grad = None
            o, ht = op(**x, output_final_state=True)
            ((o.float() * do.float()).sum() + (ht.float() * dht).sum()).backward()
            got = {"o": o, "ht": ht, **{"d" + n: x[n].grad for n in "qkvgbw"}, "dh0": x["initial_state"].grad}
            rows.append(dict(op=name, dtype=dtype_name, **{n: ratio(got[n], ref[n]) for n in ref}))
            print("accuracy", rows[-1], flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES), metavar="CASE",
                        help="what to run, of " + ", ".join(CASES) + " (default: all); chunk: the chunk forward at "
                        "four shapes, train: forward + backward at two, decode: one recurrent step at four batch sizes, "
                        "accuracy: both ops against the float64 reference. Fewer cases compile fewer of the peer's "
                        "Triton kernels on a fresh machine")
    args = parser.parse_args()
    acc = accuracy() if "accuracy" in args.cases else []
    rows = time_cases(args.cases)
    print(f"{'case':<20} {'B':>4} {'T':>6} {'gdn2 ms':>9} {'fla ms':>9} {'gdn2/fla':>9}")
    for r in rows:
        print(f"{r['case']:<20} {r['B']:>4} {r['T']:>6} {r['gdn2_ms']:>9.4f} {r['fla_ms']:>9.4f} "
              f"{r['gdn2_over_fla']:>9.2f}")
    if acc:
        names = [n for n in acc[0] if n not in ("op", "dtype")]
        print("accuracy, ratio |x - ref| / |ref| against the float64 reference (B=1 T=512 H=2 K=V=128):")
        print(f"{'op':<5} {'dtype':<5} " + " ".join(f"{n:>8}" for n in names))
        for r in acc:
            print(f"{r['op']:<5} {r['dtype']:<5} " + " ".join(f"{r[n]:>8.1e}" for n in names))
    result = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                  python=platform.python_version(), H=H, K=K, V=V, storage="bf16", timing="triton.testing.do_bench "
                  "median, warmup 25 ms, rep 200 ms", times=rows, accuracy=acc)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
