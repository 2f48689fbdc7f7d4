#!/usr/bin/env bash
# Regenerates the demo's base model, assets/demo-model: the pretraining corpus and tokenizer
# (`aha demo corpus`), then `aha sft` from random weights (examples/configs/demo-pretrain.toml).
# Deterministic for the same machine and thread count; about 15 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
work=target/demo-base
aha=target/release/aha
[ -x "$aha" ] || bash scripts/setup.sh
rm -rf "$work"
"$aha" demo corpus --out "$work" --examples 100000
"$aha" sft examples/configs/demo-pretrain.toml "$@"
last=$(ls -d "$work"/run/checkpoints/step-* | sort -t- -k2 -n | tail -1)
rm -rf assets/demo-model
mkdir -p assets/demo-model
for f in config.json model.safetensors tokenizer.json tokenizer_config.json; do
    cp "$last/$f" assets/demo-model/
done
echo "assets/demo-model <- $last"
