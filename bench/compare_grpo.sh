#!/usr/bin/env bash
# GRPO training steps, `aha train` against Hugging Face TRL's GRPOTrainer, on the same checkpoints
# and workload, one after the other: 8 prompts x 8 completions per step, every prompt exactly 40
# tokens, exactly 64 new tokens per completion (no early stop: aha loads a copy of the checkpoint
# whose config.json has eos_token_id null; TRL sets min_new_tokens = 64 so eos is never sampled),
# temperature 1, loss_type dapo, beta 0, num_iterations 1, lr 1e-5 (constant), fp32, CPU, THREADS
# intra-op threads; a length penalty plus 1 for a "q" in the text: it costs nothing on either side
# and makes nearly every group's rewards differ, so both train on every completion.
# Each pair runs twice: in fp32, and in mixed precision (fp32 weights, bf16 passes: aha's
# model.compute_dtype = "bf16", TRL's bf16 = true, which is GRPOConfig's default).
#   bench/compare_grpo.sh [THREADS]          (STEPS=7 SKIP=2 by default: 5 steady-state steps;
#                                             MODELS="tiny 25m" and PRECISIONS="fp32 bf16" select pairs)
# Prints one JSON line per (impl, model, precision): s_per_step (median of the steady-state
# steps), completion_tokens_per_s, completion_length_mean and, for aha, generation/train/reward
# seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${1:-2}"
STEPS="${STEPS:-7}"
SKIP="${SKIP:-2}"
PY=.venv/bin/python
bench/prepare_grpo_bench.sh
AHA=target/release/aha

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
load() { cut -d' ' -f1-3 /proc/loadavg; }

for name in ${MODELS:-tiny 25m}; do
  model=target/bench-models/qwen2-$name-noeos
  for precision in ${PRECISIONS:-fp32 bf16}; do
    if [ "$precision" = bf16 ]; then
      AHA_PRECISION=(--set model.compute_dtype=bf16); TRL_PRECISION=(--bf16)
    else
      AHA_PRECISION=(); TRL_PRECISION=()
    fi
    # aha: the per-step times from metrics.jsonl (the final checkpoint write is outside them).
    LOAD=$(load)
    run="$TMP/aha-$name-$precision"
    "$AHA" --threads "$THREADS" train "bench/configs/grpo-bench-$name.toml" "${AHA_PRECISION[@]}" \
      --set run.output_dir="$run" --set run.steps="$STEPS" >"$run.log" 2>&1 \
      || { cat "$run.log"; exit 1; }
    "$PY" - "$run/metrics.jsonl" "$model" "$THREADS" "$SKIP" "$LOAD" "$precision" <<'EOF'
import json, statistics, sys
path, model, threads, skip, load, precision = sys.argv[1:3] + [int(sys.argv[3]), int(sys.argv[4])] + sys.argv[5:7]
rows = [json.loads(l) for l in open(path)]
steady = rows[skip:]
med = lambda k: round(statistics.median(r[k] for r in steady), 4)
length = statistics.mean(r["completion_length_mean"] for r in steady)
s_step = statistics.median(r["step_s"] for r in steady)
print(json.dumps({
    "impl": "aha", "model": model, "threads": threads, "load_avg_before": load,
    "precision": "bf16 mixed" if precision == "bf16" else "fp32",
    "completions_per_step": rows[0]["completions"], "prompt_tokens": 40, "max_new_tokens": 64,
    "steps_timed": len(steady), "s_per_step": round(s_step, 4),
    "s_per_step_mean": round(statistics.mean(r["step_s"] for r in steady), 4),
    "step_s": [round(r["step_s"], 3) for r in rows],
    "generation_s": med("generation_s"), "train_s": med("train_s"),
    "reward_wait_s": med("reward_wait_s"), "reward_s": med("reward_s"),
    "completion_length_mean": length,
    "completion_length_min": min(r["completion_length_min"] for r in rows),
    "completion_length_max": max(r["completion_length_max"] for r in rows),
    "completion_tokens_per_s": round(length * rows[0]["completions"] / s_step, 1),
}))
EOF
    LOAD=$(load)
    "$PY" bench/trl_grpo_bench.py --model "$model" --threads "$THREADS" --steps "$STEPS" "${TRL_PRECISION[@]}" \
      --skip "$SKIP" --load-avg "$LOAD" 2>"$TMP/trl.log" | tail -1 \
      || { cat "$TMP/trl.log"; exit 1; }
  done
done
