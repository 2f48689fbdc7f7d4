//! A stand-in for a vLLM or SGLang server in tests: the subset of their HTTP APIs aha uses,
//! answered by aha's own engine on a local model (stop strings included, as vLLM's
//! `include_stop_str_in_output` and SGLang's `no_stop_trim` keep them), with faults on demand (errors, dropped
//! connections, slow or malformed answers, a restart on the original weights, reloads that are
//! silently ignored). Real vLLM servers are tested by scripts/test_vllm.sh.
//!
//! vLLM's NCCL weight transfer (`/get_world_size`, `/init_weight_transfer_engine`,
//! `/start_weight_update`, `/update_weights`, `/finish_weight_update`) is played over
//! [`Loopback`], an in-process stand-in for NCCL: the trainer's side ([`Loopback`] as aha's
//! `Broadcaster`) and the server's meet by unique id, the server's `/init_weight_transfer_engine`
//! waits for the trainer to join as NCCL's rendezvous would, and `/update_weights` takes the
//! broadcast tensors in the order it lists them, checks their dtypes and shapes, and loads them.
//! Every request is recorded ([`FakeServer::calls`]).
//!
//! HTTP/1.1 on plain std sockets, one thread per connection, `Connection: close` on every answer.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use aha_model::{CausalLM, LoadOptions, Tokenizer};
use aha_rollout::remote::nccl::{base64, torch_dtype, Broadcaster, Group, UNIQUE_ID_BYTES};
use aha_rollout::{generate, Completion, FinishReason, GenerationRequest, SamplingParams, ServerKind, StopStrings};

/// Faults to inject; each `*_next` counter is how many of the next generation requests get it.
#[derive(Default)]
pub struct Faults {
    /// Answer HTTP 500.
    pub error_next: AtomicUsize,
    /// Close the connection without answering.
    pub drop_next: AtomicUsize,
    /// Answer a body that is not JSON.
    pub malformed_next: AtomicUsize,
    /// Answer one completion fewer than asked.
    pub short_next: AtomicUsize,
    /// Wait this long before answering a generation request.
    pub delay_ms: AtomicU64,
    /// Answer reloads with success but keep the old weights.
    pub ignore_reloads: AtomicBool,
    /// Drop every connection (a dead server).
    pub down: AtomicBool,
    /// Paths (without the query) answered HTTP 500 the next time they are requested, once each.
    pub fail_paths: Mutex<Vec<String>>,
}

impl Faults {
    /// Answers the next request to `path` with HTTP 500.
    pub fn fail_next(&self, path: &str) {
        self.fail_paths.lock().unwrap().push(path.to_string());
    }
}

struct State {
    kind: ServerKind,
    original: PathBuf,
    model: Mutex<CausalLM>,
    /// For stop strings; `None` when the model folder has no tokenizer.json.
    tokenizer: Option<Tokenizer>,
    faults: Faults,
    generations: AtomicUsize,
    reloads: AtomicUsize,
    /// Every request: the path with its query, and the JSON body (`null` if none).
    calls: Mutex<Vec<(String, Value)>>,
    /// vLLM's worker count (`/get_world_size`).
    workers: AtomicUsize,
    /// The NCCL group it joined (`/init_weight_transfer_engine`).
    group: Mutex<Option<Arc<LoopGroup>>>,
}

pub struct FakeServer {
    pub url: String,
    state: Arc<State>,
}

fn load(dir: &Path) -> CausalLM {
    CausalLM::load(dir, LoadOptions::default()).expect("the fake server's model loads")
}

fn take(counter: &AtomicUsize) -> bool {
    counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
}

