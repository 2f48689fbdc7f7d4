#!/usr/bin/env bash
# `aha train` generating on two local vLLM servers (rollout.backend = "vllm", CPU build) against
# aha's own engine, on the workload of bench/compare_grpo.sh (the 24.5M Qwen2-shaped model,
# 8 prompts x 8 completions of exactly 64 tokens, fp32, dapo), one after the other:
#   engine          rollout.backend = "engine"
#   vllm            two servers, weights synced before every step's generation
#   vllm-stale1     the same with rollout.max_staleness = 1 and grpo.tis_cap = 2
# Prints one JSON line per run: the median step time of the steady steps, its generation and
# training parts, and for the servers the sync's parts (write, load, check), the check's largest
# |server - trainer| log-prob and the mean |sampler - trainer| log-prob of the trained tokens.
# The servers share this machine's cores with the trainer: the comparison says what the remote
# path costs here, not what a second machine buys.
#   bench/compare_vllm.sh [THREADS]     (STEPS=6 SKIP=2; PORTS="18201 18202")
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${1:-2}"
STEPS="${STEPS:-6}"
SKIP="${SKIP:-2}"
PORTS=(${PORTS:-18201 18202})
PY=.venv/bin/python
bench/prepare_grpo_bench.sh
MODEL=target/bench-models/qwen2-25m-noeos
AHA=target/release/aha

scripts/vllm_servers.sh install
trap 'scripts/vllm_servers.sh stop "${PORTS[@]}"; rm -rf "$TMP"' EXIT
TMP=$(mktemp -d)
VLLM_CPU_OMP_THREADS_BIND="${VLLM_CPU_OMP_THREADS_BIND:-nobind}" scripts/vllm_servers.sh start "$MODEL" "${PORTS[@]}"
servers=$(printf '"http://127.0.0.1:%s",' "${PORTS[@]}")
REMOTE=(--set rollout.backend=vllm --set "rollout.servers=[${servers%,}]" --set "rollout.sync_dir=$TMP/sync")

run() {
  local name=$1; shift
  local load; load=$(cut -d' ' -f1-3 /proc/loadavg)
  "$AHA" --threads "$THREADS" train bench/configs/grpo-bench-25m.toml --set run.output_dir="$TMP/$name" \
    --set run.steps="$STEPS" "$@" >"$TMP/$name.log" 2>&1 || { cat "$TMP/$name.log"; exit 1; }
  "$PY" - "$TMP/$name/metrics.jsonl" "$name" "$SKIP" "$load" "$THREADS" <<'PYEOF'
import json, statistics, sys
path, name, skip, load, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
rows = [json.loads(l) for l in open(path)]
steady = rows[skip:]
def med(key, rows=steady):
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(f"{statistics.median(values):.4g}") if values else None
print(json.dumps({
    "run": name, "threads": threads, "load_avg_before": load, "steps_timed": len(steady),
    "s_per_step": med("step_s"), "step_s": [round(r["step_s"], 3) for r in rows],
    "generation_s": med("generation_s"), "train_s": med("train_s"),
    "sync_write_s": med("sync_write_s", rows), "sync_load_s": med("sync_load_s", rows),
    "sync_check_s": med("sync_check_s", rows),
    "sync_max_abs_logprob_diff": max((r["sync_max_abs_logprob_diff"] for r in rows if "sync_max_abs_logprob_diff" in r), default=None),
    "sampling_logprob_diff": med("sampling_logprob_diff"), "sampler_kl": med("sampler_kl"),
    "sampled_by_version": [r.get("sampled_by_version") for r in rows],
}))
PYEOF
}

run engine
run vllm "${REMOTE[@]}"
run vllm-stale1 "${REMOTE[@]}" --set rollout.max_staleness=1 --set grpo.tis_cap=2.0
