#!/usr/bin/env bash
# The whole pipeline on one NVIDIA GPU, measured (issue 26): parity against transformers on the
# device in fp32 and bf16, generation and GRPO steps side by side with transformers, TRL 1.16 and
# (where it installs) vLLM, and `aha demo` end to end. docs/benchmarks.md says how to run it and
# what it costs.
#
#   bench/gpu_check.sh                        # --device cuda, the full shapes
#   bench/gpu_check.sh --device cpu --small   # a dry run of every stage in tiny shapes (minutes)
#
# Options:
#   --device cuda|cpu   where aha and the peers run (default cuda)
#   --small             tiny shapes: the tests/fixtures/models/qwen2 model, 4 prompts x 2 samples
#                       x 16 new tokens, 2 GRPO steps (1 timed), a 2-step demo on 16 problems
#   --models "0.5b 1.5b"  the bench models (random weights, Qwen2.5-0.5B's / -1.5B's config.json;
#                       "tiny" is the fixture; --small --models 0.5b: the real shape, tiny workload)
#   --only a,b / --skip a,b   stages by name or prefix (setup peers vllm-setup models parity-f32
#                       parity-bf16 gen-MODEL grpo-MODEL demo); `--only gen,grpo` takes prefixes
#   --vllm auto|on|off  vLLM stages (auto: on for cuda, off for cpu or when PY is given)
#   --deadline-s S      start no stage after S seconds, and cut each stage's timeout to what is left
#   --fetch-wheels DIR  download (here, with network) the wheels TRL needs beyond an image with
#                       torch and transformers (for an offline GPU machine, Python 3.12), and exit
# Environment:
#   AHA=path            a built aha binary: no `cargo build` (default: AHA_TORCH=cuda|cpu
#                       scripts/setup.sh builds target/release/aha)
#   AHA_LIBTORCH_LIB=dir  prepended to LD_LIBRARY_PATH for that binary (a libtorch it was linked
#                       against that its rpath does not find)
#   PY=python           the Python for transformers and TRL (default: target/gpu-bench-venv, made
#                       with torch 2.13.0, transformers 5.24.0, trl 1.16.0; never the project's .venv)
#   WHEELS=dir          with PY: wheels installed (--no-index --no-deps) into target/gpu-bench-site
#   PEAK_TFLOPS=x       the peak for MFU (default: bf16 dense peak of the GPU nvidia-smi names)
#   STEPS, SKIP         GRPO steps run and left out as warm-up (default 3 and 1; --small: 2 and 1)
# Output: bench/results/gpu_check-<UTC time>.log (everything) and .jsonl (one JSON line per
# measurement or check, one per stage with its status); the summary at the end names the failed
# stages. A stage that fails or times out does not stop the others. Exit status 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

DEVICE=cuda SMALL=0 ONLY="" SKIPSTAGES="" VLLM=auto DEADLINE="" MODELS="0.5b 1.5b" MODELS_GIVEN=0 FETCH=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift ;;
    --small) SMALL=1 ;;
    --models) MODELS="$2"; MODELS_GIVEN=1; shift ;;
    --only) ONLY="$2"; shift ;;
    --skip) SKIPSTAGES="$2"; shift ;;
    --vllm) VLLM="$2"; shift ;;
    --deadline-s) DEADLINE="$2"; shift ;;
    --fetch-wheels) FETCH="$2"; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$DEVICE" in cpu|cuda|cuda:*) ;; *) echo "gpu_check: --device must be cpu or cuda" >&2; exit 2 ;; esac

if [ -n "$FETCH" ]; then
  # TRL and what it needs that the offline H200 image (torch 2.11, transformers 5.17, accelerate,
  # pandas, pyarrow, xxhash...) lacks, as Python 3.12 manylinux wheels.
  mkdir -p "$FETCH"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$FETCH" trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
  ls -la "$FETCH"
  exit
fi

