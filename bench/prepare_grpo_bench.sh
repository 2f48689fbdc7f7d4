#!/usr/bin/env bash
# What the GRPO step benchmarks (bench/compare_grpo.sh, bench/compare_vllm.sh) train on: the
# 24.5M bench model, no-eos copies of it and of the tiny fixture (weights symlinked: nothing stops
# early), the 40-token prompts, and the aha binary. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
# torch too: on a CPU set-up .venv holds the torch wheel without the dependencies Python needs.
"$PY" -c "import torch, trl" 2>/dev/null || "$PY" -m pip install --quiet "torch==2.13.0" "trl==1.16.0"
BENCH_MODEL=target/bench-models/qwen2-25m
[ -f "$BENCH_MODEL/model.safetensors" ] || "$PY" bench/make_bench_model.py --out "$BENCH_MODEL"
cargo build --release --quiet -p aha
"$PY" bench/trl_grpo_bench.py --no-eos-copy tests/fixtures/models/qwen2 target/bench-models/qwen2-tiny-noeos
"$PY" bench/trl_grpo_bench.py --no-eos-copy "$BENCH_MODEL" target/bench-models/qwen2-25m-noeos
mkdir -p target/bench-data
"$PY" bench/trl_grpo_bench.py --model target/bench-models/qwen2-tiny-noeos \
  --write-prompts target/bench-data/grpo-bench-prompts.jsonl
