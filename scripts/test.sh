#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh, quick when already done) and runs every test of the
# workspace, in the release profile. Set-up skips its own build here: `cargo test` builds the
# binary too, and one build is quicker than two with slightly different feature sets.
#
# Then the crates whose tests compare floating-point results (model, rollout, GRPO and the parity
# tests) run once more the way another x86-64 CPU may compute: libtorch's kernels held to their
# portable versions, MKL's to SSE4.2 (no AVX, no FMA: MKL's choice on some CPUs) and oneDNN's to
# SSE4.1. Their tolerances must hold for rounding on any CPU, not only on the one a fixture was
# made on. (aha's own loops choose AVX2+FMA or the baseline at run time, as on any machine.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh --no-build
locked=""
[ "${CI:-}" = "true" ] && locked="--locked"
cargo test --release --workspace $locked
echo "test.sh: the numerics-sensitive crates again, with another CPU's kernels" >&2
ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2 ONEDNN_MAX_CPU_ISA=SSE41 \
  cargo test --release $locked -p aha-model -p aha-rollout -p aha-grpo -p aha-tests