# --- shapes -----------------------------------------------------------------------------------
if [ "$SMALL" = 1 ]; then
  PROMPTS=4 GROUP=2 NEW=16 PROMPT_TOKENS=40 MICRO=4 REPEATS=1
  STEPS="${STEPS:-2}" SKIP="${SKIP:-1}"
  [ "$MODELS_GIVEN" = 1 ] || MODELS="tiny"
else
  PROMPTS=64 GROUP=8 NEW=512 PROMPT_TOKENS=40 MICRO=16 REPEATS=1
  STEPS="${STEPS:-3}" SKIP="${SKIP:-1}"
fi
# auto: on for a GPU, unless PY names a given Python (an offline machine's image: vLLM cannot be
# installed there, and pip would spend minutes failing to reach the network).
[ "$VLLM" = auto ] && { [ "$DEVICE" = cpu ] || [ -n "${PY:-}" ] && VLLM=off || VLLM=on; }
GPU_FLAG=--no-gpu; [ "$DEVICE" != cpu ] && GPU_FLAG=--gpu
TORCH_MODE=cpu; [ "$DEVICE" != cpu ] && TORCH_MODE=cuda

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p bench/results
LOG="bench/results/gpu_check-$STAMP.log"
JSONL="bench/results/gpu_check-$STAMP.jsonl"
WORK="$ROOT/target/gpu-check"
mkdir -p "$WORK"
exec > >(tee -a "$LOG") 2>&1

