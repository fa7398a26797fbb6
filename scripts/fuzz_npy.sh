#!/usr/bin/env bash
# Fuzzes the .npy reader and the CLI's input path with libFuzzer + AddressSanitizer + UBSan for a bounded time
# (docs/numerics.md 23). Usage: scripts/fuzz_npy.sh [SECONDS=20] [WORKDIR=build/fuzz]
# Exit 0: no crash, hang, leak or sanitizer report; 77: clang/libFuzzer not installed (reported as skipped).
set -euo pipefail
seconds=${1:-20}
root=$(cd "$(dirname "$0")/.." && pwd)
work=${2:-$root/build/fuzz}
if ! command -v clang++ >/dev/null || ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
  echo "SKIPPED: clang++ with libFuzzer not found (apt-get install clang libclang-rt-14-dev)"
  exit 77
fi
mkdir -p "$work/corpus"
bin="$work/npy_fuzzer"
src=("$root/tests/fuzz/npy_fuzzer.cpp" "$root/reference/io/npy.cpp" "$root/reference/tools/inputs.cpp")
if [ ! -x "$bin" ] || [ -n "$(find "${src[@]}" "$root/reference" -newer "$bin" -name '*.[ch]pp' -print -quit)" ]; then
  echo "building $bin"
  clang++ -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -I"$root/reference" -I/usr/include/eigen3 "${src[@]}" -o "$bin"
fi
# Seed corpus: one valid file of each kind, prefixed by the byte that selects which input it replaces.
printf '\x00' > "$work/corpus/seed_q"; /usr/bin/python3 - "$work/corpus" <<'PY' 2>/dev/null || true
import sys, io, numpy as np
d = sys.argv[1]
for i, (name, arr) in enumerate([("q", np.ones((1, 9, 1, 4))), ("v", np.zeros((1, 9, 2, 3), np.float32)),
                                  ("cu", np.array([0, 4, 9], np.int32))]):
    buf = io.BytesIO(); np.save(buf, arr)
    open(f"{d}/seed_{name}", "wb").write(bytes([[0, 2, 7][i]]) + buf.getvalue())
PY
cp "$root"/tests/fuzz/regressions/* "$work/corpus/"  # inputs that once failed, replayed first
echo "fuzzing for ${seconds}s"
"$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$work/corpus" 2>&1 | tail -n 8
echo "fuzz: no crash, hang or sanitizer report in ${seconds}s"
