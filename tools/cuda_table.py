#!/usr/bin/python3
"""Rewrites the measured tables in docs/cuda.md from gdn2-cuda-bench JSON files (between the BENCH markers):
one for the forward and decode cases, one for forward + backward ("train").

    /usr/bin/python3 tools/cuda_table.py notebooks_data/bench/cuda_bf16.json [notebooks_data/bench/cuda_f32.json ...]
"""
import json
import pathlib
import sys

BEGIN, END = "<!-- BENCH:BEGIN", "<!-- BENCH:END -->"  # the BEGIN comment may name this script; any wording


def train_table(runs):
    rows = ["| device | dtype | B | T | forward + backward, kept workspace (ms) | backward alone (ms) | "
            "forward + backward, recomputing (ms) | kept workspace (GB) | worst gradient ratio |",
            "|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        for c in run["cases"]:
            if c["op"] != "train":
                continue
            rows.append(f"| {run['device']} | {run['dtype']} | {c['B']} | {c['T']} | {c['ms']:.3f} | "
                        f"{c['backward_ms']:.3f} | {c['recompute_ms']:.3f} | {c['saved_bytes'] / 1e9:.2f} | "
                        f"{c['ratio_vs_reference']:.1e} |")
    return "\n".join(rows) if len(rows) > 2 else ""


def table(paths):
    runs = [json.loads(pathlib.Path(path).read_text()) for path in paths]
    rows = ["| device | dtype | op | B | T | ms | ns per token-head | GB/s | × memory floor | ratio vs reference |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        for c in run["cases"]:
            if c["op"] == "train":
                continue
            rows.append(f"| {run['device']} | {run['dtype']} | {c['op']} | {c['B']} | {c['T']} | {c['ms']:.4f} | "
                        f"{c['ns_per_token_head']:.2f} | {c['GBps']:.0f} | {c['ms'] / c['floor_ms']:.1f} | "
                        f"{c['ratio_vs_reference']:.1e} |")
    train = train_table(runs)
    return "\n".join(rows) + ("\n\nForward + backward (a training step's kernels; ratio: the worst of the seven gradients):\n\n" +
                              train if train else "")


def main():
    if len(sys.argv) < 2 or any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__)
        sys.exit(0 if len(sys.argv) > 1 else 2)
    missing = [p for p in sys.argv[1:] if not pathlib.Path(p).is_file()]
    if missing:
        sys.exit(f"cuda_table.py: no such file: {', '.join(missing)} (nothing rewritten)")
    doc = pathlib.Path(__file__).resolve().parent.parent / "docs" / "cuda.md"
    text = doc.read_text()
    start, end = text.index("-->", text.index(BEGIN)) + len("-->"), text.index(END)
    doc.write_text(text[:start] + "\n" + table(sys.argv[1:]) + "\n" + text[end:])
    print(f"rewrote the table in {doc}")


if __name__ == "__main__":
    main()
