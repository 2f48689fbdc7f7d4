//! Python runs from a pre-initialised interpreter: a snapshot of CPython taken after start-up.
//!
//! `python.wasm` pays CPython's start-up on every run (about 125 million wasm instructions before
//! the program's first line, plus re-importing `json`, `re`, `typing`…). Its only entry point is
//! `_start`, so it cannot be snapshotted as it is. Instead `scripts/build_python_snapshot.py` has
//! componentize-py build a WebAssembly component from `sandbox/python-snapshot/runner.py`:
//! componentize-py runs CPython's start-up and that module's imports once, at build time, with
//! wasmtime's pre-initialiser (wizer), and writes the resulting memory into the component as its
//! initial image. Every run instantiates a fresh copy of that component — its memory mapped
//! copy-on-write from the compiled image, so instantiation costs about a millisecond — and calls
//! its one export, `run(code) -> status` (see `runner.wit`).
//!
//! Every run starts pristine: a new instance has its own memory, initialised from the immutable
//! snapshot, so nothing a program does (globals, modules, monkey-patches, the random state) is
//! seen by the next one; `runner.py` reseeds `random` from the host's entropy at each run. The
//! hash seed of `str`/`bytes` is the one frozen in the snapshot (as with `PYTHONHASHSEED` fixed).
//!
//! The guest gets what the command path gives it, through WASI 0.2 instead of preview 1: its
//! stdin, capped stdout/stderr pipes, and the standard library of the same CPython (3.14) as a
//! read-only mount at [`GUEST_STDLIB`], for the modules the snapshot did not import; no other
//! files, no environment variables, no sockets. The same store limits apply (memory limiter,
//! epoch deadline, fuel).

use std::path::{Path, PathBuf};

use wasmtime::component::{Component, InstancePre, Linker, ResourceTable};
use wasmtime::Engine;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::cache::{ModuleCache, ModuleInfo};
use crate::run::Guest;

/// Where the guest sees the standard library: the folder componentize-py mounted it at when the
/// snapshot was taken (the first entry of the snapshot's `sys.path`, whose import cache already
/// knows it).
pub(crate) const GUEST_STDLIB: &str = "/python";

/// The component's file name, next to `python.wasm` in `assets/wasm/`.
pub(crate) const FILE_NAME: &str = "python-snapshot.wasm";

/// The component's one export: `run(code: string) -> s32`, the program's exit status.
pub(crate) const RUN: &str = "run";

/// The standard library that goes with a snapshot: `python-snapshot-stdlib/` beside it.
pub(crate) fn stdlib_dir(snapshot: &Path) -> PathBuf {
    snapshot.with_file_name("python-snapshot-stdlib")
}

/// A loaded snapshot, ready to instantiate.
pub(crate) struct Snapshot {
    pub pre: InstancePre<Guest<SnapshotWasi>>,
    pub stdlib: PathBuf,
    pub info: ModuleInfo,
}

/// The WASI 0.2 state of one run.
pub(crate) struct SnapshotWasi {
    pub ctx: WasiCtx,
    pub table: ResourceTable,
}

impl WasiView for SnapshotWasi {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.ctx, table: &mut self.table }
    }
}

/// Load (or compile and cache) the snapshot at `path` and link it against WASI 0.2. `Err` says
/// why it cannot be used; the caller falls back to `python.wasm`.
pub(crate) fn load(engine: &Engine, path: &Path, cache_dir: Option<PathBuf>) -> Result<Snapshot, String> {
    let stdlib = stdlib_dir(path);
    if !stdlib.join("os.py").is_file() {
        return Err(format!("its standard library {} is missing", stdlib.display()));
    }
    let (component, info): (Component, ModuleInfo) =
        ModuleCache { engine, dir: cache_dir }.load(path).map_err(|e| e.to_string())?;
    let mut linker: Linker<Guest<SnapshotWasi>> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| format!("linking WASI 0.2: {e:#}"))?;
    let pre = linker.instantiate_pre(&component).map_err(|e| format!("it does not link against WASI 0.2: {e:#}"))?;
    let run = component.get_export_index(None, RUN);
    if run.is_none() {
        return Err("it exports no `run` function: not aha's snapshot component".into());
    }
    Ok(Snapshot { pre, stdlib, info })
}
