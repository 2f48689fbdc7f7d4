//! The sandbox: engine, compiled module, worker pool, and one guest run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use wasmtime::component::ResourceTable;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, PoolingAllocationConfig, Store, Trap,
    UpdateDeadline,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use crate::cache::{CacheDir, ModuleCache, ModuleInfo};
use crate::snapshot::{self, Snapshot, SnapshotWasi};
use crate::stdlib;
use crate::{SandboxError, Status, Verdict};

/// How often the epoch ticker advances the engine's epoch: the granularity of the deadline for a
/// computing guest, and how often a running guest yields to the pool's scheduler.
const TICK: Duration = Duration::from_millis(10);

/// Linear memory kept resident (and reset in place, by copying the initial image back) in a pool
/// slot between runs, instead of `madvise`: a run touches tens of MiB, which would otherwise
/// page-fault in again on every run.
///
/// Linux's `PAGEMAP_SCAN` (resetting only the dirty pages) stays off: with it, the guest's pages
/// are faulted in copy-on-write again on the next run, and with several worker threads in one
/// process every such fault flushes the other threads' TLBs (`ptep_clear_flush` IPIs under
/// `perf`): two workers on the snapshot ran slower than one.
const KEEP_RESIDENT: usize = 64 << 20;

/// The pooling instance allocator: instances, linear memories, tables and async stacks come from
/// slots reserved once and reused, instead of an `mmap` + `munmap` (and page faults) per run.
///
/// Slots: twice the worker count (at most `workers` guests exist at a time; the rest is headroom).
/// A guest is one core instance (a command module) or one component (the snapshot: a handful of
/// core instances, memories and tables inside it, as componentize-py lays it out), so the pool
/// holds [`PER_COMPONENT`] of each per slot. Each memory slot reserves 4 GiB of address space plus
/// guard pages, as the on-demand allocator does per instance (so bounds checks stay elided): none
/// of it is committed until used. The per-slot maximum is the full 32-bit range; the per-job cap is
/// the [`Limiter`]'s. Only the memories a guest used stay resident ([`KEEP_RESIDENT`] at most
/// each), since slots already used by the module are reused first.
fn pooling_config(workers: usize) -> PoolingAllocationConfig {
    let slots = u32::try_from(workers.saturating_mul(2)).unwrap_or(u32::MAX);
    let per = PER_COMPONENT;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(per.core_instances))
        .total_memories(slots.saturating_mul(per.memories))
        .total_tables(slots.saturating_mul(per.tables))
        .total_stacks(slots)
        .max_component_instance_size(1 << 20)
        .max_core_instances_per_component(per.core_instances)
        .max_memories_per_component(per.memories)
        .max_tables_per_component(per.tables)
        .max_memory_size(4 << 30)
        .max_core_instance_size(4 << 20)
        .table_elements(1 << 16)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .pagemap_scan(wasmtime::Enabled::No);
    pool
}

/// What one guest may hold when it is a component: room for componentize-py's layout (CPython,
/// its libc and adapters as separate core instances) with headroom.
struct PerComponent {
    core_instances: u32,
    memories: u32,
    tables: u32,
}
const PER_COMPONENT: PerComponent = PerComponent { core_instances: 32, memories: 4, tables: 16 };

/// The interpreter a module is and how it takes a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// CPython: by default the pre-initialised CPython 3.14 component (`python-snapshot.wasm`, see
    /// [`SandboxConfig::snapshot`]), else CPython 3.12 (`python.wasm`) run as `python -S -c CODE`.
    Python,
    /// QuickJS-ng (`quickjs.wasm`), run as `qjs --std -e CODE` (`std` and `os` are globals).
    Js,
}

impl Lang {
    /// Parse `python` / `py` / `js` / `javascript`.
    pub fn parse(name: &str) -> Option<Lang> {
        match name.to_ascii_lowercase().as_str() {
            "python" | "py" | "python3" => Some(Lang::Python),
            "js" | "javascript" | "quickjs" => Some(Lang::Js),
            _ => None,
        }
    }

