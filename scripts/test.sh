#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh, quick when already done) and runs every test of the
# workspace, in the release profile. Set-up skips its own build here: `cargo test` builds the
# binary too, and one build is quicker than two with slightly different feature sets.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh --no-build
locked=""
[ "${CI:-}" = "true" ] && locked="--locked"
cargo test --release --workspace $locked
