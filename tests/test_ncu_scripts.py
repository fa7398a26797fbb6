#!/usr/bin/python3
"""Checks tools/ncu_kernels.py and tools/ncu_phases.py, which turn Nsight Compute's output into the per-kernel and
per-phase figures of docs/cuda.md: on the committed ncu output of the B = 8 training step (a real H100 run) and on a
small source-counter CSV in the layout ncu writes; and tools/ptx_load_after_store.py (the PTX count behind backward
rungs 18-19) on a small PTX text. Exit 0 when every check holds."""
import os
import re
import sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(root, "tools"))
import ncu_kernels  # noqa: E402
import ncu_phases  # noqa: E402
import ptx_load_after_store  # noqa: E402
import csv  # noqa: E402

failures = 0


def check(what, measured, ok):
    global failures
    print(f"  [measured] {what}: {measured} -> {'ok' if ok else 'FAILED'}")
    failures += not ok


text = open(os.path.join(root, "notebooks_data", "bench", "ncu_train_b8.txt")).read()
launches = ncu_kernels.parse(text)
headers = [line for line in text.splitlines() if "), Context " in line]
check("launches parsed vs launch headers in the file", f"{len(launches)} vs {len(headers)}",
      len(launches) == len(headers) > 0)
check("first kernel (the forward's prepare)", launches[0]["name"], launches[0]["name"].startswith("chunk_prepare<"))
# Every launch's time and DRAM bytes against an independent reading of the raw lines, in order.
scale = {"us": 1e-3, "ms": 1.0, "Mbyte": 1e-3, "Gbyte": 1.0, "Kbyte": 1e-6}
for metric, key in (("gpu__time_duration.sum", "ms"), ("dram__bytes_read.sum", "read"),
                    ("dram__bytes_write.sum", "written")):
    raw = [float(v.replace(",", "")) * scale[u] for u, v in re.findall(re.escape(metric) + r"\s+(\w+)\s+([\d.,]+)", text)]
    parsed = [l.get(key) for l in launches]
    worst = max(abs(a - b) for a, b in zip(parsed, raw)) if len(raw) == len(parsed) else float("inf")
    check(f"{metric}: {len(parsed)} parsed vs {len(raw)} raw, worst difference", worst, worst < 1e-12)

rows = list(csv.reader(open(os.path.join(root, "tests", "data", "ncu_source_sample.csv"), newline="")))
total, phases = ncu_phases.phases(rows)
check("sample CSV: total samples", total, total == 450)
check("sample CSV: phases (split after each BAR.SYNC)", len(phases), len(phases) == 3)
check("sample CSV: samples per phase", [p[0] for p in phases], [p[0] for p in phases] == [170, 240, 40])
check("sample CSV: predicated SHFL counted as SHFL", phases[1][4]["SHFL"], phases[1][4]["SHFL"] == 200)
check("sample CSV: instructions with a thousands separator", phases[0][1], phases[0][1] == 3000)
try:
    ncu_phases.phases([["Address", "Something else"]])
    check("a CSV without the columns is refused", "accepted", False)
except ValueError as e:
    check("a CSV without the columns is refused", str(e)[:40], True)
# Two kernels in the layout nvcc writes: the first has a load, a store, a load, a store and two loads (4 global loads,
# 2 stores, 2 loads right after a store; its shared accesses do not count), the second a load, then a store.
ptx = """
.visible .entry _Z5firstPf(
	.param .u64 _Z5firstPf_param_0
)
{
	ld.global.f32 	%f1, [%rd1];
	st.global.f32 	[%rd2], %f1;
	ld.global.nc.f32 	%f2, [%rd3];
	st.global.f32 	[%rd2+4], %f2;
	ld.global.f32 	%f3, [%rd4];
	ld.global.v4.f32 	{%f4, %f5, %f6, %f7}, [%rd5];
	ld.shared.f32 	%f8, [%r1];
	st.shared.f32 	[%r1], %f8;
}
.entry _Z6secondPf(
	.param .u64 _Z6secondPf_param_0
)
{
	ld.global.f32 	%f1, [%rd1];
	st.global.f32 	[%rd2], %f1;
}
"""
kernels = ptx_load_after_store.scan(ptx)
check("PTX: kernels found", [k[0] for k in kernels], [k[0] for k in kernels] == ["_Z5firstPf", "_Z6secondPf"])
check("PTX: (loads, stores, loads after a store) of the first", kernels[0][1:], kernels[0][1:] == [4, 2, 2])
check("PTX: (loads, stores, loads after a store) of the second", kernels[1][1:], kernels[1][1:] == [1, 1, 0])
print("ncu scripts:", "all checks hold" if failures == 0 else f"{failures} check(s) FAILED")
sys.exit(1 if failures else 0)
