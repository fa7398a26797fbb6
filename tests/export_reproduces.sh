#!/usr/bin/env bash
# gdn2 export into a scratch copy of notebooks_data must reproduce the committed traces, layer and gradcheck data
# byte for byte (the notebooks' data is what the code computes today, and export is deterministic).
set -euo pipefail
gdn2=$1
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
mkdir -p "$out/nb"
cp -r "$root/notebooks_data/checkpoints" "$out/nb/"
"$gdn2" export --out "$out/nb" 2> "$out/log" || { cat "$out/log"; exit 1; }
status=0
for d in traces layer gradcheck; do
  if ! diff -r -q "$root/notebooks_data/$d" "$out/nb/$d"; then
    echo "FAIL: notebooks_data/$d differs from a fresh gdn2 export (run: build/reference/gdn2 export)"
    status=1
  fi
done
[ $status = 0 ] && echo "gdn2 export reproduces notebooks_data/{traces,layer,gradcheck} byte for byte"
exit $status
