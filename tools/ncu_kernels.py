#!/usr/bin/python3
"""Per-kernel table from the text that `ncu --metrics ...` prints (docs/cuda.md, "Where the backward stands").

Usage: tools/ncu_kernels.py NCU_OUTPUT.txt [--markdown]

The input is what `ncu --metrics $M ... gdn2-cuda-bench --train --no-check --repeats 1` writes, with
M = gpu__time_duration.sum, dram__bytes_read.sum, dram__bytes_write.sum,
    dram__throughput.avg.pct_of_peak_sustained_elapsed, sm__warps_active.avg.pct_of_peak_sustained_active
(others are ignored; missing ones print as "-"). One row per profiled launch, in launch order: the kernel's name
(template arguments kept, namespaces dropped), its time in ms, DRAM GB read and written, DRAM busy %, and the warps
per SM it kept resident on average (sm__warps_active as a share of 64). A total row sums times and bytes.
"""
import re
import sys

UNITS = {"byte": 1e-9, "Kbyte": 1e-6, "Mbyte": 1e-3, "Gbyte": 1.0, "ns": 1e-6, "us": 1e-3, "usecond": 1e-3,
         "ms": 1.0, "msecond": 1.0, "s": 1e3, "second": 1e3, "nsecond": 1e-6}
METRICS = {"gpu__time_duration.sum": "ms", "dram__bytes_read.sum": "read", "dram__bytes_write.sum": "written",
           "dram__throughput.avg.pct_of_peak_sustained_elapsed": "dram",
           "sm__warps_active.avg.pct_of_peak_sustained_active": "warps"}
# A launch header: two spaces, the kernel's signature, then "(grid)x(block), Context ..., Device ..., CC ...".
HEADER = re.compile(r"^  (\S.*?)\(.*\)\s*\(\d+, \d+, \d+\)x\(\d+, \d+, \d+\), Context")


def kernel_name(signature):
    """'void <unnamed>::chunk_prepare<128, float>' -> 'chunk_prepare<128, float>' (namespaces and return type dropped)."""
    sig = signature.strip()
    for anonymous in ("(anonymous namespace)::", "<unnamed>::"):
        sig = sig.replace(anonymous, "")
    base, lt, args = sig.partition("<")
    return base.split()[-1].split("::")[-1] + lt + args


def parse(text):
    launches = []
    for line in text.splitlines():
        m = HEADER.match(line)
        if m:
            launches.append({"name": kernel_name(m.group(1))})
            continue
        parts = line.split()
        if launches and len(parts) >= 2 and parts[0] in METRICS:
            value = float(parts[-1].replace(",", ""))
            key = METRICS[parts[0]]
            if key in ("ms", "read", "written"):
                unit = parts[1] if len(parts) == 3 else ""
                if unit not in UNITS:
                    raise ValueError(f"unknown unit {unit!r} in: {line.strip()}")
                value *= UNITS[unit]
            launches[-1][key] = value
    return launches


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(argv) >= 2 else 2
    try:
        text = open(argv[1]).read()
    except OSError as e:
        print(f"ncu_kernels.py: {e}", file=sys.stderr)
        return 2
    launches = parse(text)
    if not launches:
        print(f"ncu_kernels.py: no profiled launches in {argv[1]} (is it ncu's --metrics output?)", file=sys.stderr)
        return 1
    fmt = lambda x, spec: format(x, spec) if x is not None else "-"
    rows = [(l["name"], fmt(l.get("ms"), ".3f"), f"{fmt(l.get('read'), '.2f')} / {fmt(l.get('written'), '.2f')}",
             fmt(l.get("dram"), ".0f") + ("%" if "dram" in l else ""),
             fmt(l["warps"] * 64 / 100 if "warps" in l else None, ".0f")) for l in launches]
    total = lambda key: sum(l.get(key, 0.0) for l in launches)
    rows.append(("total", f"{total('ms'):.3f}", f"{total('read'):.2f} / {total('written'):.2f}", "", ""))
    head = ("kernel", "ms", "DRAM GB read / written", "DRAM busy", "warps per SM")
    if "--markdown" in argv:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
        for r in [head] + rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
