#!/usr/bin/env bash
# Regenerates the demo's base model, assets/demo-model: the pretraining corpus and tokenizer
# (`aha demo corpus`), then `aha sft` from random weights (examples/configs/demo-pretrain.toml).
# One libtorch thread, as the committed model was made: deterministic on the same machine (another
# thread count or CPU gives a slightly different model of the same quality). About 20 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/base_model.sh
pretrain target/demo-base examples/configs/demo-pretrain.toml 1 demo corpus --examples 100000 -- "$@"
bundle demo-model target/demo-base/run/checkpoints last
