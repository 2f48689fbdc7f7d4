# Sourced by the scripts that make the demos' base models (scripts/make_*_model.sh); run from the
# repository root.

aha=${AHA:-target/release/aha}

# pretrain WORK CONFIG THREADS CORPUS... [-- SFT_ARGS...]
#   writes the pretraining corpus, tokenizer and config.json (`aha CORPUS... --out WORK`), then
#   runs `aha --threads THREADS sft CONFIG SFT_ARGS...` from random weights.
pretrain() {
    local work=$1 config=$2 threads=$3
    shift 3
    local corpus=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do corpus+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    [ -x "$aha" ] || bash scripts/setup.sh
    rm -rf "$work"
    "$aha" "${corpus[@]}" --out "$work"
    "$aha" --threads "$threads" sft "$config" "$@"
}

# bundle MODEL CHECKPOINTS STEP
#   copies checkpoint STEP of the folder CHECKPOINTS (a name such as step-000750, or "last") into
#   assets/MODEL: the files a bundled model is made of.
bundle() {
    local model=$1 checkpoints=$2 step=$3
    local chosen="$checkpoints/$step"
    [ "$step" = last ] && chosen=$(ls -d "$checkpoints"/step-* | sort -t- -k2 -n | tail -1)
    rm -rf "assets/$model"
    mkdir -p "assets/$model"
    for f in config.json model.safetensors tokenizer.json tokenizer_config.json; do
        cp "$chosen/$f" "assets/$model/"
    done
    echo "assets/$model <- $chosen"
}
