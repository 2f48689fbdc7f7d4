#!/usr/bin/env bash
# aha's decoder against Hugging Face transformers on the same checkpoints, the same workload
# and the same thread count, one after the other on an otherwise idle machine.
#   bench/compare_transformers.sh [THREADS]
# Needs scripts/setup.sh to have run; installs transformers into .venv (a dev dependency only:
# the project's tests never need it) and creates the ~25M-parameter bench model under target/.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${1:-2}"
PY=.venv/bin/python
TRANSFORMERS_VERSION="5.24.0"
# torch too: on a CPU set-up .venv holds the torch wheel without the dependencies Python needs.
"$PY" -c "import torch, transformers" 2>/dev/null || "$PY" -m pip install --quiet "torch==2.13.0" "transformers==$TRANSFORMERS_VERSION"
BENCH_MODEL=target/bench-models/qwen2-25m
[ -f "$BENCH_MODEL/model.safetensors" ] || "$PY" bench/make_bench_model.py --out "$BENCH_MODEL"
cargo build --release --quiet -p aha-tests --bench model_throughput
AHA_BENCH=$(ls -t target/release/deps/model_throughput-* | grep -v '\.d$' | head -1)

WORKLOAD="--threads $THREADS --prompt-tokens 32 --new-tokens 64 --batch 4 --logprob-tokens 256 --logprob-batch 4 --repeats 5"
for model in tests/fixtures/models/qwen2 "$BENCH_MODEL"; do
  "$AHA_BENCH" --model "$model" $WORKLOAD
  "$PY" bench/transformers_bench.py --model "$model" $WORKLOAD
done
