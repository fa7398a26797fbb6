#!/usr/bin/env bash
# Profiles the CUDA kernels of one B = 8, T = 4096 training step (bf16; forward keeping its workspace, then the
# backward) with Nsight Compute, kernel by kernel, and optionally one kernel's stall samples by phase. FORWARD=1: the
# chunk forward alone instead (`--chunk --batch 8`: prepare and the fused pass, which a kept workspace does not run).
# Needs an NVIDIA GPU, ncu (Nsight Compute, in the CUDA toolkit's full install) and a build of gdn2-cuda-bench.
#
#   tools/cuda_profile.sh [OUT_DIR=build/profile] [KERNEL_REGEX]
#
# OUT_DIR/kernels.txt: ncu's output; OUT_DIR/kernels.md: the table of docs/cuda.md (tools/ncu_kernels.py).
# With KERNEL_REGEX (e.g. chunk_prepare, chunk_backward_state_pass04): OUT_DIR/<regex>.ncu-rep (--set full, the first
# launch of that kernel in the B = 8 training step), OUT_DIR/<regex>.csv (its SASS with the source counters) and
# OUT_DIR/<regex>.phases.txt (tools/ncu_phases.py: stall samples between barriers).
# Environment: BUILD (default build), SKIP and COUNT (the launches before the step and in it; see below), FORWARD.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/build/profile}
kernel=${2:-}
bench=${BUILD:-$root/build}/cuda/gdn2-cuda-bench
command -v ncu >/dev/null || { echo "cuda_profile.sh: ncu not found (Nsight Compute; on PATH from /usr/local/cuda/bin?)" >&2; exit 77; }
[ -x "$bench" ] || { echo "cuda_profile.sh: $bench not built (ninja -C ${BUILD:-build} gdn2-cuda-bench)" >&2; exit 2; }
# `gdn2-cuda-bench --train --no-check --repeats 1` runs B = 1 and then B = 8, each 3 times (two warm-ups, one timed)
# on the kept path (forward: prepare, state pass, output; backward: convert, state pass, the products, the
# intra-chunk stage, the gates stage — 8 launches) and 3 times recomputing the forward (10 launches): 54 launches
# before B = 8's first kept step. A change that adds or removes a launch changes these; then count them from an
# unfiltered `ncu --metrics gpu__time_duration.sum` of `--train --no-check --repeats 1` once.
skip=${SKIP:-54}
count=${COUNT:-8}
args=(--train --no-check --repeats 1)
what="the B = 8 training step"
if [ -n "${FORWARD:-}" ]; then
  # `--chunk --batch 8 --no-check --repeats 1` runs B = 8 three times (two warm-ups, one timed), two launches each:
  # the second warm-up is profiled.
  skip=${SKIP:-2}
  count=${COUNT:-2}
  args=(--chunk --batch 8 --no-check --repeats 1)
  what="the B = 8 chunk forward"
fi
mkdir -p "$out"
metrics=gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum
metrics+=,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed
metrics+=,sm__warps_active.avg.pct_of_peak_sustained_active
echo "profiling launches $((skip + 1))..$((skip + count)) ($what) -> $out/kernels.txt" >&2
ncu --metrics "$metrics" --launch-skip "$skip" --launch-count "$count" "$bench" "${args[@]}" > "$out/kernels.txt"
/usr/bin/python3 "$root/tools/ncu_kernels.py" "$out/kernels.txt" --markdown | tee "$out/kernels.md"
if [ -n "$kernel" ]; then
  # The matching launches among those before the step: 3 kept steps as the one profiled above, and 3 recomputing
  # ones, which run the forward's prepare and pass twice (once for the forward, once inside the backward).
  per_step=$(grep -E "^  " "$out/kernels.txt" | grep -cE "$kernel" || true)
  [ "$per_step" -gt 0 ] || { echo "cuda_profile.sh: no launch in the step matches '$kernel'" >&2; exit 2; }
  twice=$(grep -E "^  " "$out/kernels.txt" | grep -E "$kernel" | grep -cE "chunk_prepare|chunk_state_pass_kernel" || true)
  before=$((6 * per_step + 3 * twice))
  [ -n "${FORWARD:-}" ] && before=$per_step  # the first warm-up's
  name=$(echo "$kernel" | tr -c 'A-Za-z0-9_\n' '_')
  echo "full profile of the first '$kernel' launch in the step -> $out/$name.ncu-rep" >&2
  ncu --set full --import-source no -k "regex:$kernel" --launch-skip "$before" --launch-count 1 \
    -f -o "$out/$name" "$bench" "${args[@]}" > /dev/null
  ncu -i "$out/$name.ncu-rep" --page source --csv --print-source sass > "$out/$name.csv"
  /usr/bin/python3 "$root/tools/ncu_phases.py" "$out/$name.csv" | tee "$out/$name.phases.txt"
fi
