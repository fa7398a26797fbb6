"""Markdown tables for docs/python.md from bench_peer.py's JSON: timings side by side, then accuracy.

    python3 python/bench/bench_table.py notebooks_data/bench/bench_peer.json
"""

import json
import sys


def main(path):
    r = json.load(open(path))
    print(f"{r['device']}, PyTorch {r['torch']}, Triton {r['triton']}; H = {r['H']}, K = {r['K']}, V = {r['V']}, "
          f"{r['storage']} storage; {r['timing']}.\n")
    print("| case | B | T | gdn2 (ms) | fla (ms) | gdn2 / fla |")
    print("|---|---:|---:|---:|---:|---:|")
    for t in r["times"]:
        print(f"| {t['case']} | {t['B']} | {t['T']} | {t['gdn2_ms']:.4f} | {t['fla_ms']:.4f} | {t['gdn2_over_fla']:.2f} |")
    if not r["accuracy"]:  # bench_peer.py --cases without accuracy
        return
    names = [n for n in r["accuracy"][0] if n not in ("op", "dtype")]
    print("\nratio = |x - ref| / |ref| against the float64 reference on the values the kernels read "
          "(B = 1, T = 512, H = 2, K = V = 128):\n")
    print("| op | storage | " + " | ".join(names) + " |")
    print("|---|---|" + "---:|" * len(names))
    for a in r["accuracy"]:
        print(f"| {a['op']} | {a['dtype']} | " + " | ".join(f"{a[n]:.1e}" for n in names) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
