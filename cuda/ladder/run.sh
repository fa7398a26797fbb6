#!/usr/bin/env bash
# Runs the ladder's programs (cuda/ladder/*.cu, built by CMake into BUILD/cuda/ladder) one after the other on the GPU
# and prints them side by side: each checks itself against the float64 recurrence, then prints its median time.
# Builds nothing. Usage: cuda/ladder/run.sh [BUILD_DIR (default build)] [arguments for every program, e.g. --B 1]
# Exit status: 0 when every program passed its check, 1 when one failed, 77 when there is no GPU.
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
for p in $programs; do
  line=$("$dir/$p" "$@" 2>&1); rc=$?
  echo "$line"
  [ $rc -eq 77 ] && skipped=1 && continue
  [ $rc -ne 0 ] && status=1
  ms=$(echo "$line" | tail -1 | awk '{for (i = 1; i < NF; ++i) if ($(i + 1) == "ms") print $i}')
  speedup=""
  [ -n "$previous" ] && [ -n "$ms" ] && speedup=$(awk -v a="$previous" -v b="$ms" 'BEGIN { if (b > 0) printf "%.2fx", a / b }')
  verdict=$([ $rc -eq 0 ] && echo ok || echo "FAILED (exit $rc)")
  lines+=$(printf '| %s | %s | %s | %s |' "$p" "${ms:-?}" "${speedup:-}" "$verdict")$'\n'
  [ -n "$ms" ] && previous=$ms
done
[ $skipped -eq 1 ] && [ -z "$lines" ] && { echo "run.sh: no GPU, every program skipped"; exit 77; }
echo
echo "| rung | median ms | speed-up on the rung before | check vs float64 |"
echo "|---|---|---|---|"
printf '%s' "$lines"
exit $status
