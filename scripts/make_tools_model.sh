#!/usr/bin/env bash
# Regenerates the base model of `aha demo tools`, assets/tools-model: the pretraining corpus and
# tokenizer (`aha demo tools corpus`: 80,000 3-digit products; 30% of the solutions call the
# Python tool, `print( 478 * 356, end='')`, are shown its result as the engine writes it,
# ` = 170168.`, and answer with it; the rest guess a product of the right size, right 5% of the
# time), then `aha sft` from random weights (examples/configs/tools-pretrain.toml, 2000 steps).
# The committed model is the step-CHECKPOINT checkpoint. One libtorch thread, as the committed
# model was made (about 14 minutes on an idle 2-core machine); another thread count or CPU gives
# a slightly different model.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/base_model.sh
pretrain target/tools-base examples/configs/tools-pretrain.toml 1 \
    demo tools corpus --examples 80000 --tool-share 0.3 -- "$@"
bundle tools-model target/tools-base/run/checkpoints step-002000
