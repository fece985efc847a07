#!/usr/bin/env bash
# One point of an accuracy-against-time curve: a seeded `autokeras_search` run on MNIST with a
# time limit, its log and search directory in runs/curve/LABEL-LIMIT, and one line appended to
# runs/curve/points.csv (label, limit, seed, models trained, test accuracy, seconds, extra options).
# The test set chooses nothing: it is read once, after the final model is fixed.
#
#   scripts/accuracy_curve.sh new 1h                       # the current defaults
#   scripts/accuracy_curve.sh previous 1h --label-smoothing 0 --early-ranking 0 ...
#   scripts/accuracy_curve.sh small-2k 10m --train-limit 2000
#
# Run one point at a time on an otherwise idle machine: a neighbour's load changes how much a time
# limit holds. Set SEED to change the seed (default 1).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 LABEL TIME_LIMIT [autokeras_search options...]" >&2; exit 2; }
label=$1 limit=$2
shift 2
seed=${SEED:-1}
root=$(cd "$(dirname "$0")/.." && pwd)
out=${CURVE_DIR:-$root/runs/curve}
dir=$out/$label-$limit
mkdir -p "$out"
rm -rf "$dir"
cargo build --release --example autokeras_search --manifest-path "$root/Cargo.toml" >&2
bin=${CARGO_TARGET_DIR:-$root/target}/release/examples/autokeras_search
# Kernel tuning off: each point runs the same kernels, whatever the cache holds.
NETMORPH_TUNING=off "$bin" --time-limit "$limit" --seed "$seed" --no-report --search-dir "$dir" "$@" | tee "$dir.log"
python3 - "$dir" "$label" "$limit" "$seed" "$*" >> "$out/points.csv" <<'PY'
import json, sys
d, label, limit, seed, extra = sys.argv[1:]
outcome = json.load(open(f"{d}/outcome.json"))
records = [json.loads(l) for l in open(f"{d}/history.jsonl") if l.strip()]
print(f"{label},{limit},{seed},{len(records)},{outcome.get('test_accuracy', float('nan')):.4f},{outcome['seconds']:.0f},\"{extra}\"")
PY
tail -n 1 "$out/points.csv"
