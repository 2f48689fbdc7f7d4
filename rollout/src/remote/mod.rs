//! Generation on vLLM or SGLang servers: the [`Backend`] for runs that outgrow one machine.
//!
//! [`RemoteBackend`] sends each group (one prompt, `n` completions, one seed) to the server with
//! the fewest requests in flight, over pooled HTTP connections on a small tokio runtime of its
//! own: the model thread only submits and collects, it never waits on the network. A group whose
//! server errors, times out, drops the connection or answers something malformed is sent again
//! to another server (with backoff); it is returned once, whatever happened on the way. A server
//! that keeps failing is set aside for a while ([`servers`]); the run stops with one error only
//! when a group has been tried `attempts_per_group` times.
//!
//! The servers hold their own copy of the policy, so the trainer hands them every update through
//! [`WeightSync`]: it writes the weights as a Hugging Face folder the servers can read, the
//! backend has each server load it (vLLM's dev-mode `reload_weights`, SGLang's
//! `update_weights_from_disk`) — or, with `rollout.sync_method = "nccl"`, broadcasts them from
//! the trainer's GPU into vLLM's ([`nccl`]) — and then checks that it did: a fixed token sequence
//! is scored on the server and compared with the trainer's own log-probs ([`probe`]). A server that fails a
//! request may have restarted on its original weights, so it loads and passes the check again
//! before its next group; one that fails the check stops the run, because training on another
//! policy's samples must never happen silently.
//!
//! With tools on, a completion that calls one stops there on the server, aha runs the call in its
//! sandbox and the completion goes on in a new request ([`tool_calls`]).

pub mod nccl;
pub mod probe;
pub mod protocol;
pub mod servers;
pub mod tool_calls;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use serde_json::{json, Value};

use aha_model::Tokenizer;

use crate::{
    Backend, Completion, GenerationRequest, GroupOutput, RequestId, RolloutError, SamplingParams, ToolExecutor,
};
use nccl::{Broadcaster, Group, SyncMethod, WeightsInMemory};
use protocol::{Generation, ServerKind};
use servers::{Released, Servers, SetAsideRules};

/// Where the servers are and how patient to be with them.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteConfig {
    pub kind: ServerKind,
    /// Base URLs, e.g. `http://10.0.0.5:8000`.
    pub servers: Vec<String>,
    /// The longest one generation request may take (a whole group).
    pub request_timeout: Duration,
    /// How many times a group is sent before the run gives up on it.
    pub attempts_per_group: usize,
    pub set_aside: SetAsideRules,
    /// Stop strings, passed to the servers.
    pub stop_strings: Vec<String>,
    /// The largest |server - trainer| log-prob the weight check accepts.
    pub max_logprob_diff: f64,
    /// How the servers get new weights: [`WeightSync::load_weights`] (disk) or
    /// [`WeightSync::send_weights`] (NCCL, vLLM only).
    pub sync_method: SyncMethod,
}

impl RemoteConfig {
    pub fn new(kind: ServerKind, servers: Vec<String>) -> Self {
        Self {
            kind,
            attempts_per_group: 2 * servers.len() + 3,
            servers,
            request_timeout: Duration::from_secs(600),
            set_aside: SetAsideRules {
                failures_to_set_aside: 3,
                first_set_aside: Duration::from_secs(5),
                max_set_aside: Duration::from_secs(60),
            },
            stop_strings: Vec::new(),
            max_logprob_diff: 1e-3,
            sync_method: SyncMethod::Disk,
        }
    }
}

/// Weights the servers should serve, and what the check expects of them.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightsOnDisk {
    /// A Hugging Face model folder every server can read at this path.
    pub dir: PathBuf,
    /// The probe sequence and the trainer's log-probs of its tokens 1.. at temperature 1.
    pub probe_ids: Vec<u32>,
    pub probe_logprobs: Vec<f32>,
}

/// What one weight sync took and found.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SyncReport {
    /// Time to have every server load the weights.
    pub load_seconds: f64,
    /// Time to check every server.
    pub check_seconds: f64,
    /// The largest |server - trainer| probe log-prob over the servers that were checked.
    pub max_abs_logprob_diff: f64,
    /// Servers that could not be reached, with why; they load the weights and are checked before
    /// their next group.
    pub unreachable: Vec<String>,
}

