#!/usr/bin/env bash
# Regenerates the demo's base model, assets/demo-model: the pretraining corpus and tokenizer
# (`aha demo corpus`), then `aha sft` from random weights (examples/configs/demo-pretrain.toml).
# One libtorch thread, as the committed model was made: deterministic on the same machine (another
# thread count or CPU gives a slightly different model of the same quality). About 20 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
work=target/demo-base
aha=target/release/aha
[ -x "$aha" ] || bash scripts/setup.sh
rm -rf "$work"
"$aha" demo corpus --out "$work" --examples 100000
"$aha" --threads 1 sft examples/configs/demo-pretrain.toml "$@"
last=$(ls -d "$work"/run/checkpoints/step-* | sort -t- -k2 -n | tail -1)
rm -rf assets/demo-model
mkdir -p assets/demo-model
for f in config.json model.safetensors tokenizer.json tokenizer_config.json; do
    cp "$last/$f" assets/demo-model/
done
echo "assets/demo-model <- $last"