    /// The module's file name under `assets/wasm/`.
    pub fn module_file_name(self) -> &'static str {
        match self {
            Lang::Python => "python.wasm",
            Lang::Js => "quickjs.wasm",
        }
    }

    /// `wasm/<module>` in aha's assets folder (found at run time: [`crate::assets`]), where
    /// `scripts/setup.sh` puts it.
    pub fn bundled_module(self) -> PathBuf {
        crate::assets::dir().join("wasm").join(self.module_file_name())
    }

    /// The guest's argv for a program text.
    pub fn argv(self, code: &str) -> Vec<String> {
        let head: &[&str] = match self {
            Lang::Python => &["python", "-S", "-c"],
            Lang::Js => &["qjs", "--std", "-e"],
        };
        head.iter().map(|s| s.to_string()).chain(std::iter::once(code.to_owned())).collect()
    }
}

/// Per-run limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock deadline, from the start of instantiation (time spent queued for a worker does
    /// not count).
    pub timeout: Duration,
    /// Cap on the guest's linear memory, in bytes.
    pub memory_bytes: u64,
    /// Cap on each of stdout and stderr, in bytes.
    pub max_output_bytes: usize,
    /// Wasm fuel budget (about one unit per instruction; a trivial program from the snapshot takes
    /// about 0.5 million, while python.wasm's start-up alone takes about 125 million, 210 million
    /// when it imports from its zip). `None`: unlimited. Needs
    /// [`SandboxConfig::fuel_metering`]; ignored without it.
    pub fuel: Option<u64>,
}

impl Limits {
    /// The fuel a store is given: the budget, or as good as unlimited.
    fn fuel_budget(&self) -> u64 {
        self.fuel.unwrap_or(u64::MAX)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits { timeout: Duration::from_secs(10), memory_bytes: 512 << 20, max_output_bytes: 1 << 20, fuel: None }
    }
}

/// One program to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub code: String,
    pub stdin: Vec<u8>,
    pub limits: Limits,
}

impl Job {
    pub fn new(code: impl Into<String>) -> Job {
        Job { code: code.into(), stdin: Vec::new(), limits: Limits::default() }
    }
    pub fn stdin(mut self, stdin: impl Into<Vec<u8>>) -> Job {
        self.stdin = stdin.into();
        self
    }
    pub fn limits(mut self, limits: Limits) -> Job {
        self.limits = limits;
        self
    }
    pub fn timeout(mut self, timeout: Duration) -> Job {
        self.limits.timeout = timeout;
        self
    }
    pub fn memory_bytes(mut self, bytes: u64) -> Job {
        self.limits.memory_bytes = bytes;
        self
    }
    pub fn max_output_bytes(mut self, bytes: usize) -> Job {
        self.limits.max_output_bytes = bytes;
        self
    }
    pub fn fuel(mut self, fuel: u64) -> Job {
        self.limits.fuel = Some(fuel);
        self
    }
}

/// How to build a [`Sandbox`].
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The `.wasm` file (a WASI preview-1 command module).
    pub module: PathBuf,
    pub lang: Lang,
    /// Guests that run at the same time (worker threads); more runs queue.
    pub workers: usize,
    pub cache: CacheDir,
    /// Count fuel (enables [`Limits::fuel`] and [`Verdict::fuel_used`]). Off by default: it costs
    /// up to about 20% of throughput.
    pub fuel_metering: bool,
    /// A fixed guest argv for every run, replacing [`Lang::argv`]: for a module that is not an
    /// interpreter taking a program text (a WASI plug-in), or an interpreter started another way.
    /// When set, [`Job::code`] is ignored and the guest sees exactly these arguments. `None`: the
    /// language's argv with the job's code.
    pub argv: Option<Vec<String>>,
    /// Python: unpack the standard library from python.wasm's zip into the cache folder once and
    /// mount it read-only at `/stdlib` with `PYTHONPATH=/stdlib` in every run (on by default: a
    /// trivial run costs ~125 instead of ~210 million instructions). Off: the guest gets no
    /// preopened directory and an empty environment, and imports from the zip. Needs a cache
    /// folder. (The snapshot brings its own standard library; this applies to `python.wasm`.)
    pub unpacked_stdlib: bool,
    /// Python: run programs from this pre-initialised interpreter (`python-snapshot.wasm`, built by
    /// `scripts/setup.sh`; see `snapshot.rs`) instead of starting CPython from [`Self::module`] each
    /// time. Default: `python-snapshot.wasm` next to the module. Not used for another language or
    /// with a fixed [`Self::argv`]. If it is missing or cannot be loaded, the sandbox warns once
    /// and runs [`Self::module`]. `None`: always run the module.
    pub snapshot: Option<PathBuf>,
}

