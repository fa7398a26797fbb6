#!/usr/bin/env bash
# Capacity / interference sweep (issue 6): MQAR pairs versus a fixed state size, GDN-2 against its KDA and Gated
# DeltaNet ties at equal state size, several seeds. Writes notebooks_data/sweep/results.jsonl (one line per run)
# and prints a markdown table. Takes about 35 minutes on two cores with the defaults below (18 minutes a seed).
#   tools/sweep.sh [build/reference/gdn2]
set -euo pipefail
cd "$(dirname "$0")/.."
GDN2=${1:-build/reference/gdn2}
OUT=${OUT:-notebooks_data/sweep/results.jsonl}
STATE=${STATE:-16}           # K = V of the one head: the state is STATE x STATE
PAIRS=${PAIRS:-"4 8 12 16"}
VARIANTS=${VARIANTS:-"gdn2 kda gdn"}
SEEDS=${SEEDS:-"0 1"}
STEPS=${STEPS:-800}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
: > "$tmp/results.jsonl"
for pairs in $PAIRS; do
  for variant in $VARIANTS; do
    for seed in $SEEDS; do
      ck="$tmp/ck-$pairs-$variant-$seed"
      "$GDN2" train --variant "$variant" --pairs "$pairs" --head-k "$STATE" --head-v "$STATE" --steps "$STEPS" \
        --seed "$seed" --eval-every 0 --out "$ck" > /dev/null 2> "$tmp/log"
      acc=$("$GDN2" eval --checkpoint "$ck" --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["accuracy"])')
      secs=$(/usr/bin/python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["metrics"]["train_seconds"],1))' "$ck/config.json")
      echo "{\"pairs\": $pairs, \"variant\": \"$variant\", \"seed\": $seed, \"state\": $STATE, \"steps\": $STEPS, \"accuracy\": $acc, \"train_seconds\": $secs}" | tee -a "$tmp/results.jsonl"
    done
  done
done
mkdir -p "$(dirname "$OUT")"
mv "$tmp/results.jsonl" "$OUT"
/usr/bin/python3 - "$OUT" <<'PY'
import json, sys, collections
rows = [json.loads(l) for l in open(sys.argv[1])]
acc = collections.defaultdict(list)
for r in rows: acc[(r["pairs"], r["variant"])].append(r["accuracy"])
variants = list(dict.fromkeys(r["variant"] for r in rows)); pairs = sorted({r["pairs"] for r in rows})
print("| pairs | " + " | ".join(f"{v}: mean (per seed)" for v in variants) + " |"); print("|---|" + "---|" * len(variants))
for p in pairs:
    cells = []
    for v in variants:
        a = acc[(p, v)]
        cells.append(f"{sum(a) / len(a):.3f} ({' / '.join(f'{x:.3f}' for x in a)})")
    print(f"| {p} | " + " | ".join(cells) + " |")
PY
