#!/usr/bin/env bash
# Executes every notebook in notebooks_data/ with Debian's /usr/bin/python3 (nbconvert); fails on the first error.
# Outputs go to a temporary directory: the committed notebooks stay without outputs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
/usr/bin/python3 -c "import nbconvert, ipykernel, matplotlib, numpy" 2> /dev/null || { echo "SKIP: nbconvert/ipykernel/matplotlib/numpy missing"; exit 77; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export MPLBACKEND=Agg
for nb in "$root"/notebooks_data/*.ipynb; do
  echo "== $(basename "$nb")"
  /usr/bin/python3 -m nbconvert --to notebook --execute --ExecutePreprocessor.timeout=300 --output-dir "$out" "$nb"
done
echo "== exercises.py (docs/teaching.md's worked solutions)"
cd "$root/notebooks_data" && /usr/bin/python3 exercises.py