impl SandboxConfig {
    /// Python at `module`, one worker per CPU, the default cache, fuel metering off.
    pub fn new(module: impl Into<PathBuf>) -> SandboxConfig {
        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let module = module.into();
        SandboxConfig {
            snapshot: Some(module.with_file_name(snapshot::FILE_NAME)),
            module,
            lang: Lang::Python,
            workers,
            cache: CacheDir::Default,
            fuel_metering: false,
            argv: None,
            unpacked_stdlib: true,
        }
    }
    pub fn lang(mut self, lang: Lang) -> Self {
        self.lang = lang;
        self
    }
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }
    pub fn cache(mut self, cache: CacheDir) -> Self {
        self.cache = cache;
        self
    }
    pub fn fuel_metering(mut self, on: bool) -> Self {
        self.fuel_metering = on;
        self
    }
    pub fn unpacked_stdlib(mut self, on: bool) -> Self {
        self.unpacked_stdlib = on;
        self
    }
    /// Where the pre-initialised Python is, or `None` to start CPython from the module on every
    /// run (see [`SandboxConfig::snapshot`]).
    pub fn snapshot(mut self, snapshot: Option<PathBuf>) -> Self {
        self.snapshot = snapshot;
        self
    }
    /// Run every job with exactly this argv (see [`SandboxConfig::argv`]).
    pub fn argv(mut self, argv: Vec<String>) -> Self {
        self.argv = Some(argv);
        self
    }
}

/// Runs programs in a WASM interpreter module under limits. Clone it freely: clones share the
/// engine, the compiled module and the worker pool. `Send + Sync`.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    info: ModuleInfo,
    workers: usize,
    runtime: Option<tokio::runtime::Runtime>,
    stop_ticker: Arc<AtomicBool>,
}

/// What a run task needs (never holds the runtime, so a task can't be the one to drop it).
struct Shared {
    engine: Engine,
    interpreter: Interpreter,
    lang: Lang,
    argv: Option<Vec<String>>,
    fuel_metering: bool,
    permits: Semaphore,
    /// Python's standard library unpacked on the host, mounted read-only (see `stdlib.rs`).
    stdlib: OnceLock<PathBuf>,
    /// Set once mounting `stdlib` failed (warned about once).
    stdlib_missing: AtomicBool,
}

/// How a guest is started.
enum Interpreter {
    /// A WASI preview-1 command module, run from `_start` with the program in its argv.
    Command(InstancePre<Guest<WasiP1Ctx>>),
    /// The pre-initialised CPython component: its `run(code)` export.
    Snapshot(Snapshot),
}

/// A store's data: the guest's WASI state (preview 1 for a command module, 0.2 for the snapshot)
/// and its limits.
pub(crate) struct Guest<W> {
    pub wasi: W,
    limiter: Limiter,
}

impl wasmtime_wasi::WasiView for Guest<SnapshotWasi> {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        self.wasi.ctx()
    }
}

/// Caps linear memory (and tables) and remembers whether it refused a growth.
struct Limiter {
    memory_cap: usize,
    refused_memory: Option<usize>,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_cap || maximum.is_some_and(|m| desired > m) {
            self.refused_memory = Some(self.refused_memory.unwrap_or(0).max(desired));
            return Ok(false);
        }
        Ok(true)
    }
    fn table_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000 && maximum.is_none_or(|m| desired <= m))
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
        if let Some(runtime) = self.runtime.take() {
            // Safe to call from any context, including inside another tokio runtime.
            runtime.shutdown_background();
        }
    }
}

impl Sandbox {
    /// Build the engine, load (or compile and cache) the snapshot or the module, link WASI, start
    /// the pool.
    pub fn new(config: SandboxConfig) -> Result<Sandbox, SandboxError> {
        let engine_error = |e: wasmtime::Error| SandboxError::Engine(format!("{e:#}"));
        let workers = config.workers.max(1);
        let mut wasm_config = Config::new();
        wasm_config
            .epoch_interruption(true)
            .consume_fuel(config.fuel_metering)
            .max_wasm_stack(8 << 20)
            .async_stack_size(10 << 20)
            .memory_init_cow(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(workers)));
        let engine = Engine::new(&wasm_config).map_err(engine_error)?;
        let cache_dir = config.cache.resolve();
        let snapshot = match (&config.snapshot, config.lang, &config.argv) {
            (Some(path), Lang::Python, None) => match snapshot::load(&engine, path, cache_dir.clone()) {
                Ok(snapshot) => Some(snapshot),
                Err(reason) => {
                    tracing::warn!(
                        "no pre-initialised Python ({}: {reason}); every run starts CPython from {} (slower)",
                        path.display(),
                        config.module.display()
                    );
                    None
                }
            },
            _ => None,
        };
        let (interpreter, info) = match snapshot {
            Some(snapshot) => {
                let info = snapshot.info.clone();
                (Interpreter::Snapshot(snapshot), info)
            }
            None => {
                let (pre, info) = load_command(&engine, &config.module, cache_dir.clone())?;
                (Interpreter::Command(pre), info)
            }
        };
        let is_command = matches!(interpreter, Interpreter::Command(_));

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("aha-sandbox")
            .enable_time()
            .build()
            .map_err(|e| SandboxError::Engine(format!("starting the worker pool: {e}")))?;

