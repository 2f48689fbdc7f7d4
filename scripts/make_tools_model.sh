#!/usr/bin/env bash
# Regenerates the base model of `aha demo tools`, assets/tools-model: the pretraining corpus and
# tokenizer (`aha demo tools corpus`: 60,000 3-digit products, 15% answered by a call to the
# Python tool whose result, written exactly as the engine injects it, is copied into the answer,
# the rest by a guess of the right size that is right 5% of the time), then `aha sft` from random
# weights (examples/configs/tools-pretrain.toml). The committed model is the last (step-400)
# checkpoint. Two libtorch threads, as the committed model was made; another thread count or CPU
# gives a slightly different model.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/base_model.sh
make_base_model tools-model target/tools-base examples/configs/tools-pretrain.toml 2 step-000400 demo tools corpus --examples 60000 -- "$@"
