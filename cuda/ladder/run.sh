#!/usr/bin/env bash
# Runs the ladder's programs (cuda/ladder/*.cu, built by CMake into BUILD/cuda/ladder) one after the other on the GPU
# and prints them side by side: each checks itself against the float64 recurrence, then prints its median time. Then
# it times the product, cuda/src, at the same shape with gdn2-cuda-bench (BUILD/cuda/gdn2-cuda-bench, or the binary
# named by $GDN2_CUDA_BENCH; skipped when neither exists), which checks it against the float64 reference first.
# Builds nothing. Usage: cuda/ladder/run.sh [BUILD_DIR (default build)] [arguments for every program, e.g. --B 1]
# Exit status: 0 when every program (and the product, if timed) passed its check, 1 when one failed, 77 when there
# is no GPU.
set -u
build=${1:-build}
shift $(( $# > 0 ? 1 : 0 ))
dir="$build/cuda/ladder"
programs=$(ls "$dir" 2>/dev/null | grep -E '^[0-9][0-9]_[a-z0-9_]+$' | sort)
if [ -z "$programs" ]; then
  echo "run.sh: no ladder programs in $dir (build them: cmake --build $build --target ladder_01_naive_recurrent ...)" >&2
  exit 2
fi
status=0 skipped=0 previous="" lines=""
row() {  # name, exit status, median ms: one row of the table (the speed-up is on the row before)
  local speedup="" verdict
  [ -n "$previous" ] && [ -n "$3" ] && speedup=$(awk -v a="$previous" -v b="$3" 'BEGIN { if (b > 0) printf "%.2fx", a / b }')
  verdict=$([ "$2" -eq 0 ] && echo ok || echo "FAILED (exit $2)")
  lines+=$(printf '| %s | %s | %s | %s |' "$1" "${3:-?}" "${speedup:-}" "$verdict")$'\n'
  [ -n "$3" ] && previous=$3
  return 0
}
for p in $programs; do
  line=$("$dir/$p" "$@" 2>&1); rc=$?
  echo "$line"
  [ $rc -eq 77 ] && skipped=1 && continue
  [ $rc -ne 0 ] && status=1
  row "$p" $rc "$(echo "$line" | tail -1 | awk '{for (i = 1; i < NF; ++i) if ($(i + 1) == "ms") print $i}')"
done
[ $skipped -eq 1 ] && [ -z "$lines" ] && { echo "run.sh: no GPU, every program skipped"; exit 77; }

# The product at the same shape: gdn2-cuda-bench --chunk --batch B --tokens T (H = 16, K = V = 128, bf16 are its own).
bench=${GDN2_CUDA_BENCH:-$build/cuda/gdn2-cuda-bench}
B=8 T=4096 H=16
while [ $# -ge 2 ]; do
  case $1 in --B) B=$2 ;; --T) T=$2 ;; --H) H=$2 ;; esac
  shift 2
done
if [ ! -x "$bench" ]; then
  echo "run.sh: no product bench at $bench (build gdn2-cuda-bench, or set GDN2_CUDA_BENCH); product not timed"
elif [ "$H" != 16 ] || ! echo " 1:4096 8:4096 2:16384 1:65536 " | grep -q " $B:$T "; then
  echo "run.sh: gdn2-cuda-bench times H = 16 and (B, T) in (1, 4096), (8, 4096), (2, 16384), (1, 65536) only;" \
    "product not timed at B = $B, T = $T, H = $H"
else
  echo
  out=$("$bench" --chunk --batch "$B" --tokens "$T" 2>&1); rc=$?
  echo "$out"
  if [ $rc -eq 77 ]; then
    echo "run.sh: gdn2-cuda-bench found no GPU; product not timed"
  else
    [ $rc -ne 0 ] && status=1
    ms=$(echo "$out" | awk -v b="$B" -v t="$T" '$1 == "chunk" && $2 == b && $3 == t { print $4 }')
    [ $rc -eq 0 ] && [ -z "$ms" ] && rc=3  # no such case in its output: a failure, not a silent pass
    [ $rc -eq 3 ] && status=1
    row "product (cuda/src)" $rc "$ms"
  fi
fi
echo
echo "| rung | median ms | speed-up on the rung before | check vs float64 |"
echo "|---|---|---|---|"
printf '%s' "$lines"
[ -n "${ms:-}" ] && echo "(the programs: their own seeded inputs, median of 10; the product: gdn2-cuda-bench's inputs," \
  "with an initial state, median of 20 with L2 flushed before each run)"
exit $status
