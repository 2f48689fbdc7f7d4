#!/usr/bin/env bash
# Differential fuzz: aha's math checker and Math-Verify on the same generated answers in many
# notations (bench/make_math_fuzz.py), each equivalent or not by construction. Reports the
# disagreement rate, per kind and wrapper, who is right by construction, and examples.
#   bench/fuzz_math_verify.sh [N] [PYTHON] [SEED]   (PYTHON: an interpreter with math-verify)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
PY=${2:-python3}
SEED=${3:-0}
mkdir -p target/bench
python3 bench/make_math_fuzz.py "$N" target/bench/fuzz_cases.jsonl "$SEED"
cargo bench -q -p aha-rewards --bench math_verdicts -- \
    "$PWD/target/bench/fuzz_cases.jsonl" "$PWD/target/bench/fuzz_aha.jsonl"
"$PY" bench/math_verify_bench.py target/bench/fuzz_cases.jsonl target/bench/fuzz_mv.jsonl
python3 bench/fuzz_report.py target/bench/fuzz_cases.jsonl target/bench/fuzz_aha.jsonl target/bench/fuzz_mv.jsonl
