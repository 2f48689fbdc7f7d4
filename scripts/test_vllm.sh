#!/usr/bin/env bash
# The vLLM backend against two real vLLM servers (CPU build), on this machine: installs vLLM into
# .venv-vllm (cached; scripts/vllm_servers.sh), starts two servers on the test model
# tests/fixtures/models/vllm-qwen2, runs tests/tests/vllm_servers.rs (ignored by a plain
# `cargo test`), stops the servers. Run it before every change to aha-rollout's remote backend.
# About 6 GB of disk for vLLM, 3 GB of memory per server, 2 minutes to start them; the tests
# themselves take 3 to 5 minutes (one restarts a server).
#   scripts/test_vllm.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
PORTS=(${AHA_VLLM_TEST_PORTS:-18101 18102})
scripts/vllm_servers.sh install
trap 'scripts/vllm_servers.sh stop "${PORTS[@]}"' EXIT
VLLM_CPU_OMP_THREADS_BIND="${VLLM_CPU_OMP_THREADS_BIND:-nobind}" \
  scripts/vllm_servers.sh start tests/fixtures/models/vllm-qwen2 "${PORTS[@]}"
urls=$(printf 'http://127.0.0.1:%s,' "${PORTS[@]}")
export AHA_VLLM_SERVERS="${urls%,}"
export AHA_VLLM_PORTS=$(IFS=,; echo "${PORTS[*]}")
# The test that kills and restarts a server runs last.
cargo test --release -p aha-tests --test vllm_servers -- --ignored --test-threads=1 --nocapture --skip killed "$@"
cargo test --release -p aha-tests --test vllm_servers -- --ignored --nocapture killed "$@"