        let stop_ticker = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop_ticker.clone();
            std::thread::Builder::new()
                .name("aha-sandbox-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| SandboxError::Engine(format!("starting the epoch ticker: {e}")))?;
        }

        let shared = Arc::new(Shared {
            engine,
            interpreter,
            lang: config.lang,
            argv: config.argv.clone(),
            fuel_metering: config.fuel_metering,
            permits: Semaphore::new(workers),
            stdlib: OnceLock::new(),
            stdlib_missing: AtomicBool::new(false),
        });
        let mut sandbox =
            Sandbox { inner: Arc::new(Inner { shared, info, workers, runtime: Some(runtime), stop_ticker }) };
        if let (true, Lang::Python, None, true, Some(cache_dir)) =
            (is_command, config.lang, &config.argv, config.unpacked_stdlib, cache_dir)
        {
            match stdlib::prepare(&sandbox, &cache_dir, &sandbox.inner.info.sha256) {
                Ok(dir) => {
                    let _ = sandbox.inner.shared.stdlib.set(dir.clone());
                    // Unique: run tasks hold `Shared`, never `Inner`.
                    if let Some(inner) = Arc::get_mut(&mut sandbox.inner) {
                        inner.info.stdlib_dir = Some(dir);
                    }
                }
                Err(reason) => tracing::warn!("runs will import from python.wasm's zip (slower): {reason}"),
            }
        }
        Ok(sandbox)
    }

    /// Where the module (or the snapshot) came from and how long loading it took.
    pub fn module_info(&self) -> &ModuleInfo {
        &self.inner.info
    }

    /// Whether runs start from the pre-initialised Python (else from the module's `_start`).
    pub fn uses_snapshot(&self) -> bool {
        matches!(self.inner.shared.interpreter, Interpreter::Snapshot(_))
    }

    pub fn lang(&self) -> Lang {
        self.inner.shared.lang
    }

    /// How many guests run at the same time.
    pub fn workers(&self) -> usize {
        self.inner.workers
    }

    fn spawn(&self, job: Job) -> tokio::task::JoinHandle<Verdict> {
        let shared = self.inner.shared.clone();
        let runtime = self.inner.runtime.as_ref().expect("the runtime lives as long as the sandbox");
        runtime.spawn(async move {
            let _permit = shared.permits.acquire().await.expect("the semaphore is never closed");
            execute(&shared, job).await
        })
    }

    /// Run one program on the pool and wait for its verdict (blocks the calling thread; may be
    /// called from many threads at once, and from inside an async context).
    pub fn run(&self, job: Job) -> Verdict {
        self.run_many(vec![job]).pop().expect("one job gives one verdict")
    }

    /// Run many programs concurrently (at most `workers` at a time); verdicts in job order.
    pub fn run_many(&self, jobs: Vec<Job>) -> Vec<Verdict> {
        let (tx, rx) = mpsc::channel();
        let n = jobs.len();
        for (i, job) in jobs.into_iter().enumerate() {
            let handle = self.spawn(job);
            let tx = tx.clone();
            self.inner.runtime.as_ref().expect("runtime").spawn(async move {
                let _ = tx.send((i, join(handle).await));
            });
        }
        drop(tx);
        let mut out: Vec<Option<Verdict>> = vec![None; n];
        for (i, verdict) in rx {
            out[i] = Some(verdict);
        }
        out.into_iter().map(|v| v.unwrap_or_else(|| failed("the sandbox pool shut down".into()))).collect()
    }

    /// Run one program on the pool; the future can be awaited on any executor.
    pub async fn run_async(&self, job: Job) -> Verdict {
        join(self.spawn(job)).await
    }
}