impl FakeServer {
    /// A server of `kind` serving the model in `model_dir`, on a free local port.
    pub fn start(kind: ServerKind, model_dir: &Path) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let model = load(model_dir);
        let tokenizer = Tokenizer::from_dir(model_dir, model.config().vocab_size).ok();
        let state = Arc::new(State {
            kind,
            original: model_dir.to_path_buf(),
            model: Mutex::new(model),
            tokenizer,
            faults: Faults::default(),
            generations: AtomicUsize::new(0),
            reloads: AtomicUsize::new(0),
            calls: Mutex::new(Vec::new()),
            workers: AtomicUsize::new(1),
            group: Mutex::new(None),
        });
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = Arc::clone(&shared);
                std::thread::spawn(move || serve(&state, stream));
            }
        });
        Self { url, state }
    }

    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }

    /// Generation requests answered so far.
    pub fn generations(&self) -> usize {
        self.state.generations.load(Ordering::SeqCst)
    }

    pub fn reloads(&self) -> usize {
        self.state.reloads.load(Ordering::SeqCst)
    }

    /// As if the process had been killed and started again: back on the weights it started with,
    /// out of any NCCL group.
    pub fn restart(&self) {
        *self.state.model.lock().unwrap() = load(&self.state.original);
        *self.state.group.lock().unwrap() = None;
        self.state.faults.down.store(false, Ordering::SeqCst);
    }

    /// Every request so far: the path with its query, and the JSON body (`null` if none).
    pub fn calls(&self) -> Vec<(String, Value)> {
        self.state.calls.lock().unwrap().clone()
    }

    /// The paths requested so far, in order, but the generation and probe requests.
    pub fn control_calls(&self) -> Vec<String> {
        self.calls().into_iter().map(|(p, _)| p).filter(|p| p != "/v1/completions" && p != "/v1/models").collect()
    }

    /// Makes it a vLLM server of `workers` ranks (tensor x pipeline x data parallel).
    pub fn set_workers(&self, workers: usize) {
        self.state.workers.store(workers, Ordering::SeqCst);
    }
}

