#!/usr/bin/env bash
# Times rungs of the CUDA ladder against each other in one run on one GPU — the "same run" comparisons of
# docs/cuda.md. For each forward version: `gdn2-cuda-bench --chunk`; for each backward version: `--train`; both with
# the reference check on (a rung with new bits is checked at the bench shapes before it is timed), and
# the other ladder at its default. Checks first: test_cuda (every case, all versions it compares) and memcheck.
#
#   scripts/cuda_versions.sh [BIN_DIR=build] "FORWARD_VERSIONS" "BACKWARD_VERSIONS"
#   e.g. scripts/cuda_versions.sh build "19 20" "18 19"
#   BENCH_ARGS="--batch 8" scripts/cuda_versions.sh build "19 20" ""    # B = 8 only: less host work per device run
#
# BIN_DIR holds tests/test_cuda and cuda/gdn2-cuda-bench (a build tree), or both files side by side. Prints one line
# per case and version (BENCH_ARGS: more gdn2-cuda-bench options, such as --batch 8); exits 77 without a usable GPU,
# 1 when a test fails (nothing is timed then).
set -uo pipefail
dir=${1:-build}
forward=${2:-}
backward=${3:-}
find_bin() { for p in "$dir/$1" "$dir/$(basename "$1")"; do [ -x "$p" ] && { echo "$p"; return; }; done; }
tests=$(find_bin tests/test_cuda)
bench=$(find_bin cuda/gdn2-cuda-bench)
[ -n "$tests" ] && [ -n "$bench" ] || { echo "cuda_versions.sh: test_cuda or gdn2-cuda-bench not found under $dir" >&2; exit 2; }
"$tests" > /tmp/cuda_versions_tests.txt 2>&1
rc=$?
if [ $rc -eq 77 ]; then echo "cuda_versions.sh: no usable GPU (test_cuda skipped)" >&2; exit 77; fi
grep -E "All tests|test cases|FAILED" /tmp/cuda_versions_tests.txt | tail -3
[ $rc -eq 0 ] || { echo "cuda_versions.sh: test_cuda failed (log: /tmp/cuda_versions_tests.txt); nothing timed" >&2; exit 1; }
if command -v compute-sanitizer >/dev/null; then
  compute-sanitizer --tool memcheck "$tests" '[sanitizer]' 2>&1 | tail -1
fi
for v in $forward; do
  echo "forward version $v:"
  GDN2_CHUNK_VERSION=$v "$bench" --chunk ${BENCH_ARGS:-} | grep -E "^chunk"
done
for v in $backward; do
  echo "backward version $v:"
  GDN2_BACKWARD_VERSION=$v "$bench" --train ${BENCH_ARGS:-} | grep -A1 -E "^train"
done
