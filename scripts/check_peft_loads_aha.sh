#!/usr/bin/env bash
# Shows PEFT loading LoRA adapters that aha trained: for each fixture model (Qwen2, Llama, Qwen3),
# `aha sft` trains an adapter for a few steps (examples/configs/sft-tiny.toml with a [lora]
# section; each model a different rank and target set), `aha logprobs --adapter` scores a text
# with it, and scripts/make_lora_fixtures.py --check-saved loads the checkpoint with
# peft.PeftModel.from_pretrained on the same base and compares its log-probs (1e-5).
# Needs PEFT in .venv (dev only): .venv/bin/pip install torch==2.13.0 transformers==5.24.0 peft==0.21.2
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
AHA=target/release/aha
[ -x "$AHA" ] || { echo "run scripts/setup.sh first" >&2; exit 1; }
PY=.venv/bin/python
"$PY" -c "import peft" 2>/dev/null || "$PY" -m pip install --quiet "torch==2.13.0" "transformers==5.24.0" "peft==0.21.2"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
TEXT="7 + 8 = 15, then 15 + 26 = 41. The answer is 41."
declare -A LORA=(
  [qwen2]='lora.r=4 lora.alpha=8 lora.target_modules=all-linear'
  [llama]='lora.r=2 lora.alpha=4 lora.use_rslora=true lora.target_modules=["q_proj","o_proj"]'
  [qwen3]='lora.r=8 lora.alpha=16 lora.target_modules=["k_proj","up_proj","down_proj"]'
)
for name in qwen2 llama qwen3; do
  sets=(--set "model.path=tests/fixtures/models/$name" --set "run.output_dir=$out/$name" --set run.steps=4
        --set optim.lr=1e-2 --set run.eval_every=0)
  for s in ${LORA[$name]}; do sets+=(--set "$s"); done
  "$AHA" sft examples/configs/sft-tiny.toml "${sets[@]}" >/dev/null
  adapter="$out/$name/checkpoints/step-000004"
  "$AHA" logprobs --model "tests/fixtures/models/$name" --adapter "$adapter" --text "$TEXT" \
    | "$PY" -c 'import json, sys; d = json.load(sys.stdin); json.dump({"sequences": [d["tokens"]], "logprobs": [d["logprobs"]]}, sys.stdout)' \
    > "$adapter/aha_logprobs.json"
  "$PY" scripts/make_lora_fixtures.py --check-saved "$adapter" --like "$name"
done
