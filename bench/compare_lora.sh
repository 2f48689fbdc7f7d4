#!/usr/bin/env bash
# GRPO with LoRA against full fine-tuning, and against Hugging Face TRL's GRPOTrainer with a PEFT
# adapter: seconds per step and peak resident memory, one after the other in one run.
#   bench/compare_lora.sh [THREADS]        (MODELS="25m 0.5b" by default)
# Workloads (bench/compare_grpo.sh's: 40-token prompts, exactly as many new tokens as allowed, no
# eos, temperature 1, dapo, lr 1e-5, fp32, CPU), with grpo.beta = 0.04 so that full fine-tuning
# holds its reference copy of the weights (LoRA scores its base with the adapters off, and so does
# TRL with PEFT):
#   25m   the 24.5M bench model, 8 prompts x 8 completions x 64 tokens, 5 steps (2 warm-up)
#   0.5b  random weights with Qwen2.5-0.5B's config, 2 prompts x 4 completions x 32 tokens,
#         4 steps (1 warm-up)
# LoRA on both sides: r = 16, alpha = 32, all linear layers of every decoder layer, no dropout;
# aha's twice: generating through the adapters (lora-unmerged, the default) and on a merged copy
# (lora, lora.merge_for_generation = true).
# Prints one JSON line per (impl, model, mode): s_per_step (median of the steady steps) and
# peak_rss_mib (the process's maximum resident set).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${1:-2}"
PY=.venv/bin/python
"$PY" -c "import torch, trl, peft" 2>/dev/null \
  || "$PY" -m pip install --quiet "torch==2.13.0" "trl==1.16.0" "peft==0.21.2"
cargo build --release --quiet -p aha
AHA=target/release/aha
mkdir -p target/bench-models target/bench-data
[ -f target/bench-models/qwen2-25m/model.safetensors ] \
  || "$PY" bench/make_bench_model.py --out target/bench-models/qwen2-25m
"$PY" bench/trl_grpo_bench.py --no-eos-copy target/bench-models/qwen2-25m target/bench-models/qwen2-25m-noeos
"$PY" bench/trl_grpo_bench.py --model target/bench-models/qwen2-25m-noeos \
  --write-prompts target/bench-data/grpo-bench-prompts.jsonl

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# Runs a command and prints its peak resident memory (MiB) on stderr's last line.
peak_rss() {
  "$PY" -c 'import resource, subprocess, sys
code = subprocess.call(sys.argv[1:])
print(f"peak_rss_mib {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.1f}", file=sys.stderr)
sys.exit(code)' "$@"
}

for name in ${MODELS:-25m 0.5b}; do
  if [ "$name" = 25m ]; then
    model=target/bench-models/qwen2-25m-noeos; steps=5; skip=2
    shape=(--set sampling.prompts_per_step=8 --set sampling.group_size=8 --set sampling.max_new_tokens=64)
    trl_shape=(--prompts 8 --group-size 8 --new-tokens 64)
  else
    [ -f target/bench-models/qwen2.5-0.5b/model.safetensors ] \
      || "$PY" bench/make_bench_model.py --preset qwen2.5-0.5b --out target/bench-models/qwen2.5-0.5b
    "$PY" bench/trl_grpo_bench.py --no-eos-copy target/bench-models/qwen2.5-0.5b target/bench-models/qwen2.5-0.5b-noeos
    model=target/bench-models/qwen2.5-0.5b-noeos; steps=4; skip=1
    shape=(--set sampling.prompts_per_step=2 --set sampling.group_size=4 --set sampling.max_new_tokens=32
           --set optim.micro_batch_size=8)
    trl_shape=(--prompts 2 --group-size 4 --new-tokens 32)
  fi
  for mode in full lora lora-unmerged; do
    lora=()
    [ "$mode" != full ] && lora=(--set lora.r=16 --set lora.alpha=32 --set lora.target_modules=all-linear)
    [ "$mode" = lora ] && lora+=(--set lora.merge_for_generation=true)
    run="$TMP/aha-$name-$mode"
    peak_rss "$AHA" --threads "$THREADS" train bench/configs/grpo-bench-25m.toml --set model.path="$model" \
      --set grpo.beta=0.04 --set run.output_dir="$run" --set run.steps="$steps" "${shape[@]}" "${lora[@]}" \
      >"$run.log" 2>"$run.err" || { cat "$run.err"; exit 1; }
    "$PY" - "$run/metrics.jsonl" "$model" "$mode" "$skip" "$(tail -1 "$run.err" | cut -d' ' -f2)" <<'PYEOF'
import json, statistics, sys
path, model, mode, skip, rss = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
rows = [json.loads(l) for l in open(path)]
steady = rows[skip:]
print(json.dumps({
    "impl": "aha", "model": model, "mode": mode, "completions_per_step": rows[0]["completions"],
    "s_per_step": round(statistics.median(r["step_s"] for r in steady), 3),
    "generation_s": round(statistics.median(r["generation_s"] for r in steady), 3),
    "train_s": round(statistics.median(r["train_s"] for r in steady), 3),
    "step_s": [round(r["step_s"], 3) for r in rows], "peak_rss_mib": rss,
}))
PYEOF
  done
  "$PY" bench/trl_grpo_bench.py --model "$model" --threads "$THREADS" --steps "$steps" --skip "$skip" \
    --beta 0.04 --lora-r 16 "${trl_shape[@]}" 2>"$TMP/trl.log" | tail -1 || { cat "$TMP/trl.log"; exit 1; }
done
