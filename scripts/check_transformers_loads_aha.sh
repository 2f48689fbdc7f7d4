#!/usr/bin/env bash
# Shows transformers loading checkpoints that aha wrote: `aha convert` re-saves each fixture
# model (Qwen2 split into one shard per tensor, Llama with tied embeddings, Qwen3), then
# scripts/make_fixtures.py --check-saved loads each with AutoModelForCausalLM/AutoTokenizer and
# compares its log-probs with the fixtures (1e-5). Needs transformers in .venv (dev only):
#   .venv/bin/pip install torch==2.13.0 transformers==5.24.0
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
AHA=target/release/aha
[ -x "$AHA" ] || { echo "run scripts/setup.sh first" >&2; exit 1; }
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"$AHA" convert --model tests/fixtures/models/qwen2 --out "$out/qwen2" --max-shard-mb 0 >/dev/null
"$AHA" convert --model tests/fixtures/models/llama --out "$out/llama" >/dev/null
"$AHA" convert --model tests/fixtures/models/qwen3 --out "$out/qwen3" >/dev/null
for name in qwen2 llama qwen3; do
  .venv/bin/python scripts/make_fixtures.py --check-saved "$out/$name" --like "$name"
done