/// A backend whose servers hold their own copy of the weights.
pub trait WeightSync {
    /// Has every server load `weights` and checks each one that answered. Fails when none
    /// could load them, or when one serves other weights than the check expects.
    fn load_weights(&mut self, weights: WeightsOnDisk) -> Result<SyncReport, RolloutError>;

    /// Broadcasts `weights` to every server over NCCL and checks each (`rollout.sync_method =
    /// "nccl"`). Any failure stops the run: a group whose transfer failed cannot carry the next
    /// one, and a server may hold half of the new weights.
    fn send_weights(&mut self, weights: WeightsInMemory) -> Result<SyncReport, RolloutError>;

    /// Checks every server against the last weights loaded, without loading anything.
    fn check_weights(&mut self) -> Result<SyncReport, RolloutError>;
}

/// The weights the servers should serve, as the last sync handed them over.
#[derive(Debug, Clone, PartialEq)]
enum Served {
    Disk(WeightsOnDisk),
    Nccl { version: u64, probe_ids: Vec<u32>, probe_logprobs: Vec<f32> },
}

impl Served {
    fn probe(&self) -> (&[u32], &[f32]) {
        match self {
            Served::Disk(w) => (&w.probe_ids, &w.probe_logprobs),
            Served::Nccl { probe_ids, probe_logprobs, .. } => (probe_ids, probe_logprobs),
        }
    }

    /// Which weights, and what to look at when a server does not serve them.
    fn describe(&self) -> String {
        match self {
            Served::Disk(w) => format!(
                "the weights in {}; is sync_dir on a filesystem it shares, and did it load them?",
                w.dir.display()
            ),
            Served::Nccl { version, .. } => format!(
                "version {version} sent over NCCL; a server restarted since that sync has lost them (and its NCCL \
                 group): restart the run, it resumes from its last checkpoint"
            ),
        }
    }
}

/// The trainer's side of the NCCL groups, one per server once it has joined.
struct NcclSide {
    broadcaster: Box<dyn Broadcaster>,
    groups: Vec<Option<Group>>,
}

/// Why one try of a group did not work out: worth trying elsewhere, or not.
enum Failure {
    Retry(String),
    Fatal(RolloutError),
}

struct Shared {
    kind: ServerKind,
    config: RemoteConfig,
    params: SamplingParams,
    client: reqwest::Client,
    servers: Mutex<Servers>,
    /// vLLM's served model name of each server, asked once.
    models: Mutex<Vec<Option<String>>>,
    weights: Mutex<Option<Served>>,
    /// Held by whoever brings a stale server up to date, so that it loads the weights once.
    refreshing: Vec<tokio::sync::Mutex<()>>,
    tools: Option<tool_calls::RemoteTools>,
}

/// Generation on remote servers; see the module documentation.
pub struct RemoteBackend {
    runtime: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    sender: Sender<(RequestId, Result<Vec<Completion>, RolloutError>)>,
    finished: Receiver<(RequestId, Result<Vec<Completion>, RolloutError>)>,
    in_flight: usize,
    next_id: RequestId,
    nccl: Option<NcclSide>,
}

impl RemoteBackend {
    /// A backend over `config.servers`, sampling with `params`. No connection is made yet.
    pub fn new(config: RemoteConfig, params: SamplingParams) -> Result<Self, RolloutError> {
        let broadcaster = match config.sync_method {
            SyncMethod::Disk => None,
            SyncMethod::Nccl => Some(nccl::default_broadcaster().map_err(RolloutError::Params)?),
        };
        Self::build(config, params, broadcaster)
    }

    /// A backend that sends weights with `broadcaster` (`sync_method = "nccl"`; tests use a
    /// stand-in for NCCL).
    pub fn with_broadcaster(
        config: RemoteConfig,
        params: SamplingParams,
        broadcaster: Box<dyn Broadcaster>,
    ) -> Result<Self, RolloutError> {
        Self::build(config, params, Some(broadcaster))
    }

