#!/usr/bin/env bash
# aha's math checker vs Math-Verify on the same typical boxed answers: verdicts/s on one core and
# agreement with the verdict known by construction.
#   bench/compare_math_verify.sh [N] [PYTHON]   (PYTHON: an interpreter with math-verify installed)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
PY=${2:-python3}
mkdir -p target/bench
python3 bench/make_math_cases.py "$N" target/bench/math_cases.jsonl
taskset -c 0 cargo bench -q -p aha-rewards --bench math_verdicts -- \
    "$PWD/target/bench/math_cases.jsonl" "$PWD/target/bench/aha_results.jsonl"
taskset -c 0 "$PY" bench/math_verify_bench.py target/bench/math_cases.jsonl target/bench/mv_results.jsonl
python3 bench/agreement.py target/bench/math_cases.jsonl target/bench/aha_results.jsonl target/bench/mv_results.jsonl
