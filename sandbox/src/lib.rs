//! `aha-sandbox`: run untrusted, model-written programs inside WebAssembly with hard limits.
//!
//! What it does: it runs a program text with stdin bytes in an interpreter compiled to WASM and
//! returns a [`Verdict`]: `ok`, `exit`, `error`, `timeout`, `memory_limit` or `output_limit`, with
//! the exit code, the captured stdout and stderr (capped), the wall time and the fuel used. Python
//! runs, by default, start from a pre-initialised CPython 3.14 (`python-snapshot.wasm`, a
//! WebAssembly component built by `scripts/setup.sh`; see `snapshot.rs`): CPython's start-up and
//! the common imports were done once, at build time, and every run begins from a fresh
//! copy-on-write copy of that memory, so nothing one program does is seen by the next. Without the
//! snapshot (missing or unusable: a warning; or [`SandboxConfig::snapshot`]`(None)`), a run starts
//! a WASI preview-1 command module from `_start` — `python.wasm` (CPython 3.12 with its standard
//! library embedded, fetched by `scripts/setup.sh` into `assets/wasm/`), `quickjs.wasm`, or a
//! plug-in — with the program in its argv. Either way the guest gets its stdin, capped in-memory
//! stdout/stderr pipes and, for Python, its own standard library as a read-only mount (`/python`
//! for the snapshot; `/stdlib` with `PYTHONPATH=/stdlib` for python.wasm, see below); nothing
//! else: no host files, no host environment variables, no inherited stdio, no sockets.
//!
//! Limits, all enforced by the host, the same on both paths:
//! - a wall-clock deadline: epoch interruption stops a guest that computes, and a tokio timeout
//!   around the async instantiate + call stops a guest blocked in a host call (`time.sleep(600)`);
//! - a memory cap: a [`wasmtime::ResourceLimiter`] refuses linear-memory growth past it (CPython
//!   turns that into `MemoryError`; the verdict is `memory_limit` because the limiter refused);
//! - an output cap per stream (the guest's writes fail past it; the verdict is `output_limit`);
//! - optional fuel (wasm instruction budget) for deterministic limits.
//!
//! Start-up: a module or component is compiled once (Cranelift) and the compiled artefact is
//! cached on disk keyed by the wasmtime version, the engine configuration and the file's SHA-256
//! (see [`ModuleCache`]); every run instantiates a shared pre-linked instance with copy-on-write
//! memory images, in slots of wasmtime's pooling allocator (reserved once per sandbox, twice the
//! worker count, and reused: no `mmap`/`munmap` per run, and the pages a guest touched stay
//! resident and are reset in place). From the snapshot a trivial run is a couple of milliseconds.
//! For python.wasm the standard library is unpacked once from its zip into the cache folder and
//! mounted read-only, which spares every start-up zipimport's parse of the zip directory (~210 →
//! ~125 million instructions; `stdlib.rs`); each run still pays CPython's start-up.
//!
//! What it does not do: it does not score anything (that is the code reward in `aha-rewards`),
//! it does not install Python packages (only the standard library), and it gives the guest no
//! file system beyond that read-only standard library.
//!
//! Main types: [`Sandbox`] (cheap to clone, `Send + Sync`; owns the engine, the compiled module,
//! a worker pool and the epoch ticker), [`SandboxConfig`], [`Job`] (program + stdin + [`Limits`]),
//! [`Verdict`] and [`Status`], [`Lang`], [`SandboxError`]; [`assets`] finds aha's run-time assets
//! (the bundled interpreters among them) when the program runs.
//!
//! ```no_run
//! use aha_sandbox::{Job, Lang, Sandbox, SandboxConfig, Status};
//! let sandbox = Sandbox::new(SandboxConfig::new(Lang::Python.bundled_module()))?;
//! let verdict = sandbox.run(Job::new("print(input()[::-1])").stdin("olleh\n"));
//! assert_eq!(verdict.status, Status::Ok);
//! assert_eq!(verdict.stdout, "hello\n");
//! # Ok::<(), aha_sandbox::SandboxError>(())
//! ```

pub mod assets;
mod cache;
mod run;
mod snapshot;
mod stdlib;
mod verdict;

pub use cache::{CacheDir, Compiled, LoadSource, ModuleCache, ModuleInfo, WASMTIME_VERSION};
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
