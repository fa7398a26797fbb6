#!/usr/bin/python3
"""Stall samples of one kernel by phase, from Nsight Compute's per-instruction source counters.

Usage: tools/ncu_phases.py SASS.csv

SASS.csv is `ncu -i REPORT.ncu-rep --page source --csv --print-source sass` of a report taken with `--set full`
(tools/cuda_profile.sh writes both). The kernels here separate their phases by __syncthreads(), so the SASS is
split at each BAR.SYNC: phase 0 runs up to and including the first barrier, phase 1 to the second, and so on (a
barrier inside a loop closes one phase per appearance in the listing, not per iteration). For each phase: its share
of the warp stall samples, the instructions executed, the shared-memory wavefronts (and the ideal count without bank
conflicts), and the five opcodes that drew the most samples. docs/cuda.md's per-phase shares come from this.
"""
import collections
import csv
import sys

COLUMNS = {"source": "Source", "samples": "Warp Stall Sampling (All Samples)", "executed": "Instructions Executed",
           "wavefronts": "L1 Wavefronts Shared", "ideal": "L1 Wavefronts Shared Ideal"}


def number(text):
    try:
        return float(text.replace(",", "")) if text else 0.0
    except ValueError:
        return 0.0


def phases(rows):
    """rows: the CSV's rows. Returns (total samples, [(samples, executed, wavefronts, ideal, Counter by opcode)])."""
    for at, row in enumerate(rows):  # the header is the first row that names the columns (ncu may print a title first)
        if COLUMNS["source"] in row and COLUMNS["samples"] in row:
            header, data = row, rows[at + 1:]
            break
    else:
        raise ValueError("no header with the columns 'Source' and 'Warp Stall Sampling (All Samples)'")
    col = {key: header.index(name) if name in header else None for key, name in COLUMNS.items()}
    get = lambda row, key: number(row[col[key]]) if col[key] is not None and col[key] < len(row) else 0.0
    out = [[0.0, 0.0, 0.0, 0.0, collections.Counter()]]
    for row in data:
        if col["source"] >= len(row):
            continue
        source = row[col["source"]].split()
        if source and source[0].startswith("@"):  # a predicate: the opcode is the next word
            source = source[1:]
        opcode = source[0].split(".")[0] if source else ""
        phase = out[-1]
        samples = get(row, "samples")
        phase[0] += samples
        phase[1] += get(row, "executed")
        phase[2] += get(row, "wavefronts")
        phase[3] += get(row, "ideal")
        phase[4][opcode] += samples
        if opcode == "BAR" and len(source[0].split(".")) > 1 and source[0].split(".")[1] == "SYNC":
            out.append([0.0, 0.0, 0.0, 0.0, collections.Counter()])
    if out[-1][0] == 0 and out[-1][1] == 0 and len(out) > 1:
        out.pop()
    return sum(p[0] for p in out), out


def main(argv):
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(argv) == 2 else 2
    try:
        rows = list(csv.reader(open(argv[1], newline="")))
        total, out = phases(rows)
    except (OSError, ValueError) as e:
        print(f"ncu_phases.py: {argv[1]}: {e}", file=sys.stderr)
        return 1
    if total <= 0:
        print(f"ncu_phases.py: {argv[1]}: no stall samples (was the report taken with --set full?)", file=sys.stderr)
        return 1
    print(f"total stall samples {total:.0f}")
    for i, (samples, executed, wavefronts, ideal, ops) in enumerate(out):
        top = ", ".join(f"{op} {100 * s / total:.1f}%" for op, s in ops.most_common(5) if s > 0)
        print(f"phase {i:2d}: {100 * samples / total:5.1f}% of samples, {executed:.3g} instructions, shared wavefronts "
              f"{wavefronts:.3g} (ideal {ideal:.3g}); top: {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