    fn build(
        config: RemoteConfig,
        params: SamplingParams,
        broadcaster: Option<Box<dyn Broadcaster>>,
    ) -> Result<Self, RolloutError> {
        params.validate()?;
        if broadcaster.is_some() && config.kind != ServerKind::Vllm {
            return Err(RolloutError::Params("rollout.sync_method = \"nccl\" needs backend = \"vllm\"".into()));
        }
        if config.servers.is_empty() {
            return Err(RolloutError::Params("rollout.servers is empty".into()));
        }
        for url in &config.servers {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(RolloutError::Params(format!("server `{url}` is not an http:// URL")));
            }
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("aha-remote")
            .enable_all()
            .build()
            .map_err(|e| RolloutError::Backend(format!("starting the HTTP runtime: {e}")))?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| RolloutError::Backend(format!("building the HTTP client: {e}")))?;
        let n = config.servers.len();
        let servers = Servers::new(n, config.set_aside);
        let models = Mutex::new(vec![None; n]);
        let shared = Arc::new(Shared {
            kind: config.kind,
            config,
            params,
            client,
            servers: Mutex::new(servers),
            models,
            weights: Mutex::new(None),
            refreshing: (0..n).map(|_| tokio::sync::Mutex::new(())).collect(),
            tools: None,
        });
        let (sender, finished) = crossbeam_channel::unbounded();
        let nccl = broadcaster.map(|broadcaster| NcclSide { broadcaster, groups: vec![None; n] });
        Ok(Self { runtime, shared, sender, finished, in_flight: 0, next_id: 0, nccl })
    }

    /// Lets completions call the Python tool ([`tool_calls`]): calls are found with `tokenizer`
    /// and run on `executor`'s workers, here, not on the servers.
    pub fn with_tools(mut self, tokenizer: Tokenizer, executor: Arc<ToolExecutor>) -> Self {
        let shared = Arc::get_mut(&mut self.shared).expect("tools are set before the first request");
        shared.tools = Some(tool_calls::RemoteTools::new(tokenizer, executor));
        self
    }
}

