//! `aha-sandbox`: run untrusted, model-written programs inside WebAssembly with hard limits.
//!
//! What it does: it runs a WASI preview-1 command module — first of all `python.wasm` (CPython
//! 3.12 with its standard library embedded, fetched by `scripts/setup.sh` into `assets/wasm/`),
//! optionally `quickjs.wasm` — on a program text and stdin bytes, and returns a [`Verdict`]:
//! `ok`, `exit`, `error`, `timeout`, `memory_limit` or `output_limit`, with the exit code, the
//! captured stdout and stderr (capped), the wall time and the fuel used. The guest gets argv, its
//! stdin, and capped in-memory stdout/stderr pipes; for Python also its own standard library as a
//! read-only mount at `/stdlib` with `PYTHONPATH=/stdlib` (see below); nothing else: no host
//! files, no host environment variables, no inherited stdio, no sockets.
//!
//! Limits, all enforced by the host:
//! - a wall-clock deadline: epoch interruption stops a guest that computes, and a tokio timeout
//!   around the async instantiate + call stops a guest blocked in a host call (`time.sleep(600)`);
//! - a memory cap: a [`wasmtime::ResourceLimiter`] refuses linear-memory growth past it (CPython
//!   turns that into `MemoryError`; the verdict is `memory_limit` because the limiter refused);
//! - an output cap per stream (the guest's writes fail past it; the verdict is `output_limit`);
//! - optional fuel (wasm instruction budget) for deterministic limits.
//!
//! Start-up: the module is compiled once (Cranelift) and the compiled artefact is cached on disk
//! keyed by the wasmtime version, the engine configuration and the module's SHA-256 (see
//! [`ModuleCache`]); every run instantiates a shared [`wasmtime::InstancePre`] with copy-on-write
//! memory images, in slots of wasmtime's pooling allocator (reserved once per sandbox, twice the
//! worker count, and reused: no `mmap`/`munmap` per run, and the pages CPython touched stay
//! resident and are reset in place). For Python the standard library is unpacked once from
//! python.wasm's zip into the cache folder and mounted read-only, which spares every start-up
//! zipimport's parse of the zip directory (~210 → ~125 million instructions; `stdlib.rs`). A
//! pre-initialised (wizer-style) snapshot of CPython is *not* implemented: python.wasm exports only
//! `_start`, so each run pays CPython's own start-up (~20–30 ms of guest time).
//!
//! What it does not do: it does not score anything (that is the code reward in `aha-rewards`),
//! it does not install Python packages (only the standard library embedded in python.wasm), and
//! it gives the guest no file system beyond that read-only standard library.
//!
//! Main types: [`Sandbox`] (cheap to clone, `Send + Sync`; owns the engine, the compiled module,
//! a worker pool and the epoch ticker), [`SandboxConfig`], [`Job`] (program + stdin + [`Limits`]),
//! [`Verdict`] and [`Status`], [`Lang`], [`SandboxError`].
//!
//! ```no_run
//! use aha_sandbox::{Job, Lang, Sandbox, SandboxConfig, Status};
//! let sandbox = Sandbox::new(SandboxConfig::new(Lang::Python.bundled_module()))?;
//! let verdict = sandbox.run(Job::new("print(input()[::-1])").stdin("olleh\n"));
//! assert_eq!(verdict.status, Status::Ok);
//! assert_eq!(verdict.stdout, "hello\n");
//! # Ok::<(), aha_sandbox::SandboxError>(())
//! ```

mod cache;
mod run;
mod stdlib;
mod verdict;

pub use cache::{CacheDir, LoadSource, ModuleCache, ModuleInfo, WASMTIME_VERSION};
pub use run::{Job, Lang, Limits, Sandbox, SandboxConfig};
pub use verdict::{Status, Verdict};

use std::path::PathBuf;

/// Why a [`Sandbox`] could not be built. What a guest program does is never an error: it is a
/// [`Verdict`].
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("WASM module not found: {} (run scripts/setup.sh to fetch it, or pass --module PATH)", path.display())]
    ModuleMissing { path: PathBuf },
    #[error("{} is not a WebAssembly module: {detail}", path.display())]
    NotWasm { path: PathBuf, detail: String },
    #[error("could not compile {}: {message}", path.display())]
    Compile { path: PathBuf, message: String },
    #[error("reading {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("sandbox engine: {0}")]
    Engine(String),
}