BUILD_AHA=0
if [ -z "${AHA:-}" ]; then AHA="$ROOT/target/release/aha"; BUILD_AHA=1; fi
case "$AHA" in /*) ;; *) AHA="$ROOT/$AHA" ;; esac
[ -n "${AHA_LIBTORCH_LIB:-}" ] && export LD_LIBRARY_PATH="$AHA_LIBTORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
VENV="$ROOT/target/gpu-bench-venv"
VLLM_VENV="$ROOT/target/gpu-bench-vllm-venv"
if [ -n "${PY:-}" ]; then PY_GIVEN=1; else PY="$VENV/bin/python"; PY_GIVEN=0; fi
VPY="$VLLM_VENV/bin/python"
if [ -n "${WHEELS:-}" ]; then export PYTHONPATH="$ROOT/target/gpu-bench-site${PYTHONPATH:+:$PYTHONPATH}"; fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1
export AHA PY VPY DEVICE GPU_FLAG TORCH_MODE BUILD_AHA PY_GIVEN VENV VLLM_VENV WORK JSONL ROOT SMALL \
  PROMPTS GROUP NEW PROMPT_TOKENS MICRO REPEATS STEPS SKIP VLLM MODELS

say() { printf '[gpu_check %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
# JSON lines from stdin: printed and appended to the results, with the stage's name.
emit() { while IFS= read -r line; do
  case "$line" in "{\""*) printf '%s\n' "$line" | python3 -c 'import json,sys,os; r=json.loads(sys.stdin.read()); r.setdefault("stage", os.environ.get("STAGE","")); print(json.dumps(r))' | tee -a "$JSONL" ;; *) printf '%s\n' "$line" ;; esac
done; }
# measure LABEL KIND MODEL_DIR -- CMD...: runs CMD (its last stdout line is its JSON result),
# adds wall time, peak memory, FLOPs and MFU, and records it. KIND: gen, grpo or none.
measure() {
  local label="$1" kind="$2" model="$3"; shift 4
  local out="$WORK/out-$STAGE-$label.txt" m="$WORK/measure-$STAGE-$label.json"
  say "$label: $*"
  python3 bench/gpu_check.py measure "$GPU_FLAG" --out "$m" -- "$@" >"$out" || { cat "$out"; say "$label: FAILED"; return 1; }
  cat "$out"
  [ "$kind" = none ] && return 0
  grep '^{"' "$out" | tail -1 | python3 bench/gpu_check.py annotate --model "$model" --kind "$kind" \
    --prompts "$PROMPTS" --group-size "$GROUP" --prompt-tokens "$PROMPT_TOKENS" --new-tokens "$NEW" \
    --peak-tflops "$PEAK" --measure "$m" --label "$label" | emit
}
export -f say emit measure

PEAK="${PEAK_TFLOPS:-}"
PEAK_NOTE="PEAK_TFLOPS given"
if [ -z "$PEAK" ] && [ "$DEVICE" != cpu ]; then
  IFS=$'\t' read -r PEAK GPU_NAME < <(python3 bench/gpu_check.py peak-tflops)
  PEAK_NOTE="bf16 dense peak of '${GPU_NAME:-?}' from its data sheet"
  [ -z "$PEAK" ] && PEAK_NOTE="no known peak for '${GPU_NAME:-?}': set PEAK_TFLOPS for MFU"
fi
[ -z "$PEAK" ] && [ "$DEVICE" = cpu ] && PEAK_NOTE="CPU: no peak assumed, MFU not computed (set PEAK_TFLOPS)"
export PEAK

# --- stages -------------------------------------------------------------------------------------
selected() {
  local name="$1" s
  if [ -n "$ONLY" ]; then
    local hit=0
    for s in ${ONLY//,/ }; do case "$name" in "$s"|"$s"-*) hit=1 ;; esac; done
    [ "$hit" = 1 ] || return 1
  fi
  for s in ${SKIPSTAGES//,/ }; do case "$name" in "$s"|"$s"-*) return 1 ;; esac; done
  return 0
}
T0=$(date +%s)
FAILED=()
record() {  # name status seconds note
  python3 -c 'import json,sys; print(json.dumps({"type":"stage","stage":sys.argv[1],"status":sys.argv[2],"seconds":float(sys.argv[3]),"note":sys.argv[4]}))' "$@" >>"$JSONL"
}
stage() {  # name timeout_s function
  local name="$1" limit="$2" fn="$3"
  if ! selected "$name"; then record "$name" skipped 0 "not selected"; return; fi
  if [ -n "$DEADLINE" ]; then
    local left=$(( DEADLINE - ($(date +%s) - T0) ))
    if [ "$left" -lt 30 ]; then say "stage $name: skipped (deadline)"; record "$name" skipped 0 "deadline"; return; fi
    [ "$left" -lt "$limit" ] && limit="$left"
  fi
  say "=== stage $name (timeout ${limit} s)"
  local start; start=$(date +%s.%N)
  STAGE="$name" timeout --kill-after=15 "$limit" bash -c "$fn"
  local rc=$?
  local secs; secs=$(python3 -c "import time; print(round(time.time() - $start, 1))")
  local status=pass note=""
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then status=timeout; note="killed after ${limit} s"
  elif [ "$rc" = 77 ]; then status=skipped; note="$(cat "$WORK/skip-note" 2>/dev/null)"
  elif [ "$rc" != 0 ]; then status=fail; note="exit $rc"; fi
  [ "$status" = fail ] || [ "$status" = timeout ] && FAILED+=("$name")
  say "=== stage $name: $status in ${secs} s $note"
  record "$name" "$status" "$secs" "$note"
}
skip_stage() { echo "$*" >"$WORK/skip-note"; say "skipped: $*"; exit 77; }
export -f skip_stage

stage_setup() {
  set -e
  if [ "$BUILD_AHA" = 1 ]; then
    command -v cargo >/dev/null || { say "no cargo here and no AHA=path: cannot build aha"; exit 1; }
    AHA_TORCH="$TORCH_MODE" bash scripts/setup.sh
  fi
  [ -x "$AHA" ] || { say "$AHA: not an executable"; exit 1; }
  "$AHA" doctor | tee "$WORK/doctor.txt"
  if [ "$DEVICE" != cpu ] && ! grep -q "cuda: available" "$WORK/doctor.txt"; then
    say "this aha binary sees no CUDA (a CPU-only libtorch?): every aha stage on $DEVICE will fail"
    exit 1
  fi
}
stage_peers() {
  set -e
  if [ "$PY_GIVEN" = 0 ]; then
    [ -x "$PY" ] || python3 -m venv "$VENV"
    if ! "$PY" -c "import torch, transformers, trl" 2>/dev/null; then
      say "installing torch 2.13.0, transformers 5.24.0, trl 1.16.0 into $VENV"
      "$PY" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
        torch==2.13.0 transformers==5.24.0 trl==1.16.0
    fi
  elif [ -n "${WHEELS:-}" ]; then
    "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$ROOT/target/gpu-bench-site" "$WHEELS"/*.whl
  fi
  "$PY" - <<'EOF'
import json, os, torch, transformers, trl
dev = os.environ["DEVICE"]
info = {"python_torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
        "cuda_available": torch.cuda.is_available()}
if dev != "cpu":
    assert torch.cuda.is_available(), "the peers' torch sees no GPU"
    info["gpu"] = torch.cuda.get_device_name(0)
print(json.dumps({"check": "peers", "pass": True, **info}))
EOF
}
stage_vllm_setup() {
  [ "$VLLM" = on ] || skip_stage "vLLM off (--vllm $VLLM)"
  set -e
  [ -x "$VPY" ] || python3 -m venv "$VLLM_VENV"
  if ! "$VPY" -c "import vllm, trl" 2>/dev/null; then
    # TRL 1.16 supports vLLM 0.22 to 0.31; pip picks the torch and transformers that vLLM pins.
    "$VPY" -m pip install --quiet --disable-pip-version-check --no-cache-dir "vllm>=0.22,<0.32" trl==1.16.0
  fi
  "$VPY" -c "import json, vllm, torch, trl, transformers; print(json.dumps({'check': 'vllm', 'pass': True, 'vllm': vllm.__version__, 'torch': torch.__version__, 'trl': trl.__version__, 'transformers': transformers.__version__}))"
}
model_dir() { if [ "$1" = tiny ]; then echo "$ROOT/tests/fixtures/models/qwen2"; else echo "$WORK/models/qwen2.5-$1"; fi; }
export -f model_dir
stage_models() {
  set -e
  local init=cpu; [ "$DEVICE" != cpu ] && init=cuda
  for m in $MODELS; do
    local dir; dir="$(model_dir "$m")"
    if [ "$m" != tiny ] && [ ! -f "$dir/model.safetensors" ]; then
      "$PY" bench/make_bench_model.py --preset "qwen2.5-$m" --device "$init" --out "$dir"
    fi
    "$PY" bench/trl_grpo_bench.py --no-eos-copy "$dir" "$WORK/models/$m-noeos"
    "$PY" bench/trl_grpo_bench.py --model "$WORK/models/$m-noeos" --prompt-tokens "$PROMPT_TOKENS" \
      --num-problems "$PROMPTS" --write-prompts "$WORK/prompts-$m.jsonl"
  done
}
parity_models() {
  local f="$ROOT/tests/fixtures/models"
  if [ "$SMALL" = 1 ]; then echo "$f/qwen2 $f/llama"
  else
    echo "$f/qwen2 $f/llama $f/qwen3 $f/qwen2-sharded $f/qwen2-bf16"
    # The first bench model, when the models stage made it (random weights at a real model's shape).
    local m; m="$(model_dir "${MODELS%% *}")"; [ -f "$m/config.json" ] && echo "$m"
  fi
}
export -f parity_models
stage_parity() {  # $1: f32 or bf16
  # shellcheck disable=SC2046
  "$PY" bench/gpu_parity.py --aha "$AHA" --device "$DEVICE" --dtype "$1" --models $(parity_models) | emit
}
stage_gen() {  # $1: model
  local m="$1" dir; dir="$(model_dir "$1")"
  local rc=0
  measure transformers gen "$dir" -- "$PY" bench/transformers_rollout_bench.py --model "$dir" --device "$DEVICE" \
    --compute-dtype bf16 --prompts "$PROMPTS" --group-size "$GROUP" --prompt-tokens "$PROMPT_TOKENS" \
    --new-tokens "$NEW" --repeats "$REPEATS" --threads "$(nproc)" || rc=1
  if [ "$VLLM" = on ]; then
    if [ -x "$VPY" ] && "$VPY" -c "import vllm" 2>/dev/null; then
      measure vllm gen "$dir" -- "$VPY" bench/vllm_rollout_bench.py --model "$dir" --prompts "$PROMPTS" \
        --group-size "$GROUP" --prompt-tokens "$PROMPT_TOKENS" --new-tokens "$NEW" --repeats "$REPEATS" || rc=1
    else say "vllm: not installed (stage vllm-setup), left out"; fi
  fi
  say "aha's generation is measured inside its GRPO steps (stage grpo-$m: generation_s, generation_tokens_per_s)"
  return $rc
}
write_aha_config() {  # model dir, prompts file, output dir, config path, model name
  local cache=$(( NEW / 2 < 32 ? NEW / 2 : 32 ))
  local pattern='q'; [ "$5" = tiny ] || pattern='^\\s*[a-m]'
  cat >"$4" <<EOF
# Written by bench/gpu_check.sh: the twin of bench/trl_grpo_bench.py's run (see bench/configs/grpo-bench-25m.toml).
[model]
path = "$1"
device = "$DEVICE"
dtype = "f32"
compute_dtype = "bf16"

[data]
source = "$2"
template = "plain"

[sampling]
group_size = $GROUP
prompts_per_step = $PROMPTS
temperature = 1.0
max_new_tokens = $NEW

[[rewards.checkers]]
name = "length"
options = { max_tokens = $NEW, cache_tokens = $cache }

[[rewards.checkers]]
name = "format"
options = { pattern = "$pattern" }

[grpo]
loss_type = "dapo"
beta = 0.0
num_iterations = 1
epsilon = 0.2
scale_rewards = "group"

[optim]
lr = 1e-5
schedule = "constant"
max_grad_norm = 1.0
micro_batch_size = $MICRO

[run]
steps = $STEPS
save_every = 0
keep_last = 1
output_dir = "$3"
EOF
}
export -f write_aha_config
stage_grpo() {  # $1: model
  local m="$1" dir noeos rc=0
  dir="$(model_dir "$m")"; noeos="$WORK/models/$m-noeos"
  # Rewards that differ within nearly every group: a "q" in the tiny model's text (as in
  # bench/compare_grpo.sh); with the padded 151,936-token tokenizer nearly every completion has
  # one, so there the completion's first letter decides (a-m: about half).
  local pattern='q'; [ "$m" = tiny ] || pattern='^\s*[a-m]'
  local cache=$(( NEW / 2 < 32 ? NEW / 2 : 32 ))
  local run="$WORK/runs/aha-grpo-$m"
  rm -rf "$run"; mkdir -p "$WORK/runs"
  write_aha_config "$noeos" "$WORK/prompts-$m.jsonl" "$run" "$WORK/grpo-$m.toml" "$m"
  if measure aha-train none "$dir" -- "$AHA" train "$WORK/grpo-$m.toml"; then
    python3 bench/gpu_check.py aha-grpo "$run/metrics.jsonl" --skip "$SKIP" \
      | python3 bench/gpu_check.py annotate --model "$dir" --kind grpo --prompts "$PROMPTS" --group-size "$GROUP" \
        --prompt-tokens "$PROMPT_TOKENS" --new-tokens "$NEW" --peak-tflops "$PEAK" \
        --measure "$WORK/measure-$STAGE-aha-train.json" --label aha | emit || rc=1
  else rc=1; fi
  local trl_args=(--model "$noeos" --device "$DEVICE" --bf16 --prompts "$PROMPTS" --group-size "$GROUP"
    --prompt-tokens "$PROMPT_TOKENS" --new-tokens "$NEW" --steps "$STEPS" --skip "$SKIP" --micro-batch "$MICRO"
    --num-problems "$PROMPTS" --cache-tokens "$cache" --reward-pattern "$pattern" --threads "$(nproc)")
  measure trl grpo "$dir" -- "$PY" bench/trl_grpo_bench.py "${trl_args[@]}" || rc=1
  if [ "$VLLM" = on ]; then
    if [ -x "$VPY" ] && "$VPY" -c "import vllm" 2>/dev/null; then
      measure trl-vllm grpo "$dir" -- "$VPY" bench/trl_grpo_bench.py "${trl_args[@]}" --use-vllm || rc=1
    else say "trl-vllm: vLLM not installed (stage vllm-setup), left out"; fi
  fi
  return $rc
}
stage_demo() {
  local extra=()
  if [ "$SMALL" = 1 ]; then
    extra=(--set run.steps=2 --eval-samples 1 --set data.eval_source=builtin:addition:digits=3,count=16,seed=20261128)
  fi
  rm -rf "$WORK/demo"
  measure demo none "$ROOT/assets/demo-model" -- "$AHA" demo --set model.device="$DEVICE" --out "$WORK/demo" "${extra[@]}" \
    && { [ -f "$WORK/demo/demo.json" ] && python3 -c "import json,sys; d=json.load(open(sys.argv[1])); d.update({'check':'demo','pass':True,'measured':json.load(open(sys.argv[2]))}); print(json.dumps(d))" "$WORK/demo/demo.json" "$WORK/measure-$STAGE-demo.json" | emit; }
}
export -f stage_setup stage_peers stage_vllm_setup stage_models stage_parity stage_gen stage_grpo stage_demo

say "bench/gpu_check.sh --device $DEVICE$([ "$SMALL" = 1 ] && echo ' --small') at $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo '+changes')"
say "log $LOG, results $JSONL, work $WORK"
say "shapes: $PROMPTS prompts x $GROUP samples x $NEW new tokens after $PROMPT_TOKENS-token prompts; GRPO $STEPS steps ($SKIP warm-up), micro-batch $MICRO, bf16 mixed precision; models: $MODELS; vLLM $VLLM"
say "MFU peak: ${PEAK:-none} TFLOP/s ($PEAK_NOTE)"
{ uname -a; nproc; free -g 2>/dev/null | head -2; command -v nvidia-smi >/dev/null && nvidia-smi; } 2>&1 | sed 's/^/  /'
python3 -c 'import json,sys,os; print(json.dumps({"type":"env","device":sys.argv[1],"small":sys.argv[2]=="1","peak_tflops":sys.argv[3] or None,"peak_note":sys.argv[4],"commit":sys.argv[5]}))' \
  "$DEVICE" "$SMALL" "$PEAK" "$PEAK_NOTE" "$(git rev-parse HEAD 2>/dev/null)" >>"$JSONL"

if [ "$SMALL" = 1 ]; then T_SETUP=1200 T_PEERS=900 T_MODELS=300 T_PARITY=300 T_GEN=300 T_GRPO=300 T_DEMO=300
else T_SETUP=1500 T_PEERS=900 T_MODELS=300 T_PARITY=240 T_GEN=240 T_GRPO=420 T_DEMO=300; fi
stage setup "$T_SETUP" stage_setup
stage peers "$T_PEERS" stage_peers
stage vllm-setup 900 stage_vllm_setup
stage models "$T_MODELS" stage_models
stage parity-f32 "$T_PARITY" "stage_parity f32"
stage parity-bf16 "$T_PARITY" "stage_parity bf16"
for m in $MODELS; do
  stage "gen-$m" "$T_GEN" "stage_gen $m"
  stage "grpo-$m" "$T_GRPO" "stage_grpo $m"
done
stage demo "$T_DEMO" stage_demo

say "total $(( $(date +%s) - T0 )) s"
python3 bench/gpu_check.py summary "$JSONL"
[ "${#FAILED[@]}" = 0 ]
