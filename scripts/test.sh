#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh, quick when already done) and runs every test of the
# workspace. Tests build in the release profile, sharing the build that set-up made.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
locked=""
[ "${CI:-}" = "true" ] && locked="--locked"
cargo test --release --workspace $locked
