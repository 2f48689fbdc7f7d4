#!/usr/bin/env bash
# Regenerates the base model of `aha demo aha-moment`, assets/aha-moment-model: the pretraining
# corpus and tokenizer (`aha demo aha-moment corpus`: 3-digit additions answered with a first
# attempt, right 40% of the time, 10% of them checked with "Wait, let me check:" and confirmed or
# corrected; 30% of the lines are practice texts, a column sum alone), then `aha sft` from random weights (examples/configs/aha-moment-pretrain.toml).
# The committed model is the step-750 checkpoint of the 1500-step cosine schedule (later
# checkpoints start to add in one shot, which makes the first attempt right more often and checking
# less useful; measured at step 1500 of an earlier corpus without practice texts). Two libtorch
# threads, as the committed model was made (about 3 minutes to step 750 on an idle 2-core machine);
# another thread count or CPU gives a slightly different model.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/base_model.sh
pretrain target/aha-moment-base examples/configs/aha-moment-pretrain.toml 2 demo aha-moment corpus --examples 150000 -- "$@"
bundle aha-moment-model target/aha-moment-base/run/checkpoints step-000750