fn serve(state: &State, stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || state.faults.down.load(Ordering::SeqCst) {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let full_path = parts.next().unwrap_or("").to_string();
    // The query string (vLLM's `/pause?mode=wait`) changes nothing here.
    let path = full_path.split('?').next().unwrap_or("").to_string();
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    state.calls.lock().unwrap().push((full_path, body.clone()));
    let failing = {
        let mut paths = state.faults.fail_paths.lock().unwrap();
        paths.iter().position(|p| *p == path).map(|i| paths.remove(i)).is_some()
    };
    let answered = if failing {
        Some((500, json!({"error": {"message": format!("injected failure of {path}")}}).to_string()))
    } else {
        answer(state, &method, &path, &body)
    };
    let Some((status, text)) = answered else { return };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

/// The status and body to send back, or `None` to drop the connection.
fn answer(state: &State, method: &str, path: &str, body: &Value) -> Option<(u16, String)> {
    let ok = |v: Value| Some((200, v.to_string()));
    match (state.kind, method, path) {
        (_, "GET", "/health") => ok(json!({})),
        (ServerKind::Vllm, "GET", "/v1/models") => ok(json!({"data": [{"id": "fake-model"}]})),
        (ServerKind::Vllm, "POST", "/pause" | "/resume" | "/reset_prefix_cache") => ok(Value::Null),
        (ServerKind::Vllm, "GET", "/get_world_size") => ok(json!({"world_size": state.workers.load(Ordering::SeqCst)})),
        (ServerKind::Vllm, "POST", "/init_weight_transfer_engine") => join_group(state, body),
        (ServerKind::Vllm, "POST", "/start_weight_update") => ok(json!({"message": "Weight update started"})),
        (ServerKind::Vllm, "POST", "/update_weights") => receive_weights(state, body),
        (ServerKind::Vllm, "POST", "/finish_weight_update") => ok(json!({"message": "Weight update finished"})),
        (ServerKind::Vllm, "POST", "/collective_rpc") => {
            let dir = body.pointer("/kwargs/weights_path").and_then(Value::as_str)?;
            reload(state, Path::new(dir))
        }
        (ServerKind::Sglang, "POST", "/update_weights_from_disk") => {
            let dir = body.get("model_path").and_then(Value::as_str)?;
            reload(state, Path::new(dir)).map(|_| (200, json!({"success": true, "message": "ok"}).to_string()))
        }
        (ServerKind::Vllm, "POST", "/v1/completions") | (ServerKind::Sglang, "POST", "/generate") => {
            if body.get("prompt_logprobs").is_some() || body.get("logprob_start_len").is_some() {
                return ok(probe(state, body));
            }
            let faults = &state.faults;
            std::thread::sleep(Duration::from_millis(faults.delay_ms.load(Ordering::SeqCst)));
            if take(&faults.drop_next) {
                return None;
            }
            if take(&faults.error_next) {
                return Some((500, json!({"error": {"message": "injected failure"}}).to_string()));
            }
            if take(&faults.malformed_next) {
                return Some((200, "{\"choices\": [".into()));
            }
            state.generations.fetch_add(1, Ordering::SeqCst);
            let short = take(&faults.short_next);
            ok(generation(state, body, short))
        }
        _ => Some((404, json!({"error": {"message": format!("no route {method} {path}")}}).to_string())),
    }
}

fn reload(state: &State, dir: &Path) -> Option<(u16, String)> {
    state.reloads.fetch_add(1, Ordering::SeqCst);
    if !state.faults.ignore_reloads.load(Ordering::SeqCst) {
        match CausalLM::load(dir, LoadOptions::default()) {
            Ok(model) => *state.model.lock().unwrap() = model,
            Err(e) => return Some((500, json!({"error": {"message": e.to_string()}}).to_string())),
        }
    }
    Some((200, "null".into()))
}

fn ids(value: &Value) -> Vec<u32> {
    value.as_array().map(|a| a.iter().filter_map(|v| v.as_u64().map(|x| x as u32)).collect()).unwrap_or_default()
}

fn params(p: &Value, max_key: &str) -> SamplingParams {
    let f = |k: &str, d: f64| p.get(k).and_then(Value::as_f64).unwrap_or(d);
    SamplingParams {
        temperature: f("temperature", 1.0),
        top_p: f("top_p", 1.0),
        top_k: p.get("top_k").and_then(Value::as_i64).map_or(0, |k| k.max(0) as usize),
        min_p: f("min_p", 0.0),
        max_new_tokens: p.get(max_key).and_then(Value::as_u64).unwrap_or(16) as usize,
        stop_token_ids: ids(p.get("stop_token_ids").unwrap_or(&Value::Null)),
    }
}

fn reason(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

/// `completion` cut after the token that completes one of `stops` (a server's stop strings),
/// with the string that stopped it. Cutting a longer completion gives the tokens stopping would
/// have: each sequence draws from its own random stream.
fn stop_at_strings(state: &State, mut completion: Completion, stops: Option<&Value>) -> (Completion, Option<String>) {
    let stops: Vec<String> =
        stops.and_then(Value::as_array).into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect();
    let Some(tokenizer) = state.tokenizer.as_ref().filter(|_| !stops.is_empty()) else { return (completion, None) };
    for end in 1..=completion.token_ids.len() {
        for stop in &stops {
            let one = StopStrings::new(tokenizer, vec![stop.clone()]).expect("non-empty stop strings");
            if one.completed_by_last(&completion.token_ids[..end]).expect("decode") {
                completion.token_ids.truncate(end);
                completion.logprobs.truncate(end);
                completion.finish_reason = FinishReason::Stop;
                return (completion, Some(stop.clone()));
            }
        }
    }
    (completion, None)
}

/// Completions from aha's own engine, as the real server would shape them.
fn generation(state: &State, body: &Value, short: bool) -> Value {
    let model = state.model.lock().unwrap();
    match state.kind {
        ServerKind::Vllm => {
            let request = GenerationRequest {
                prompt_ids: ids(&body["prompt"]),
                n: body["n"].as_u64().unwrap_or(1) as usize,
                seed: body["seed"].as_u64().unwrap_or(0),
            };
            let completions = generate(&model, &[request], &params(body, "max_tokens")).expect("generate").remove(0);
            let take = completions.len() - usize::from(short);
            let choices: Vec<Value> = completions
                .into_iter()
                .take(take)
                .enumerate()
                .map(|(i, c)| {
                    let (c, stop) = stop_at_strings(state, c, body.get("stop"));
                    json!({"index": i, "text": "", "token_ids": c.token_ids,
                        "logprobs": {"token_logprobs": c.logprobs}, "finish_reason": reason(c.finish_reason),
                        "stop_reason": stop})
                })
                .collect();
            json!({"id": "cmpl-fake", "choices": choices})
        }
        ServerKind::Sglang => {
            let inputs = body["input_ids"].as_array().cloned().unwrap_or_default();
            let mut items = Vec::new();
            for (input, sampling) in inputs.iter().zip(body["sampling_params"].as_array().into_iter().flatten()) {
                // SGLang seeds each input; aha's engine seeds a group and draws completion j on
                // stream j, so the seed of input j is the group's seed + j with one completion.
                let request = GenerationRequest {
                    prompt_ids: ids(input),
                    n: 1,
                    seed: sampling["sampling_seed"].as_u64().unwrap_or(0),
                };
                let c = generate(&model, &[request], &params(sampling, "max_new_tokens")).expect("generate").remove(0);
                let (c, _) =
                    stop_at_strings(state, c.into_iter().next().expect("one completion"), sampling.get("stop"));
                let lps: Vec<Value> = c.logprobs.iter().zip(&c.token_ids).map(|(l, t)| json!([l, t, null])).collect();
                items.push(json!({"text": "", "output_ids": c.token_ids, "meta_info": {
                    "output_token_logprobs": lps, "finish_reason": {"type": reason(c.finish_reason)}}}));
            }
            if short {
                items.pop();
            }
            Value::Array(items)
        }
    }
}

/// Teacher-forced log-probs of the request's tokens (the weight check).
fn probe(state: &State, body: &Value) -> Value {
    let model = state.model.lock().unwrap();
    let tokens = ids(body.get("prompt").or_else(|| body.get("input_ids")).unwrap_or(&Value::Null));
    let logprobs = model.sequence_logprobs(std::slice::from_ref(&tokens), 1.0).expect("score").remove(0);
    match state.kind {
        ServerKind::Vllm => {
            let mut entries = vec![Value::Null];
            for (id, lp) in tokens.iter().skip(1).zip(&logprobs) {
                entries.push(json!({ id.to_string(): {"logprob": lp, "rank": 1} }));
            }
            json!({"choices": [{"index": 0, "token_ids": [], "prompt_logprobs": entries, "finish_reason": "length"}]})
        }
        ServerKind::Sglang => {
            let mut entries = vec![json!([null, tokens[0], null])];
            for (id, lp) in tokens.iter().skip(1).zip(&logprobs) {
                entries.push(json!([lp, id, null]));
            }
            json!({"text": "", "output_ids": [], "meta_info": {"input_token_logprobs": entries}})
        }
    }
}

/// One NCCL group of [`Loopback`]: the tensors broadcast to it, in order, not yet received.
pub struct LoopGroup {
    world_size: usize,
    joined: Mutex<usize>,
    tensors: Mutex<VecDeque<tch::Tensor>>,
    changed: Condvar,
}

/// The groups by unique id: where the trainer's side and the servers' meet.
fn groups() -> &'static Mutex<HashMap<Vec<u8>, Arc<LoopGroup>>> {
    static GROUPS: OnceLock<Mutex<HashMap<Vec<u8>, Arc<LoopGroup>>>> = OnceLock::new();
    GROUPS.get_or_init(Default::default)
}

/// The next tensor broadcast to `group`, waiting up to 10 s for it.
fn next_tensor(group: &LoopGroup) -> Option<tch::Tensor> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut tensors = group.tensors.lock().unwrap();
    loop {
        if let Some(tensor) = tensors.pop_front() {
            return Some(tensor);
        }
        let left = deadline.checked_duration_since(Instant::now())?;
        tensors = group.changed.wait_timeout(tensors, left).unwrap().0;
    }
}

fn failure(message: String) -> Option<(u16, String)> {
    Some((500, json!({"error": {"message": message}}).to_string()))
}

/// `/init_weight_transfer_engine`: the workers join the group named by the unique id, which
/// the trainer opens at the same time (it may come a little later: wait for it, as NCCL does).
fn join_group(state: &State, body: &Value) -> Option<(u16, String)> {
    let info = &body["init_info"];
    let Some(id) = info["nccl_unique_id_b64"].as_str() else {
        return failure("init_info needs nccl_unique_id_b64 (the fake server has no TCP rendezvous)".into());
    };
    let workers = state.workers.load(Ordering::SeqCst);
    if info["rank_offset"] != 1 || info["world_size"].as_u64() != Some(1 + workers as u64) {
        return failure(format!("init_info {info}: expected rank_offset 1 and world_size {}", 1 + workers));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let group = loop {
        let found = groups().lock().unwrap().iter().find(|(key, _)| base64(key) == id).map(|(_, g)| Arc::clone(g));
        match found {
            Some(group) => break group,
            None if Instant::now() > deadline => return failure("nobody joined rank 0 of the group".into()),
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    if group.world_size != 1 + workers {
        return failure(format!("rank 0 opened {} ranks, the server has {workers} workers", group.world_size));
    }
    *group.joined.lock().unwrap() += workers;
    group.changed.notify_all();
    *state.group.lock().unwrap() = Some(group);
    Some((200, json!({"message": "Weight transfer initialized"}).to_string()))
}

/// `/update_weights`: receives the listed tensors in order from the group and loads each (unless
/// told to ignore reloads).
fn receive_weights(state: &State, body: &Value) -> Option<(u16, String)> {
    let Some(group) = state.group.lock().unwrap().clone() else {
        return failure("NCCL weight transfer not initialized. Call init_transfer_engine() first.".into());
    };
    let info = &body["update_info"];
    let names: Vec<&str> = info["names"].as_array()?.iter().filter_map(Value::as_str).collect();
    let dtypes: Vec<&str> = info["dtype_names"].as_array()?.iter().filter_map(Value::as_str).collect();
    let shapes: Vec<Vec<i64>> = info["shapes"]
        .as_array()?
        .iter()
        .map(|s| s.as_array().unwrap().iter().map(|d| d.as_i64().unwrap()).collect())
        .collect();
    if dtypes.len() != names.len() || shapes.len() != names.len() {
        return failure("`dtype_names` and `shapes` should be of the same size as `names`".into());
    }
    let variables = state.model.lock().unwrap().var_store().variables();
    for ((name, dtype), shape) in names.iter().zip(&dtypes).zip(&shapes) {
        let Some(tensor) = next_tensor(&group) else {
            return failure(format!("{name}: no broadcast came"));
        };
        let got = (torch_dtype(tensor.kind()).unwrap_or("?"), tensor.size());
        if got != (*dtype, shape.clone()) {
            return failure(format!("{name}: received {got:?}, listed as {dtype} {shape:?}"));
        }
        let Some(variable) = variables.get(*name) else {
            return failure(format!("no parameter named {name}"));
        };
        if !state.faults.ignore_reloads.load(Ordering::SeqCst) {
            let mut variable = variable.shallow_clone();
            tch::no_grad(|| variable.copy_(&tensor));
        }
    }
    state.reloads.fetch_add(1, Ordering::SeqCst);
    Some((200, json!({"message": "Weights updated"}).to_string()))
}

/// An in-process stand-in for NCCL, aha's side of it: unique ids are random, joining opens the
/// group and waits for the server's workers, a broadcast hands each server a copy of every tensor.
#[derive(Default)]
pub struct Loopback {
    groups: Vec<Option<Arc<LoopGroup>>>,
    /// Broadcasts made (each: every tensor to every group given).
    pub broadcasts: Arc<AtomicUsize>,
}

impl Broadcaster for Loopback {
    fn unique_id(&mut self) -> Result<[u8; UNIQUE_ID_BYTES], String> {
        let mut id = [0u8; UNIQUE_ID_BYTES];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = rand::random::<u8>().wrapping_add(i as u8);
        }
        Ok(id)
    }

    fn join(
        &mut self,
        unique_id: &[u8; UNIQUE_ID_BYTES],
        world_size: usize,
        _device: tch::Device,
        gave_up: &dyn Fn() -> bool,
    ) -> Result<Group, String> {
        let group = Arc::new(LoopGroup {
            world_size,
            joined: Mutex::new(0),
            tensors: Mutex::new(VecDeque::new()),
            changed: Condvar::new(),
        });
        groups().lock().unwrap().insert(unique_id.to_vec(), Arc::clone(&group));
        loop {
            if *group.joined.lock().unwrap() == world_size - 1 {
                break;
            }
            if gave_up() {
                groups().lock().unwrap().remove(unique_id.as_slice());
                return Err("the server did not join the NCCL group".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.groups.push(Some(group));
        Ok(Group(self.groups.len() - 1))
    }

    fn broadcast(&mut self, groups: &[Group], tensors: &[tch::Tensor], _: &dyn Fn() -> bool) -> Result<(), String> {
        for tensor in tensors {
            for g in groups {
                let group = self.groups[g.0].as_ref().ok_or(format!("group {} is closed", g.0))?;
                group.tensors.lock().unwrap().push_back(tensor.detach().copy());
                group.changed.notify_all();
            }
        }
        self.broadcasts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn abort(&mut self, group: Group) {
        self.groups[group.0] = None;
    }
}
