//! What the sandboxed checkers (`code`, `python`, `wasi`) share: a process-wide pool of
//! [`Sandbox`]es keyed by module and configuration, run limits from options, per-run markers, and
//! telling a guest's failure from the sandbox's own.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use aha_sandbox::{CacheDir, Job, Lang, Limits, Sandbox, SandboxConfig, Status, Verdict as RunVerdict};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Default per-run deadline of the sandboxed checkers, in milliseconds (CPython starts in ~40 ms;
/// the rest is headroom for a loaded machine).
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Default cap on a guest's linear memory, in MiB.
pub const DEFAULT_MEMORY_MB: u64 = 256;
/// Default cap on each of a guest's stdout and stderr, in bytes.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 1 << 20;

/// Which sandbox a checker runs on: a module, how many guests run at once, where compiled modules
/// are cached, and an optional fixed argv. Equal specs share one [`Sandbox`] (one engine, one
/// compiled module, one worker pool) for the whole process.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SandboxSpec {
    /// The `.wasm` module; default: `wasm/python.wasm` in aha's assets folder (`aha_sandbox::assets`).
    pub module: PathBuf,
    /// Concurrent guests; default: one per CPU.
    pub workers: Option<usize>,
    /// Where compiled modules are cached; default: `$AHA_CACHE_DIR/wasm` or the user cache.
    pub cache_dir: Option<PathBuf>,
    /// A fixed argv (WASI plug-ins); `None`: `python -S -c CODE`.
    pub argv: Option<Vec<String>>,
}

impl SandboxSpec {
    pub fn new(module: Option<PathBuf>, workers: Option<usize>, cache_dir: Option<PathBuf>) -> Self {
        SandboxSpec { module: module.unwrap_or_else(|| Lang::Python.bundled_module()), workers, cache_dir, argv: None }
    }

    /// The shared sandbox for this spec, built on first use. An error (module missing, not a WASI
    /// module, engine failure) is returned as text and retried on the next call.
    pub fn sandbox(&self) -> Result<Sandbox, String> {
        static POOL: OnceLock<Mutex<HashMap<SandboxSpec, Sandbox>>> = OnceLock::new();
        let pool = POOL.get_or_init(Default::default);
        let mut pool = pool.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(sandbox) = pool.get(self) {
            return Ok(sandbox.clone());
        }
        let mut config = SandboxConfig::new(&self.module).lang(Lang::Python);
        if let Some(workers) = self.workers {
            config = config.workers(workers);
        }
        if let Some(dir) = &self.cache_dir {
            config = config.cache(CacheDir::Dir(dir.clone()));
        }
        if let Some(argv) = &self.argv {
            config = config.argv(argv.clone());
        }
        let sandbox = Sandbox::new(config).map_err(|e| e.to_string())?;
        pool.insert(self.clone(), sandbox.clone());
        Ok(sandbox)
    }
}

/// The options every sandboxed checker (`code`, `python`, `wasi`) takes, flattened into its own
/// options: `{"timeout_ms", "memory_mb", "max_output_bytes", "workers", "cache_dir"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunOptions {
    /// Deadline of each run, in milliseconds.
    pub timeout_ms: u64,
    /// Memory cap of each run, in MiB.
    pub memory_mb: u64,
    /// Cap on each of stdout and stderr of a run, in bytes.
    pub max_output_bytes: usize,
    /// Concurrent sandbox runs; default: one per CPU.
    pub workers: Option<usize>,
    /// Where compiled modules are cached; default: `$AHA_CACHE_DIR/wasm` or the user cache.
    pub cache_dir: Option<PathBuf>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            timeout_ms: DEFAULT_TIMEOUT_MS,
            memory_mb: DEFAULT_MEMORY_MB,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            workers: None,
            cache_dir: None,
        }
    }
}

impl RunOptions {
    /// The limits of each run.
    pub fn limits(&self) -> Limits {
        Limits {
            timeout: Duration::from_millis(self.timeout_ms.max(1)),
            memory_bytes: self.memory_mb.max(1).saturating_mul(1 << 20),
            max_output_bytes: self.max_output_bytes.max(1),
            fuel: None,
        }
    }

    /// The sandbox these runs go to: `module` (default: the bundled python.wasm) with these
    /// workers and cache folder.
    pub fn sandbox_spec(&self, module: Option<PathBuf>) -> SandboxSpec {
        SandboxSpec::new(module, self.workers, self.cache_dir.clone())
    }
}

/// A job with these limits.
pub fn job(code: impl Into<String>, stdin: impl Into<Vec<u8>>, limits: Limits) -> Job {
    Job::new(code).stdin(stdin).limits(limits)
}

/// A fresh, unguessable marker (128 bits from the thread-local CSPRNG, which is seeded from the
/// operating system), e.g. `AHA-7f3a…`.
pub fn marker() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("AHA-{hex}")
}

/// The sandbox itself failed (the pool shut down, a worker panicked, fuel could not be set): not
/// something the guest did. Every other verdict, traps included, is the guest's doing.
pub fn is_host_failure(verdict: &RunVerdict) -> bool {
    const HOST_FAILURES: [&str; 3] = ["the sandbox pool shut down", "sandbox worker failed", "setting fuel"];
    verdict.status == Status::Error
        && verdict.detail.as_deref().is_some_and(|d| HOST_FAILURES.iter().any(|prefix| d.starts_with(prefix)))
}

/// The last `max` characters of `text` (on a char boundary).
pub fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// The first `max` bytes of `text` (on a char boundary).
pub fn head(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A compact account of one run for a verdict's detail.
pub fn run_detail(verdict: &RunVerdict) -> Value {
    json!({
        "status": verdict.status.as_str(),
        "exit_code": verdict.exit_code,
        "wall_ms": verdict.wall_ms,
        "sandbox_detail": verdict.detail,
        "stderr_tail": tail(&verdict.stderr, 600),
    })
}
