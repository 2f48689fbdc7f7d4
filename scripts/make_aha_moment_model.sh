#!/usr/bin/env bash
# Regenerates the base model of `aha demo aha-moment`, assets/aha-moment-model: the pretraining
# corpus and tokenizer (`aha demo aha-moment corpus`: 3-digit additions answered with a first
# attempt, right half of the time, 10% of them checked with "Wait, let me check:" and confirmed
# or corrected), then `aha sft` from random weights (examples/configs/aha-moment-pretrain.toml).
# One libtorch thread: deterministic on the same machine (another thread count or CPU gives a
# slightly different model of the same quality).
set -euo pipefail
cd "$(dirname "$0")/.."
work=target/aha-moment-base
aha=${AHA:-target/release/aha}
[ -x "$aha" ] || bash scripts/setup.sh
rm -rf "$work"
"$aha" demo aha-moment corpus --out "$work" --examples 100000
"$aha" --threads 1 sft examples/configs/aha-moment-pretrain.toml "$@"
last=$(ls -d "$work"/run/checkpoints/step-* | sort -t- -k2 -n | tail -1)
rm -rf assets/aha-moment-model
mkdir -p assets/aha-moment-model
for f in config.json model.safetensors tokenizer.json tokenizer_config.json; do
    cp "$last/$f" assets/aha-moment-model/
done
echo "assets/aha-moment-model <- $last"