impl Backend for RemoteBackend {
    fn submit(&mut self, request: GenerationRequest) -> Result<RequestId, RolloutError> {
        if request.prompt_ids.is_empty() || request.n == 0 {
            return Err(RolloutError::Params("a request needs a prompt and n >= 1".into()));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.in_flight += 1;
        let shared = Arc::clone(&self.shared);
        let sender = self.sender.clone();
        self.runtime.spawn(async move {
            let result = shared.run_group(&request).await;
            // The receiver lives as long as the runtime that runs this task.
            let _ = sender.send((id, result));
        });
        Ok(id)
    }

    fn poll(&mut self) -> Result<Vec<GroupOutput>, RolloutError> {
        if self.in_flight == 0 {
            return Ok(Vec::new());
        }
        let first = self.finished.recv().map_err(|_| RolloutError::Backend("the HTTP runtime stopped".into()))?;
        let mut done = Vec::new();
        for (id, result) in std::iter::once(first).chain(self.finished.try_iter()) {
            self.in_flight -= 1;
            done.push(GroupOutput { id, completions: result? });
        }
        Ok(done)
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn weight_sync(&mut self) -> Option<&mut dyn WeightSync> {
        Some(self)
    }
}

impl WeightSync for RemoteBackend {
    fn load_weights(&mut self, weights: WeightsOnDisk) -> Result<SyncReport, RolloutError> {
        if self.nccl.is_some() {
            return Err(RolloutError::Backend("rollout.sync_method = \"nccl\": weights are sent, not loaded".into()));
        }
        *self.shared.weights.lock().expect("weights") = Some(Served::Disk(weights));
        let shared = Arc::clone(&self.shared);
        self.runtime.block_on(async move {
            let n = shared.config.servers.len();
            let start = Instant::now();
            let loads = futures_join_all((0..n).map(|i| {
                let shared = Arc::clone(&shared);
                async move { shared.load_on(i).await }
            }))
            .await;
            let load_seconds = start.elapsed().as_secs_f64();
            let mut loaded = Vec::new();
            let mut unreachable = Vec::new();
            for (i, load) in loads.into_iter().enumerate() {
                match load {
                    Ok(()) => loaded.push(i),
                    Err(e) => {
                        tracing::warn!(
                            "{}: could not load the new weights ({e}); it will before its next group",
                            shared.url(i)
                        );
                        shared.servers.lock().expect("servers").set_stale(i, true);
                        unreachable.push(format!("{}: {e}", shared.url(i)));
                    }
                }
            }
            if loaded.is_empty() {
                return Err(RolloutError::Backend(format!(
                    "no server could load the new weights: {}",
                    unreachable.join("; ")
                )));
            }
            let mut report = shared.check_all(loaded).await?;
            report.load_seconds = load_seconds;
            report.unreachable.extend(unreachable);
            Ok(report)
        })
    }

    fn send_weights(&mut self, weights: WeightsInMemory) -> Result<SyncReport, RolloutError> {
        let Some(side) = self.nccl.as_mut() else {
            return Err(RolloutError::Backend(
                "weights are sent over NCCL only with rollout.sync_method = \"nccl\"".into(),
            ));
        };
        let result = nccl_sync(&self.runtime, &self.shared, side, &weights);
        if result.is_err() {
            // The groups may be mid-transfer: none carries another one.
            for group in side.groups.iter_mut().filter_map(Option::take) {
                side.broadcaster.abort(group);
            }
        }
        let load_seconds = result?;
        *self.shared.weights.lock().expect("weights") = Some(Served::Nccl {
            version: weights.version,
            probe_ids: weights.probe_ids,
            probe_logprobs: weights.probe_logprobs,
        });
        let shared = Arc::clone(&self.shared);
        let mut report = self.runtime.block_on(async move {
            let servers = (0..shared.config.servers.len()).collect();
            shared.check_all(servers).await
        })?;
        report.load_seconds = load_seconds;
        Ok(report)
    }

    fn check_weights(&mut self) -> Result<SyncReport, RolloutError> {
        let shared = Arc::clone(&self.shared);
        self.runtime.block_on(async move {
            let servers = (0..shared.config.servers.len()).collect();
            shared.check_all(servers).await
        })
    }
}

/// One NCCL sync (see [`nccl`]): joins the servers that have no group yet, then pauses every
/// server, starts an update, posts the list of tensors while broadcasting them, finishes, resets
/// the prefix cache and resumes. The seconds it took; any failure fails the whole sync.
fn nccl_sync(
    runtime: &tokio::runtime::Runtime,
    shared: &Arc<Shared>,
    side: &mut NcclSide,
    weights: &WeightsInMemory,
) -> Result<f64, RolloutError> {
    let start = Instant::now();
    let manifest = nccl::manifest(&weights.tensors).map_err(RolloutError::Params)?;
    let Some((_, first)) = weights.tensors.first() else {
        return Err(RolloutError::Params("no weights to send".into()));
    };
    let device = first.device();
    let n = shared.config.servers.len();
    let fail =
        |server: usize, e: String| RolloutError::Backend(format!("NCCL weight sync, {}: {e}", shared.url(server)));
    for server in 0..n {
        if side.groups[server].is_none() {
            let group =
                nccl_join(runtime, shared, side.broadcaster.as_mut(), server, device).map_err(|e| fail(server, e))?;
            side.groups[server] = Some(group);
        }
    }
    let groups: Vec<Group> = side.groups.iter().map(|g| g.expect("joined")).collect();
    let timeout = shared.config.request_timeout;
    // Every server stops sampling (`wait`: requests in flight finish on the old weights) and
    // readies its layers before the first tensor is broadcast.
    let paused = runtime.block_on(all_servers(shared, |shared, i| async move {
        shared.post_step(i, "/pause?mode=wait", None, timeout).await?;
        shared.post_step(i, "/start_weight_update", Some(&json!({})), timeout).await.map(drop)
    }));
    let mut outcome = first_failure(paused).map_err(|(i, e)| fail(i, e));
    if outcome.is_ok() {
        // `/update_weights` returns once every tensor has landed: in flight while this thread
        // broadcasts them.
        let body = nccl::update_body(&manifest);
        let stopped = Arc::new(AtomicBool::new(false));
        let receiving: Vec<_> = (0..n)
            .map(|i| {
                let (shared, stopped, body) = (Arc::clone(shared), Arc::clone(&stopped), body.clone());
                runtime.spawn(async move {
                    let answer = shared.post_step(i, "/update_weights", Some(&body), timeout).await;
                    if answer.is_err() {
                        stopped.store(true, Ordering::SeqCst);
                    }
                    answer
                })
            })
            .collect();
        let tensors: Vec<tch::Tensor> = weights.tensors.iter().map(|(_, t)| t.shallow_clone()).collect();
        let sent = side.broadcaster.broadcast(&groups, &tensors, &|| stopped.load(Ordering::SeqCst));
        let received: Vec<Result<Value, String>> = receiving
            .into_iter()
            .map(|handle| runtime.block_on(handle).unwrap_or_else(|e| Err(format!("task failed: {e}"))))
            .collect();
        outcome = match (sent, first_failure(received)) {
            // A server's answer says why the transfer stopped.
            (_, Err((i, e))) => Err(fail(i, e)),
            (Err(e), Ok(())) => Err(RolloutError::Backend(format!("NCCL weight sync: broadcasting: {e}"))),
            (Ok(()), Ok(())) => Ok(()),
        };
    }
    // Finish (on success) and resume whatever happened, so that no server stays paused.
    let finish = outcome.is_ok().then(|| nccl::finish_body(weights.version));
    let resumed = runtime.block_on(all_servers(shared, move |shared, i| {
        let finish = finish.clone();
        async move {
            let finished = match &finish {
                Some(body) => shared.post_step(i, "/finish_weight_update", Some(body), timeout).await.map(drop),
                None => Ok(()),
            };
            let reset = shared.post_step(i, "/reset_prefix_cache", None, timeout).await;
            shared.post_step(i, "/resume", None, timeout).await?;
            finished?;
            reset.map(drop)
        }
    }));
    outcome?;
    first_failure(resumed).map_err(|(i, e)| fail(i, e))?;
    Ok(start.elapsed().as_secs_f64())
}

/// Joins `server`'s NCCL group: asks its worker count, mints a unique id, and opens the group
/// while `/init_weight_transfer_engine` is in flight (both sides block until all ranks are in).
fn nccl_join(
    runtime: &tokio::runtime::Runtime,
    shared: &Arc<Shared>,
    broadcaster: &mut dyn Broadcaster,
    server: usize,
    device: tch::Device,
) -> Result<Group, String> {
    let workers = runtime
        .block_on(shared.get(server, "/get_world_size?include_dp=true"))
        .map_err(|e| match e {
            Failure::Retry(e) => e,
            Failure::Fatal(e) => e.to_string(),
        })
        .and_then(|answer| nccl::workers_of(&answer))?;
    let unique_id = broadcaster.unique_id()?;
    let body = nccl::init_body(&unique_id, workers);
    let failed = Arc::new(AtomicBool::new(false));
    let init = {
        let (shared, failed) = (Arc::clone(shared), Arc::clone(&failed));
        let timeout = shared.config.request_timeout;
        runtime.spawn(async move {
            let answer = shared.post_step(server, "/init_weight_transfer_engine", Some(&body), timeout).await;
            failed.store(answer.is_err(), Ordering::SeqCst);
            answer
        })
    };
    let gave_up = || failed.load(Ordering::SeqCst);
    let joined = broadcaster.join(&unique_id, 1 + workers, device, &gave_up);
    let answered = runtime.block_on(init).unwrap_or_else(|e| Err(format!("task failed: {e}")));
    match (joined, answered) {
        (Ok(group), Ok(_)) => {
            tracing::info!("{}: joined its NCCL group ({} ranks)", shared.url(server), 1 + workers);
            Ok(group)
        }
        (Ok(group), Err(e)) => {
            broadcaster.abort(group);
            Err(e)
        }
        (Err(e), Ok(_)) => Err(e),
        // The server's answer says why it did not join.
        (Err(_), Err(e)) => Err(e),
    }
}

/// Runs `step` on every server concurrently; the outcome of each, in server order.
async fn all_servers<F, Fut>(shared: &Arc<Shared>, step: F) -> Vec<Result<(), String>>
where
    F: Fn(Arc<Shared>, usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    futures_join_all((0..shared.config.servers.len()).map(|i| step(Arc::clone(shared), i))).await
}

/// The first failure of `results`, with the server it came from.
fn first_failure<T>(results: Vec<Result<T, String>>) -> Result<(), (usize, String)> {
    match results.into_iter().enumerate().find_map(|(i, r)| r.err().map(|e| (i, e))) {
        Some(failure) => Err(failure),
        None => Ok(()),
    }
}

/// Runs futures concurrently on the current runtime and returns their outputs in order.
async fn futures_join_all<F, T>(futures: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("a server task panicked"));
    }
    out
}

