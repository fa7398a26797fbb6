#!/usr/bin/env bash
# The README's test command: set up (install, build), run every test, end with one verdict line:
#   gdn2 tests: N passed, N failed, N skipped
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build
"$root/scripts/setup.sh" "$build" || { echo "gdn2 tests: 0 passed, 1 failed (the build failed)"; exit 1; }

echo "==> ctest"
log=$build/ctest.log
(cd "$build" && ctest -j "$(nproc)" --output-on-failure 2>&1) | tee "$log"
ctest_status=${PIPESTATUS[0]}
passed=$(grep -cE 'Test +#[0-9]+: .* Passed' "$log")
# ctest writes "name ....***Failed" with no space before the asterisks.
failed=$(grep -cE 'Test +#[0-9]+: .*(\*\*\*Failed|\*\*\*Exception|\*\*\*Timeout|Not Run)' "$log")
# Whatever the lines say, a ctest that failed is at least one failure.
[ "$ctest_status" -ne 0 ] && [ "$failed" -eq 0 ] && failed=1
skipped=$(grep -cE 'Test +#[0-9]+: .*Skipped' "$log")

# docs/numerics.md 3: the reference's tests (and the tasks and model built on it) again under AddressSanitizer + UBSan
# (a second, sanitised build).
echo "==> reference, task and model tests under AddressSanitizer"
asan=$root/build-asan
# -O1 -g1 (line tables only): half the compile time of -O2 -g, and the sanitiser's reports still name file and line.
if cmake -S "$root" -B "$asan" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
     -DGDN2_SANITIZE=ON -DGDN2_BUILD_CUDA=OFF -DGDN2_BUILD_VIEWER=OFF -DGDN2_BUILD_PYTHON=OFF >/dev/null && cmake --build "$asan" -j "$(nproc)" --target test_reference test_model >/dev/null &&
   "$asan/tests/test_reference" '[chunk],[sequences],[io]' | tail -n 3 && "$asan/tests/test_model" | tail -n 3; then
  passed=$((passed + 1)); echo "asan: reference, task and model tests clean"
else
  failed=$((failed + 1)); echo "asan: FAILED"
fi

echo "gdn2 tests: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
