#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh, quick when already done) and runs every test of the
# workspace, in the release profile. Set-up skips its own build here: `cargo test` builds the
# binary too, and one build is quicker than two with slightly different feature sets.
#
# Then the crates whose tests compare floating-point results (model, rollout, GRPO and the parity
# tests) run once more the way another x86-64 CPU computes: libtorch's kernels held to their
# portable (non-vector) versions, MKL's and oneDNN's to AVX2 (no AVX-512), as on an AVX2-only
# machine. A tolerance that only holds for this machine's kernels fails here, not on a
# newcomer's machine. (aha's own loops choose AVX2+FMA or the baseline at run time anyway.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh --no-build
locked=""
[ "${CI:-}" = "true" ] && locked="--locked"
cargo test --release --workspace $locked
echo "test.sh: the numerics-sensitive crates again, with another CPU's kernels" >&2
ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 \
  cargo test --release $locked -p aha-model -p aha-rollout -p aha-grpo -p aha-tests