fn backoff(attempt: usize) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(5))).min(Duration::from_secs(2))
}

impl Shared {
    /// Checks `servers` against the current weights; one that does not answer is marked to load
    /// and check again before its next group, one that answers wrong stops the run.
    async fn check_all(self: &Arc<Self>, servers: Vec<usize>) -> Result<SyncReport, RolloutError> {
        let start = Instant::now();
        let checks = futures_join_all(servers.iter().map(|&i| {
            let shared = Arc::clone(self);
            async move { shared.check_on(i).await }
        }))
        .await;
        let mut report = SyncReport::default();
        for (&i, check) in servers.iter().zip(checks) {
            match check {
                Ok(diff) => {
                    report.max_abs_logprob_diff = report.max_abs_logprob_diff.max(diff);
                    self.servers.lock().expect("servers").set_stale(i, false);
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(e)) => {
                    tracing::warn!("{}: weight check failed ({e}); it will redo it before its next group", self.url(i));
                    self.servers.lock().expect("servers").set_stale(i, true);
                    report.unreachable.push(format!("{}: {e}", self.url(i)));
                }
            }
        }
        if report.unreachable.len() == servers.len() {
            return Err(RolloutError::Backend(format!(
                "no server answered the weight check: {}",
                report.unreachable.join("; ")
            )));
        }
        report.check_seconds = start.elapsed().as_secs_f64();
        Ok(report)
    }

