#!/usr/bin/env bash
# The demo's acceptance check (issue 8): `aha demo` with three seeds, each timed, then one table of
# held-out pass@1 at T=1 before/after, greedy accuracy, worked-solution share and mean length.
# Run it on an otherwise idle machine: the wall time is part of the result.
#   bench/demo_seeds.sh [SEEDS...]     (default: 1 2 3)
set -euo pipefail
cd "$(dirname "$0")/.."
aha=target/release/aha
[ -x "$aha" ] || bash scripts/setup.sh
if [ $# -gt 0 ]; then seeds=("$@"); else seeds=(1 2 3); fi
out=runs/demo-seeds-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
for seed in "${seeds[@]}"; do
    start=$(date +%s.%N)
    "$aha" demo --seed "$seed" --out "$out/seed$seed" > "$out/seed$seed.txt" 2> "$out/seed$seed.log"
    end=$(date +%s.%N)
    echo "seed $seed: $(echo "$end - $start" | bc) s wall" >> "$out/wall.txt"
done
python3 - "$out" "${seeds[@]}" <<'PY'
import json, sys
out, seeds = sys.argv[1], sys.argv[2:]
walls = dict(l.split(": ") for l in open(f"{out}/wall.txt").read().splitlines())
print(f"{'seed':>4}  {'pass@1 T=1':>17}  {'greedy':>15}  {'worked (T=1)':>15}  {'length':>13}  wall")
for s in seeds:
    d = json.load(open(f"{out}/seed{s}/demo.json"))
    b, a = d["before"], d["after"]
    pct = lambda k: f"{100*b[k]:5.1f}% -> {100*a[k]:5.1f}%"
    print(f"{s:>4}  {pct('pass_at_1_t1'):>17}  {pct('greedy_accuracy'):>15}  {pct('worked_share_t1'):>15}  "
          f"{b['length_mean_t1']:5.1f} -> {a['length_mean_t1']:5.1f}  {walls['seed ' + s]}")
PY