/// Load (or compile and cache) a WASI preview-1 command module and link it.
fn load_command(
    engine: &Engine,
    path: &Path,
    cache_dir: Option<PathBuf>,
) -> Result<(InstancePre<Guest<WasiP1Ctx>>, ModuleInfo), SandboxError> {
    let (module, info) = ModuleCache { engine, dir: cache_dir }.load::<wasmtime::Module>(path)?;
    let mut linker: Linker<Guest<WasiP1Ctx>> = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |guest: &mut Guest<WasiP1Ctx>| &mut guest.wasi)
        .map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
    let not_command = |message: String| SandboxError::Compile { path: path.to_owned(), message };
    let pre = linker
        .instantiate_pre(&module)
        .map_err(|e| not_command(format!("it is not a WASI preview-1 command module: {e:#}")))?;
    if module.get_export("_start").is_none() {
        return Err(not_command("it exports no `_start`: not a WASI command module".into()));
    }
    Ok((pre, info))
}

async fn join(handle: tokio::task::JoinHandle<Verdict>) -> Verdict {
    handle.await.unwrap_or_else(|e| failed(format!("sandbox worker failed: {e}")))
}

fn failed(detail: String) -> Verdict {
    Verdict {
        status: Status::Error,
        exit_code: None,
        stdout: String::new(),
        stderr: String::new(),
        wall_ms: 0,
        fuel_used: None,
        detail: Some(detail),
    }
}

/// How the guest's call ended, before limits are taken into account.
enum Outcome {
    Exited(i32),
    Deadline,
    OutOfFuel,
    Trapped(String),
}

async fn execute(shared: &Shared, job: Job) -> Verdict {
    let limits = job.limits;
    let start = Instant::now();
    // One byte over the cap: a pipe holding more than the cap means the guest hit it.
    let stdout = MemoryOutputPipe::new(limits.max_output_bytes.saturating_add(1));
    let stderr = MemoryOutputPipe::new(limits.max_output_bytes.saturating_add(1));
    let mut wasi = WasiCtxBuilder::new();
    wasi.stdin(MemoryInputPipe::new(job.stdin))
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    let (outcome, usage) = match &shared.interpreter {
        Interpreter::Command(pre) => {
            let argv = match &shared.argv {
                Some(argv) => argv.clone(),
                None => shared.lang.argv(&job.code),
            };
            wasi.args(&argv);
            if let Some(dir) = shared.stdlib.get() {
                if mount_read_only(shared, &mut wasi, dir, stdlib::GUEST_DIR) {
                    wasi.env("PYTHONPATH", stdlib::GUEST_DIR);
                }
            }
            let mut store = match new_store(shared, &limits, start, wasi.build_p1()) {
                Ok(store) => store,
                Err(detail) => return failed(detail),
            };
            let call = async {
                let instance = pre.instantiate_async(&mut store).await?;
                let main = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
                main.call_async(&mut store, ()).await.map(|()| 0)
            };
            let outcome = Outcome::of(tokio::time::timeout(limits.timeout, call).await);
            (outcome, Usage::of(store, shared, &limits))
        }
        Interpreter::Snapshot(snapshot) => {
            mount_read_only(shared, &mut wasi, &snapshot.stdlib, snapshot::GUEST_STDLIB);
            let state = SnapshotWasi { ctx: wasi.build(), table: ResourceTable::new() };
            let mut store = match new_store(shared, &limits, start, state) {
                Ok(store) => store,
                Err(detail) => return failed(detail),
            };
            let code = job.code.as_str();
            let call = async {
                let instance = snapshot.pre.instantiate_async(&mut store).await?;
                let run = instance.get_typed_func::<(&str,), (i32,)>(&mut store, snapshot::RUN)?;
                run.call_async(&mut store, (code,)).await.map(|(status,)| status)
            };
            let outcome = Outcome::of(tokio::time::timeout(limits.timeout, call).await);
            (outcome, Usage::of(store, shared, &limits))
        }
    };
    let wall_ms = start.elapsed().as_millis() as u64;
    let Usage { fuel_used, refused_memory } = usage;
    let fuel_budget = limits.fuel_budget();

    let cap = limits.max_output_bytes;
    let (out, err) = (stdout.contents(), stderr.contents());
    let over = |b: &[u8]| b.len() > cap;
    let text = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(cap)]).into_owned();
    let exit_code = match outcome {
        Outcome::Exited(code) => Some(code),
        _ => None,
    };
    let (status, detail) = if over(&out) || over(&err) {
        let which = if over(&out) { "stdout" } else { "stderr" };
        (Status::OutputLimit, Some(format!("{which} exceeded the output cap of {cap} bytes")))
    } else if refused_memory.is_some() && exit_code != Some(0) {
        let asked = refused_memory.unwrap_or(0);
        (
            Status::MemoryLimit,
            Some(format!(
                "linear memory growth to {} MiB refused by the cap of {} MiB",
                asked >> 20,
                limits.memory_bytes >> 20
            )),
        )
    } else {
        match outcome {
            Outcome::Exited(0) => (Status::Ok, None),
            Outcome::Exited(_) => (Status::Exit, None),
            Outcome::Deadline => {
                (Status::Timeout, Some(format!("deadline of {} ms passed", limits.timeout.as_millis())))
            }
            Outcome::OutOfFuel => (Status::Timeout, Some(format!("fuel budget of {fuel_budget} ran out"))),
            Outcome::Trapped(message) => (Status::Error, Some(message)),
        }
    };
    tracing::debug!(%status, wall_ms, ?fuel_used, "sandbox run finished");
    Verdict { status, exit_code, stdout: text(&out), stderr: text(&err), wall_ms, fuel_used, detail }
}