    fn url(&self, server: usize) -> String {
        self.config.servers[server].trim_end_matches('/').to_string()
    }

    /// The group's completions: one request for all of them, then, with tools, the calls they
    /// make and the requests that go on after them.
    async fn run_group(self: &Arc<Self>, request: &GenerationRequest) -> Result<Vec<Completion>, RolloutError> {
        let stop_strings = match &self.tools {
            Some(tools) => tools.stop_strings(&self.config.stop_strings),
            None => self.config.stop_strings.clone(),
        };
        let generation = Generation {
            prompt_ids: &request.prompt_ids,
            n: request.n,
            seed: request.seed,
            params: &self.params,
            max_tokens: self.params.max_new_tokens,
            stop_strings: &stop_strings,
        };
        let completions = self.send(&generation).await?;
        if self.tools.is_none() {
            return Ok(completions);
        }
        let calls = completions.into_iter().enumerate().map(|(choice, completion)| {
            let shared = Arc::clone(self);
            let request = request.clone();
            async move { shared.go_on_after_calls(&request, choice as u64, completion).await }
        });
        futures_join_all(calls).await.into_iter().collect()
    }

    /// Sends `generation` until one server answers it properly.
    async fn send(self: &Arc<Self>, generation: &Generation<'_>) -> Result<Vec<Completion>, RolloutError> {
        let attempts = self.config.attempts_per_group.max(1);
        let mut last_error = String::new();
        for attempt in 0..attempts {
            let server = loop {
                let picked = self.servers.lock().expect("servers").acquire(Instant::now());
                match picked {
                    Ok(server) => break server,
                    Err(wait) => tokio::time::sleep(wait).await,
                }
            };
            let result = async {
                self.refresh(server).await?;
                self.generate_on(server, generation).await
            }
            .await;
            let ok = result.is_ok();
            let released = self.servers.lock().expect("servers").release(server, ok, Instant::now());
            match result {
                Ok(completions) => return Ok(completions),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(e)) => {
                    let url = self.url(server);
                    match released {
                        Released::SetAside(pause) => tracing::warn!(
                            "{url}: {e}; set aside for {:.0} s after {} failures in a row; the group goes elsewhere",
                            pause.as_secs_f64(),
                            self.config.set_aside.failures_to_set_aside
                        ),
                        _ => tracing::warn!("{url}: {e}; the group goes to another server"),
                    }
                    last_error = format!("{url}: {e}");
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
        Err(RolloutError::Backend(format!(
            "no server left: a group failed {attempts} times on {} servers (last: {last_error})",
            self.config.servers.len()
        )))
    }

    /// Brings `server` up to date if it is stale (see [`servers`]): loads the current weights
    /// and checks them, once however many groups are waiting for it.
    async fn refresh(self: &Arc<Self>, server: usize) -> Result<(), Failure> {
        let stale = || self.servers.lock().expect("servers").is_stale(server);
        if !stale() || self.weights.lock().expect("weights").is_none() {
            return Ok(());
        }
        let _only_one = self.refreshing[server].lock().await;
        if stale() {
            self.load_on(server).await.map_err(Failure::Retry)?;
            self.check_on(server).await?;
            self.servers.lock().expect("servers").set_stale(server, false);
        }
        Ok(())
    }

    /// POSTs `body` to `path` on `server` and returns the JSON answer.
    async fn post(&self, server: usize, path: &str, body: Option<&Value>, timeout: Duration) -> Result<Value, Failure> {
        let url = format!("{}{path}", self.url(server));
        let mut request = self.client.post(&url).timeout(timeout);
        if let Some(body) = body {
            request = request.json(body);
        }
        let (status, text) = exchange(request).await?;
        if status.is_client_error() && ![404, 408, 429].contains(&status.as_u16()) {
            // The server understood and refused: the same request will fail everywhere.
            return Err(Failure::Fatal(RolloutError::Backend(format!(
                "{url} refused the request ({status}): {}",
                clip(&text)
            ))));
        }
        answer(path, status, &text)
    }

    /// [`Self::post`] for a step of a weight sync, its failure in one line naming the step.
    async fn post_step(
        &self,
        server: usize,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Value, String> {
        self.post(server, path, body, timeout).await.map_err(|e| match e {
            Failure::Retry(e) => e,
            Failure::Fatal(e) => e.to_string(),
        })
    }

    async fn get(&self, server: usize, path: &str) -> Result<Value, Failure> {
        let request = self.client.get(format!("{}{path}", self.url(server))).timeout(Duration::from_secs(30));
        let (status, text) = exchange(request).await?;
        answer(path, status, &text)
    }

    /// The name vLLM serves its model under (its `model` field), asked once per server.
    async fn model_name(&self, server: usize) -> Result<String, Failure> {
        if self.kind == ServerKind::Sglang {
            return Ok(String::new());
        }
        if let Some(name) = self.models.lock().expect("models")[server].clone() {
            return Ok(name);
        }
        let models = self.get(server, "/v1/models").await?;
        let Some(name) = models.pointer("/data/0/id").and_then(Value::as_str) else {
            return Err(Failure::Retry("/v1/models names no model".into()));
        };
        self.models.lock().expect("models")[server] = Some(name.to_string());
        Ok(name.to_string())
    }

    async fn generate_on(&self, server: usize, generation: &Generation<'_>) -> Result<Vec<Completion>, Failure> {
        let model = self.model_name(server).await?;
        let body = protocol::request_body(self.kind, &model, generation);
        let response = self.post(server, self.kind.generate_path(), Some(&body), self.config.request_timeout).await?;
        protocol::parse_response(self.kind, &response, generation.n).map_err(|e| Failure::Retry(e.0))
    }

    /// Has `server` load the current weights (vLLM: pause, reload, reset the prefix cache,
    /// resume; SGLang: update from disk, flushing its cache).
    async fn load_on(self: &Arc<Self>, server: usize) -> Result<(), String> {
        let dir = match self.weights.lock().expect("weights").as_ref() {
            None => return Ok(()),
            Some(Served::Disk(weights)) => weights.dir.clone(),
            // Only a sync can broadcast (it needs the trainer's thread and GPU): the check
            // that follows tells whether the server still serves the weights it was sent.
            Some(Served::Nccl { .. }) => return Ok(()),
        };
        // vLLM shuts down when asked to load a folder it cannot read: never send one that is not
        // complete here.
        if !dir.join("config.json").is_file() {
            return Err(format!("{}: no config.json: not a complete weight folder", dir.display()));
        }
        let dir = dir.to_string_lossy().to_string();
        let timeout = self.config.request_timeout;
        let step = |r: Result<Value, Failure>| match r {
            Ok(v) => Ok(v),
            Err(Failure::Retry(e)) => Err(e),
            Err(Failure::Fatal(e)) => Err(e.to_string()),
        };
        match self.kind {
            ServerKind::Vllm => {
                // `wait`: requests in flight finish first (the default, `abort`, would cut them off).
                step(self.post(server, "/pause?mode=wait", None, timeout).await)?;
                let reload = json!({"method": "reload_weights",
                    "kwargs": {"weights_path": dir, "is_checkpoint_format": true}});
                let loaded = step(self.post(server, "/collective_rpc", Some(&reload), timeout).await);
                // Resume whatever happened, so that a failed load does not leave it paused.
                let reset = step(self.post(server, "/reset_prefix_cache", None, timeout).await);
                step(self.post(server, "/resume", None, timeout).await)?;
                loaded?;
                reset?;
            }
            ServerKind::Sglang => {
                let body = json!({"model_path": dir, "flush_cache": true});
                let answer = step(self.post(server, "/update_weights_from_disk", Some(&body), timeout).await)?;
                if answer.get("success").and_then(Value::as_bool) == Some(false) {
                    return Err(format!("update_weights_from_disk: {}", answer.get("message").unwrap_or(&answer)));
                }
            }
        }
        Ok(())
    }

    /// Scores the probe on `server`; the largest difference from the trainer's log-probs, or a
    /// fatal error when it exceeds the limit.
    async fn check_on(self: &Arc<Self>, server: usize) -> Result<f64, Failure> {
        let Some(weights) = self.weights.lock().expect("weights").clone() else { return Ok(0.0) };
        let (probe_ids, probe_logprobs) = weights.probe();
        let model = self.model_name(server).await?;
        let body = probe::probe_body(self.kind, &model, probe_ids);
        let path = self.kind.generate_path();
        let response = self.post(server, path, Some(&body), self.config.request_timeout).await?;
        let logprobs = probe::parse_probe(self.kind, &response, probe_ids).map_err(|e| Failure::Retry(e.0))?;
        let diff = probe::max_abs_diff(&logprobs, probe_logprobs);
        if diff > self.config.max_logprob_diff {
            return Err(Failure::Fatal(RolloutError::Backend(format!(
                "{} does not serve the weights the trainer expects: its log-probs of the check sequence differ from the \
                 trainer's by up to {diff:.3e} (limit rollout.sync_max_logprob_diff = {:.1e}); expected {}",
                self.url(server),
                self.config.max_logprob_diff,
                weights.describe()
            ))));
        }
        Ok(diff)
    }
}

/// Sends `request` and reads the whole answer; a transport failure is worth a retry elsewhere.
async fn exchange(request: reqwest::RequestBuilder) -> Result<(reqwest::StatusCode, String), Failure> {
    let response = request.send().await.map_err(|e| Failure::Retry(describe(&e)))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| Failure::Retry(describe(&e)))?;
    Ok((status, text))
}

/// The JSON of a successful answer to `path` (`null` for an empty body).
fn answer(path: &str, status: reqwest::StatusCode, text: &str) -> Result<Value, Failure> {
    if !status.is_success() {
        return Err(Failure::Retry(format!("{path}: HTTP {status}: {}", clip(text))));
    }
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(text).map_err(|e| Failure::Retry(format!("{path}: malformed JSON ({e}): {}", clip(text))))
}

/// A transport error in one line (reqwest's display hides the cause).
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_string()
    } else if error.is_connect() {
        "could not connect".to_string()
    } else {
        error.to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// At most 300 characters of a response body, on one line.
fn clip(text: &str) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(300) {
        Some((end, _)) => format!("{}...", &line[..end]),
        None => line,
    }
}

/// The weight folder of sync `version` under `sync_dir`.
pub fn sync_folder(sync_dir: &Path, version: u64) -> PathBuf {
    sync_dir.join(format!("weights-{version:08}"))
}
