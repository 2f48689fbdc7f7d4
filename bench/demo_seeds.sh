#!/usr/bin/env bash
# A demo's acceptance check: `aha demo [aha-moment|tools]` with three seeds, each timed, then one
# table of held-out pass@1 at T=1 before/after, greedy accuracy, the demo's own share (worked
# solutions, self-checks, or tool calls and the accuracy of the calls) and mean length.
# Run it on an otherwise idle machine: the wall time is part of the result.
#   bench/demo_seeds.sh [demo|aha-moment|tools] [SEEDS...]     (default: demo, seeds 1 2 3)
set -euo pipefail
cd "$(dirname "$0")/.."
aha=${AHA:-target/release/aha}
[ -x "$aha" ] || bash scripts/setup.sh
demo=demo
case "${1:-}" in demo | aha-moment | tools) demo=$1; shift ;; esac
command=(demo)
[ "$demo" = demo ] || command+=("$demo")
if [ $# -gt 0 ]; then seeds=("$@"); else seeds=(1 2 3); fi
out=runs/$demo-seeds-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
for seed in "${seeds[@]}"; do
    start=$(date +%s.%N)
    "$aha" "${command[@]}" --seed "$seed" --out "$out/seed$seed" > "$out/seed$seed.txt" 2> "$out/seed$seed.log"
    end=$(date +%s.%N)
    echo "seed $seed: $(echo "$end - $start" | bc) s wall" >> "$out/wall.txt"
done
python3 - "$out" "$demo" "${seeds[@]}" <<'PY'
import json, sys
out, demo, seeds = sys.argv[1], sys.argv[2], sys.argv[3:]
walls = dict(l.split(": ") for l in open(f"{out}/wall.txt").read().splitlines())
# The demo's own columns: (header, path in a before/after measurement).
own = {
    "demo": [("worked (T=1)", ["worked_share_t1"])],
    "aha-moment": [("self-checks (T=1)", ["t1", "check_share"])],
    "tools": [("tool use (T=1)", ["t1", "tool_share"]), ("right with tool", ["t1", "accuracy_with_tool"]),
              ("tool use (greedy)", ["greedy", "tool_share"])],
}[demo]
columns = [("pass@1 T=1", ["pass_at_1_t1"]), ("greedy", ["greedy_accuracy"])] + own
def get(m, path):
    for key in path:
        m = m.get(key) if isinstance(m, dict) else None
    return m
def pct(v):
    return "    -" if v is None else f"{100 * v:5.1f}%"
print("  ".join([f"{'seed':>4}"] + [f"{h:>17}" for h, _ in columns] + [f"{'length':>13}", "wall"]))
for s in seeds:
    d = json.load(open(f"{out}/seed{s}/demo.json"))
    b, a = d["before"], d["after"]
    cells = [f"{pct(get(b, p))} -> {pct(get(a, p))}" for _, p in columns]
    print("  ".join([f"{s:>4}"] + [f"{c:>17}" for c in cells]
                    + [f"{b['length_mean_t1']:5.1f} -> {a['length_mean_t1']:5.1f}", walls["seed " + s]]))
PY
