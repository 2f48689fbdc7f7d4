#!/usr/bin/env bash
# End-to-end check of `rollout.sync_method = "nccl"` on a machine with an NVIDIA GPU: installs the
# CUDA build of vLLM into .venv-vllm-gpu (cached), starts one server on tests/fixtures/models/vllm-qwen2
# with vLLM's NCCL weight-transfer engine, and runs tests/tests/nccl_gpu.rs against it with aha built
# `--features nccl`: two syncs of random weights (probe log-probs and greedy tokens must equal aha's
# on the weights sent), then a 3-step `aha train` whose every sync goes over NCCL.
#
# NOT RUN YET: written on a machine without a GPU. Expect to adjust it on the first GPU machine
# (see docs/vllm-api-notes.md, "NCCL weight transfer", for the API facts it relies on).
#
#   scripts/test_nccl_gpu.sh [extra cargo test arguments]
#
# Environment: AHA_VLLM_GPU_VERSION (vLLM release to install; needs `nccl_unique_id_b64` support,
# checked below), AHA_NCCL_PORT (default 18201), CUDA_VISIBLE_DEVICES (the server and the trainer
# share GPU 0 unless two are given: then the server takes the second).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
VENV="${AHA_VLLM_GPU_VENV:-$ROOT/.venv-vllm-gpu}"
PORT="${AHA_NCCL_PORT:-18201}"
RUN_DIR="$ROOT/runs/nccl-gpu"
MODEL="$ROOT/tests/fixtures/models/vllm-qwen2"
mkdir -p "$RUN_DIR"
log() { echo "[test_nccl_gpu] $*" >&2; }

command -v nvidia-smi >/dev/null && nvidia-smi -L || { log "no NVIDIA GPU here: this check needs one"; exit 1; }

if [[ ! -x "$VENV/bin/vllm" ]]; then
    log "installing vLLM (CUDA build) into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install "vllm${AHA_VLLM_GPU_VERSION:+==$AHA_VLLM_GPU_VERSION}"
fi
# The torch-free rendezvous aha uses must be there (vllm/distributed/weight_transfer/nccl_common.py).
"$VENV/bin/python" - <<'PY'
import dataclasses, importlib, sys
try:
    m = importlib.import_module("vllm.distributed.weight_transfer.nccl_common")
except ImportError:
    m = importlib.import_module("vllm.distributed.weight_transfer.nccl_engine")
fields = {f.name for f in dataclasses.fields(m.NCCLWeightTransferInitInfo)}
if "nccl_unique_id_b64" not in fields:
    sys.exit(f"this vLLM has no nccl_unique_id_b64 (init fields: {sorted(fields)}): install a newer one")
print("vLLM NCCL init fields:", sorted(fields))
PY

# aha must load the NCCL the server runs; cudarc looks for `libnccl.so` on the loader path.
NCCL_SO=$("$VENV/bin/python" -c "import nvidia.nccl, os; d = os.path.join(list(nvidia.nccl.__path__)[0], 'lib'); print(os.path.join(d, 'libnccl.so.2'))")
[[ -f "$NCCL_SO" ]] || { log "no libnccl.so.2 in the vLLM environment ($NCCL_SO)"; exit 1; }
mkdir -p "$RUN_DIR/lib"
ln -sf "$NCCL_SO" "$RUN_DIR/lib/libnccl.so"
export LD_LIBRARY_PATH="$RUN_DIR/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

server_gpu=0
[[ "${CUDA_VISIBLE_DEVICES:-}" == *,* ]] && server_gpu="${CUDA_VISIBLE_DEVICES#*,}"
log "starting vLLM on port $PORT (log $RUN_DIR/server.log)"
CUDA_VISIBLE_DEVICES="$server_gpu" VLLM_SERVER_DEV_MODE=1 HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 \
setsid "$VENV/bin/vllm" serve "$MODEL" --host 127.0.0.1 --port "$PORT" \
    --dtype float32 --enforce-eager --gpu-memory-utilization 0.3 \
    --generation-config vllm --logprobs-mode processed_logprobs --served-model-name "$MODEL" \
    --weight-transfer-config '{"backend": "nccl"}' \
    >"$RUN_DIR/server.log" 2>&1 </dev/null &
server=$!
trap 'kill -- -$server 2>/dev/null || true' EXIT
for _ in $(seq 300); do
    curl -sf -o /dev/null "http://127.0.0.1:$PORT/health" && break
    kill -0 $server 2>/dev/null || { tail -30 "$RUN_DIR/server.log" >&2; exit 1; }
    sleep 1
done
curl -sf "http://127.0.0.1:$PORT/get_world_size" || { log "no /get_world_size: is VLLM_SERVER_DEV_MODE set?"; exit 1; }
echo

export AHA_VLLM_SERVERS="http://127.0.0.1:$PORT"
# NCCL_DEBUG=INFO shows the rendezvous and the transport NCCL picked, on both sides.
NCCL_DEBUG="${NCCL_DEBUG:-WARN}" cargo test --release -p aha-tests --features nccl --test nccl_gpu -- \
    --ignored --test-threads=1 --nocapture "$@"
log "passed"