/// Mount a host folder read-only for the guest. Reads of a local folder block briefly; doing them
/// on the worker thread rather than tokio's blocking pool is what makes the mount pay (set before
/// the mount is added). `false` (warned about once) when the folder is gone: Python then imports
/// from what it has without it.
fn mount_read_only(shared: &Shared, wasi: &mut WasiCtxBuilder, dir: &Path, guest_dir: &str) -> bool {
    wasi.allow_blocking_current_thread(true);
    match wasi.preopened_dir(dir, guest_dir, FsPerms::ReadOnly) {
        Ok(_) => true,
        Err(e) => {
            if !shared.stdlib_missing.swap(true, Ordering::Relaxed) {
                tracing::warn!("standard library {} unusable ({e:#}); runs go on without it", dir.display());
            }
            false
        }
    }
}

/// A store for one run: the memory cap, the fuel budget and the wall-clock deadline.
fn new_store<W>(shared: &Shared, limits: &Limits, start: Instant, wasi: W) -> Result<Store<Guest<W>>, String> {
    let memory_cap = usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX);
    let mut store = Store::new(&shared.engine, Guest { wasi, limiter: Limiter { memory_cap, refused_memory: None } });
    store.limiter(|guest| &mut guest.limiter);
    if shared.fuel_metering {
        store.set_fuel(limits.fuel_budget()).map_err(|e| format!("setting fuel: {e:#}"))?;
    }
    let deadline = start + limits.timeout;
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if Instant::now() >= deadline {
            Ok(UpdateDeadline::Interrupt)
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
    Ok(store)
}

/// What a finished run used, read from its store.
struct Usage {
    fuel_used: Option<u64>,
    refused_memory: Option<usize>,
}

impl Usage {
    fn of<W>(store: Store<Guest<W>>, shared: &Shared, limits: &Limits) -> Usage {
        let budget = limits.fuel_budget();
        let fuel_used = if shared.fuel_metering { store.get_fuel().ok().map(|left| budget - left) } else { None };
        Usage { fuel_used, refused_memory: store.data().limiter.refused_memory }
    }
}

impl Outcome {
    /// The guest's exit status, its trap, or the tokio timeout around the call. The tokio timeout
    /// also ends a guest blocked in a host call (sleep, poll), which epochs cannot interrupt;
    /// dropping the call future unwinds the guest's fiber.
    fn of(result: Result<wasmtime::Result<i32>, tokio::time::error::Elapsed>) -> Outcome {
        match result {
            Err(_) => Outcome::Deadline,
            Ok(Ok(status)) => Outcome::Exited(status),
            Ok(Err(e)) => {
                if let Some(exit) = e.downcast_ref::<I32Exit>() {
                    Outcome::Exited(exit.0)
                } else {
                    match e.downcast_ref::<Trap>() {
                        Some(Trap::Interrupt) => Outcome::Deadline,
                        Some(Trap::OutOfFuel) => Outcome::OutOfFuel,
                        _ => Outcome::Trapped(format!("{e:#}")),
                    }
                }
            }
        }
    }
}
