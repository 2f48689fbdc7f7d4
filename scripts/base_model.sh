# Sourced by the scripts that make the demos' base models (scripts/make_*_model.sh).
#
# make_base_model MODEL WORK CONFIG THREADS CHECKPOINT CORPUS... [-- SFT_ARGS...]
#   writes the pretraining corpus, tokenizer and config.json (`aha CORPUS... --out WORK`), runs
#   `aha --threads THREADS sft CONFIG SFT_ARGS...` from random weights, and copies checkpoint
#   CHECKPOINT (a folder name such as step-000750, or "last") into assets/MODEL: the files a
#   bundled model is made of. Run from the repository root.
make_base_model() {
    local model=$1 work=$2 config=$3 threads=$4 checkpoint=$5
    shift 5
    local corpus=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do corpus+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    local aha=${AHA:-target/release/aha}
    [ -x "$aha" ] || bash scripts/setup.sh
    rm -rf "$work"
    "$aha" "${corpus[@]}" --out "$work"
    "$aha" --threads "$threads" sft "$config" "$@"
    local last="$work/run/checkpoints/$checkpoint"
    [ "$checkpoint" = last ] && last=$(ls -d "$work"/run/checkpoints/step-* | sort -t- -k2 -n | tail -1)
    rm -rf "assets/$model"
    mkdir -p "assets/$model"
    for f in config.json model.safetensors tokenizer.json tokenizer_config.json; do
        cp "$last/$f" "assets/$model/"
    done
    echo "assets/$model <- $last"
}
