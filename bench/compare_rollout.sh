#!/usr/bin/env bash
# Rollout generation, aha's engine against transformers' generate, on the same checkpoints,
# workload (8 prompts x 8 samples, temperature 1, up to 256 new tokens) and thread count, one
# after the other: fixed-length sequences (the same work for both) and ragged ones (stop tokens),
# then the 25M model in bf16.
#   bench/compare_rollout.sh [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${1:-2}"
PY=.venv/bin/python
# torch too: on a CPU set-up .venv holds the torch wheel without the dependencies Python needs.
"$PY" -c "import torch, transformers" 2>/dev/null || "$PY" -m pip install --quiet "torch==2.13.0" "transformers==5.24.0"
BENCH_MODEL=target/bench-models/qwen2-25m
[ -f "$BENCH_MODEL/model.safetensors" ] || "$PY" bench/make_bench_model.py --out "$BENCH_MODEL"
cargo build --release --quiet -p aha-tests --bench rollout_throughput
AHA_BENCH=$(ls -t target/release/deps/rollout_throughput-* | grep -v '\.d$' | head -1)

for model in tests/fixtures/models/qwen2 "$BENCH_MODEL"; do
  for ragged in 0 4; do
    WORKLOAD="--threads $THREADS --prompts 8 --group-size 8 --prompt-tokens 32 --new-tokens 256 --ragged-stop-ids $ragged --repeats 3"
    "$AHA_BENCH" --model "$model" $WORKLOAD
    "$PY" bench/transformers_rollout_bench.py --model "$model" $WORKLOAD
  done
done
# bf16 on the 25M model, fixed lengths: aha's mixed precision (fp32 weights, bf16 passes and
# cache) against transformers' model converted to bf16, which computes the same thing.
WORKLOAD="--threads $THREADS --prompts 8 --group-size 8 --prompt-tokens 32 --new-tokens 256 --repeats 3 --compute-dtype bf16"
"$AHA_BENCH" --model "$BENCH_MODEL" $WORKLOAD
"$PY" bench/transformers_rollout_bench.py --model "$BENCH_MODEL" $WORKLOAD
