#!/usr/bin/env python3
"""Builds the sandbox's pre-initialised CPython: a WebAssembly component made by componentize-py
from sandbox/python-snapshot/runner.py, whose memory is a snapshot of the interpreter after
start-up and the imports programs use most (see sandbox/src/snapshot.rs for how it is run).

Writes, under OUT (default assets/wasm/):
  python-snapshot.wasm         the component (CPython 3.14, WASI 0.2)
  python-snapshot-stdlib/      the same CPython's standard library as plain files, mounted
                               read-only in every run for the modules the snapshot did not import
  python-snapshot.stamp        what it was built from; a rerun with the same inputs does nothing

componentize-py (pinned below) and zstandard are pip-installed into the Python running this
script. The standard library is the one componentize-py embeds (a zstd-compressed tar inside its
native library); it is found by content, checked (os.py, encodings/, traceback.py) and unpacked.

Usage: build_python_snapshot.py [--out DIR] [--force]
"""

import argparse
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

COMPONENTIZE_PY = "componentize-py==0.25.1"
ZSTANDARD = "zstandard==0.25.0"
PYTHON_MINOR = "3.14"
ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "sandbox" / "python-snapshot"


def pip_install(*specs):
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-cache-dir", *specs],
        check=True,
    )


def ensure_tools():
    try:
        import componentize_py  # noqa: F401
        import zstandard  # noqa: F401
        from importlib.metadata import version

        if version("componentize-py") == COMPONENTIZE_PY.split("==")[1]:
            return
    except ImportError:
        pass
    pip_install(COMPONENTIZE_PY, ZSTANDARD)


def stamp_of():
    digest = hashlib.sha256()
    for part in (COMPONENTIZE_PY, ZSTANDARD, Path(__file__).read_bytes()):
        digest.update(part if isinstance(part, bytes) else part.encode())
    for path in sorted(SOURCE.iterdir()):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def embedded_stdlib():
    """The standard-library tar inside componentize-py's native library."""
    import componentize_py
    import zstandard

    lib = next(Path(componentize_py.__file__).parent.glob("componentize_py*.so"), None)
    if lib is None:
        sys.exit("build_python_snapshot: componentize-py's native library not found")
    data = lib.read_bytes()
    magic, start = b"\x28\xb5\x2f\xfd", 0
    while (start := data.find(magic, start)) >= 0:
        try:
            raw = zstandard.ZstdDecompressor().decompressobj().decompress(data[start : start + (64 << 20)])
            archive = tarfile.open(fileobj=io.BytesIO(raw))
            names = set(archive.getnames())
            if {"os.py", "encodings/__init__.py", "traceback.py"} <= names:
                return archive
        except (zstandard.ZstdError, tarfile.TarError, EOFError):
            pass
        start += len(magic)
    sys.exit("build_python_snapshot: no standard library found inside componentize-py")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "assets" / "wasm")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    out = args.out
    component, stdlib, stamp_file = out / "python-snapshot.wasm", out / "python-snapshot-stdlib", out / "python-snapshot.stamp"
    stamp = stamp_of()
    if not args.force and component.is_file() and stdlib.is_dir() and stamp_file.is_file():
        if stamp_file.read_text().strip() == stamp:
            return
    ensure_tools()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".python-snapshot-") as tmp:
        tmp = Path(tmp)
        # Unpack the standard library first: a version check before the slower build.
        archive = embedded_stdlib()
        lib = tmp / "stdlib"
        archive.extractall(lib, filter="data")
        if not (lib / "os.py").is_file():
            sys.exit("build_python_snapshot: the embedded standard library has no os.py")
        cli = Path(sys.executable).parent / "componentize-py"
        built = tmp / "python-snapshot.wasm"
        subprocess.run(
            [str(cli), "--quiet", "-d", str(SOURCE / "runner.wit"), "-w", "runner", "componentize",
             "-p", str(SOURCE), "runner", "-o", str(built)],
            check=True,
            cwd=tmp,
        )
        # Into place: the component and its standard library, then the stamp that vouches for both.
        stamp_file.unlink(missing_ok=True)
        shutil.rmtree(stdlib, ignore_errors=True)
        os.replace(lib, stdlib)
        os.replace(built, component)
        stamp_file.write_text(stamp + "\n")
    print(f"build_python_snapshot: wrote {component} (CPython {PYTHON_MINOR}) and {stdlib}", file=sys.stderr)


if __name__ == "__main__":
    main()
