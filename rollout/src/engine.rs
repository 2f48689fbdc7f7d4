//! The local generation engine: continuous batching over one shared KV cache.
//!
//! A request is a prompt and the number `n` of completions wanted from it (a GRPO group). The
//! engine prefills each prompt once and copies its cache rows to the `n` samples (no n-fold
//! prefill), then decodes every live sequence together, one token per step. When sequences finish
//! they leave the batch and waiting requests take their place, so a few long answers never keep a
//! mostly empty batch busy (Orca's iteration-level scheduling, Yu et al., OSDI 2022).
//!
//! Cache layout: every row's real tokens sit at the right end of the filled slots (prompts are
//! left-padded; sequences admitted later are right-aligned with the rest by `KvCache::concat`), and
//! each row carries its own positions, so rows of different ages share one tensor per layer. The
//! slots of sequences that left are dropped whenever the batch is compacted.
//!
//! Memory is planned, not discovered: a sequence of a prompt of P tokens needs at most
//! `KvCache::slots_for(P + max_new_tokens)` cache slots (P + max_new_tokens, rounded up to a
//! block) of `KvCache::bytes_per_token` bytes each, and a request joins
//! the batch only if every admitted sequence still fits the budget at its longest (while the
//! batch is re-packed, the old and the new cache exist together: up to twice the budget for a
//! moment). Logits are `[live sequences, vocab]`, never `[batch x length x vocab]`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use aha_model::{intra_op, CausalLM, KvCache, PaddedBatch, Tokenizer};

use crate::sampling::{sample_token, SampledToken, SamplingParams};
use crate::stop::StopStrings;
use crate::tools::{ToolCall, ToolExecutor, ToolResult};
use crate::{Backend, Completion, FinishReason, GenerationRequest, GroupOutput, RequestId, RolloutError};

/// Limits of one engine: how much memory and how many sequences a batch may hold.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Bytes the KV cache of all live sequences may take at their longest.
    pub kv_cache_bytes: u64,
    /// Most sequences decoded together.
    pub max_sequences: usize,
    /// Most (padded) prompt tokens prefilled in one forward pass: bounds the activations of a
    /// prefill, which grow with batch x prompt length.
    pub max_prefill_tokens: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { kv_cache_bytes: 4 << 30, max_sequences: 256, max_prefill_tokens: 16_384 }
    }
}

/// Where the time went and how much memory the cache took.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EngineStats {
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
    /// Copying logits to the host and choosing tokens.
    pub sample_seconds: f64,
    /// Re-packing the cache when sequences leave or join.
    pub repack_seconds: f64,
    /// Real prompt tokens prefilled.
    pub prefill_tokens: u64,
    /// Prefill passes (requests join the batch in these).
    pub prefills: u64,
    /// Tokens sampled for completions.
    pub completion_tokens: u64,
    /// Forward passes of one token per sequence.
    pub decode_steps: u64,
    /// Row-steps spent on sequences that had finished but not yet left the batch.
    pub idle_row_steps: u64,
    pub peak_kv_cache_bytes: u64,
    /// Tool calls run, the tokens of their results, the seconds from a call leaving the batch to
    /// its result rejoining it (summed over calls), and the model thread's time waiting for
    /// results with nothing else to decode.
    pub tool_calls: u64,
    pub tool_output_tokens: u64,
    pub tool_seconds: f64,
    pub tool_wait_seconds: f64,
}

impl EngineStats {
    /// Adds another engine's statistics (the seconds become thread-seconds; the peak caches add
    /// up, as engines side by side hold theirs at once).
    pub fn add(&mut self, other: &EngineStats) {
        self.prefill_seconds += other.prefill_seconds;
        self.decode_seconds += other.decode_seconds;
        self.sample_seconds += other.sample_seconds;
        self.repack_seconds += other.repack_seconds;
        self.prefill_tokens += other.prefill_tokens;
        self.prefills += other.prefills;
        self.completion_tokens += other.completion_tokens;
        self.decode_steps += other.decode_steps;
        self.idle_row_steps += other.idle_row_steps;
        self.peak_kv_cache_bytes += other.peak_kv_cache_bytes;
        self.tool_calls += other.tool_calls;
        self.tool_output_tokens += other.tool_output_tokens;
        self.tool_seconds += other.tool_seconds;
        self.tool_wait_seconds += other.tool_wait_seconds;
    }
}

/// Rows' work (rows x vocabulary) below which sampling stays on the calling thread: waking
/// libtorch's other threads costs a few microseconds, a 400-token row about one.
const PARALLEL_SAMPLING_WORK: usize = 1 << 14;

/// The next token of every row that is not done (`None` for those that are), from `logits`
/// `[rows, vocab]`. Rows are shared out among libtorch's intra-op threads when there is enough
/// work; each draws from its own generator, so the tokens do not depend on the split.
fn sample_rows(rows: &mut [Row], logits: &[f32], vocab: usize, params: &SamplingParams) -> Vec<Option<SampledToken>> {
    let sample = |rows: &mut [Row], logits: &[f32], out: &mut [Option<SampledToken>]| {
        for ((row, logits), out) in rows.iter_mut().zip(logits.chunks_exact(vocab)).zip(out) {
            if !row.done {
                *out = Some(sample_token(logits, params, &mut row.rng));
            }
        }
    };
    let mut tokens = vec![None; rows.len()];
    let threads = intra_op::threads();
    if threads == 1 || rows.len() * vocab < PARALLEL_SAMPLING_WORK {
        sample(rows, logits, &mut tokens);
        return tokens;
    }
    let per_task = rows.len().div_ceil(threads);
    let parts: Vec<_> =
        rows.chunks_mut(per_task).zip(logits.chunks(per_task * vocab)).zip(tokens.chunks_mut(per_task)).collect();
    intra_op::parallel_parts(parts, threads, |_, ((rows, logits), out)| sample(rows, logits, out));
    tokens
}

/// One sequence of the batch (a row of the cache).
#[derive(Clone)]
struct Row {
    request: RequestId,
    sample: usize,
    prompt_len: usize,
    /// Tokens this row holds in the cache; also the position of the next token fed to the model.
    cached: i64,
    rng: ChaCha8Rng,
    completion: Completion,
    done: bool,
    /// Tools: where in the completion to look for the next call (after the last result), and the
    /// code of a call the last token completed (the row leaves the batch until its result is in).
    scan_from: usize,
    call: Option<String>,
}

/// A sequence out of the batch while its tool call runs, with its own cache rows.
struct Paused {
    row: Row,
    cache: KvCache,
    code: String,
    since: Instant,
}

/// The engine's side of the tools: where calls go, where results come back, who waits for them.
struct EngineTools<'m> {
    executor: Arc<ToolExecutor>,
    tokenizer: &'m Tokenizer,
    reply: crossbeam_channel::Sender<(u64, ToolResult)>,
    results: crossbeam_channel::Receiver<(u64, ToolResult)>,
    paused: HashMap<u64, Paused>,
    next_call: u64,
}

struct Group {
    completions: Vec<Option<Completion>>,
    remaining: usize,
}

pub struct Engine<'m> {
    model: &'m CausalLM,
    params: SamplingParams,
    stop_strings: Option<StopStrings<'m>>,
    config: EngineConfig,
    bytes_per_token: u64,
    waiting: VecDeque<(RequestId, GenerationRequest)>,
    groups: HashMap<RequestId, Group>,
    /// The batch: row i of `cache` and of `logits` belongs to `rows[i]`.
    rows: Vec<Row>,
    cache: Option<KvCache>,
    /// Next-token logits of every row, `[rows, vocab]` fp32, waiting to be sampled.
    logits: Option<Tensor>,
    next_id: RequestId,
    stats: EngineStats,
    tools: Option<EngineTools<'m>>,
}

impl<'m> Engine<'m> {
    pub fn new(model: &'m CausalLM, params: SamplingParams, config: EngineConfig) -> Result<Self, RolloutError> {
        params.validate()?;
        if config.max_sequences == 0 || config.max_prefill_tokens == 0 {
            return Err(RolloutError::Params("max_sequences and max_prefill_tokens must be at least 1".into()));
        }
        Ok(Self {
            model,
            params,
            stop_strings: None,
            config,
            bytes_per_token: KvCache::bytes_per_token(model.config(), model.compute_kind()),
            waiting: VecDeque::new(),
            groups: HashMap::new(),
            rows: Vec::new(),
            cache: None,
            logits: None,
            next_id: 0,
            stats: EngineStats::default(),
            tools: None,
        })
    }

    /// Lets completions call the Python tool (see `tools`): code blocks are decoded with
    /// `tokenizer`, run on `executor`'s workers, and their results tokenized back in.
    pub fn with_tools(mut self, tokenizer: &'m Tokenizer, executor: Arc<ToolExecutor>) -> Self {
        let (reply, results) = crossbeam_channel::unbounded();
        self.tools = Some(EngineTools { executor, tokenizer, reply, results, paused: HashMap::new(), next_call: 0 });
        self
    }

    /// Ends completions at any of `strings` (decoded with `tokenizer`), besides the stop tokens.
    pub fn with_stop_strings(mut self, tokenizer: &'m Tokenizer, strings: Vec<String>) -> Result<Self, RolloutError> {
        let stops = StopStrings::new(tokenizer, strings)?;
        self.stop_strings = (!stops.is_empty()).then_some(stops);
        Ok(self)
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Requests queued or generating.
    pub fn in_flight(&self) -> usize {
        self.groups.len()
    }

    /// Sequences queued or generating.
    pub fn sequences_in_flight(&self) -> usize {
        self.waiting.iter().map(|(_, r)| r.n).sum::<usize>()
            + self.rows.iter().filter(|r| !r.done).count()
            + self.tools.as_ref().map_or(0, |t| t.paused.len())
    }

    /// [`Backend::poll`], which also returns (perhaps with nothing) after the step during which
    /// `stop` was set: engines working side by side stop when any of them has finished requests.
    pub fn poll_until(&mut self, stop: &AtomicBool) -> Result<Vec<GroupOutput>, RolloutError> {
        while self.in_flight() > 0 {
            let finished = self.step()?;
            if !finished.is_empty() || stop.load(Ordering::Relaxed) {
                return Ok(finished);
            }
        }
        Ok(Vec::new())
    }

    /// Queues a request; its completions come out of [`Engine::step`] once all `n` are done.
    pub fn submit(&mut self, request: GenerationRequest) -> Result<RequestId, RolloutError> {
        if request.n == 0 {
            return Err(RolloutError::Params("a request needs n >= 1".into()));
        }
        if request.prompt_ids.is_empty() {
            return Err(RolloutError::Params("a prompt needs at least one token".into()));
        }
        self.model.check_token_ids(std::slice::from_ref(&request.prompt_ids))?;
        let needed = self.planned_bytes(request.n, request.prompt_ids.len());
        if needed > self.config.kv_cache_bytes || request.n > self.config.max_sequences {
            return Err(RolloutError::Params(format!(
                "a request of {} samples of a {}-token prompt with up to {} new tokens needs {} MiB of KV cache and {} \
                 sequences; the engine allows {} MiB and {}",
                request.n,
                request.prompt_ids.len(),
                self.params.max_new_tokens,
                needed >> 20,
                request.n,
                self.config.kv_cache_bytes >> 20,
                self.config.max_sequences
            )));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.groups.insert(id, Group { completions: vec![None; request.n], remaining: request.n });
        self.waiting.push_back((id, request));
        Ok(id)
    }

    /// Cache bytes of `rows` sequences whose longest prompt has `prompt_len` tokens, at their longest.
    fn planned_bytes(&self, rows: usize, prompt_len: usize) -> u64 {
        let slots = KvCache::slots_for((prompt_len + self.params.max_new_tokens) as i64) as u64;
        rows as u64 * slots * self.bytes_per_token
    }

    /// One decoding step for the whole batch: admits waiting requests that fit, samples a token for
    /// every live sequence, retires the finished ones, and runs the model on the rest. Returns
    /// the requests whose completions are all done.
    pub fn step(&mut self) -> Result<Vec<GroupOutput>, RolloutError> {
        tch::no_grad(|| {
            let mut finished = self.resume_calls()?;
            self.admit()?;
            if self.rows.is_empty() {
                self.wait_for_calls();
                return Ok(finished);
            }
            finished.extend(self.sample()?);
            self.pause_calls();
            if self.rows.iter().all(|r| r.done) {
                self.rows.clear();
                self.cache = None;
                self.logits = None;
            } else {
                let idle = self.rows.iter().filter(|r| r.done).count();
                let cache = self.cache.as_ref().expect("a batch has a cache");
                // Re-packing copies the whole cache; computing a finished row costs one row of a
                // step. Re-pack once a quarter of the batch is idle, or when out of room.
                if idle * 4 >= self.rows.len() || cache.len() >= cache.capacity() {
                    self.repack(None)?;
                }
                self.decode();
            }
            Ok(finished)
        })
    }

    /// Takes waiting requests into the batch while they fit, prefilling them together.
    fn admit(&mut self) -> Result<(), RolloutError> {
        let paused = self.tools.iter().flat_map(|t| t.paused.values().map(|p| &p.row));
        let live: Vec<&Row> = self.rows.iter().filter(|r| !r.done).chain(paused).collect();
        let mut rows = live.len();
        let mut longest_prompt = live.iter().map(|r| r.prompt_len).max().unwrap_or(0);
        let mut admitted = 0;
        let mut prefill_width = 0;
        for (_, request) in &self.waiting {
            let width = prefill_width.max(request.prompt_ids.len());
            let prompt = longest_prompt.max(request.prompt_ids.len());
            let fits = rows + request.n <= self.config.max_sequences
                && self.planned_bytes(rows + request.n, prompt) <= self.config.kv_cache_bytes
                && (admitted == 0 || (admitted + 1) * width <= self.config.max_prefill_tokens);
            if !fits {
                break;
            }
            admitted += 1;
            rows += request.n;
            longest_prompt = prompt;
            prefill_width = width;
        }
        if admitted == 0 {
            return Ok(());
        }
        let requests: Vec<(RequestId, GenerationRequest)> = self.waiting.drain(..admitted).collect();

        let start = Instant::now();
        let device = self.model.device();
        let prompts: Vec<Vec<u32>> = requests.iter().map(|(_, r)| r.prompt_ids.clone()).collect();
        let batch = PaddedBatch::left_padded(&prompts, 0, device)?;
        let width = batch.input_ids.size()[1];
        let mut prefill = self.model.new_cache(prompts.len() as i64, width);
        let hidden = self.model.forward(&batch.input_ids, &batch.positions, batch.padding_mask(), Some(&mut prefill));
        let last = self.model.logits(&hidden.select(1, width - 1));
        self.stats.prefills += 1;
        self.stats.prefill_tokens += prompts.iter().map(|p| p.len() as u64).sum::<u64>();
        self.stats.prefill_seconds += start.elapsed().as_secs_f64();

        // Each prompt's cache rows and logits, repeated for its samples.
        let mut copies = Vec::new();
        for (i, (id, request)) in requests.into_iter().enumerate() {
            for j in 0..request.n {
                // Sample j of a request draws from ChaCha8(seed) on stream j, whatever else is in the
                // batch: results do not depend on scheduling.
                let mut rng = ChaCha8Rng::seed_from_u64(request.seed);
                rng.set_stream(j as u64);
                self.rows.push(Row {
                    request: id,
                    sample: j,
                    prompt_len: request.prompt_ids.len(),
                    cached: request.prompt_ids.len() as i64,
                    rng,
                    completion: Completion::new(vec![], vec![], FinishReason::Length),
                    done: false,
                    scan_from: 0,
                    call: None,
                });
                copies.push(i as i64);
            }
        }
        let copies = Tensor::from_slice(&copies).to_device(device);
        self.repack(Some((prefill, last, copies)))
    }

    /// Rebuilds the cache and logits with only the rows still generating, plus (when admitting)
    /// the new rows: `prefill` rows repeated by `copies`, whose `Row`s are already at the end of
    /// `self.rows`.
    fn repack(&mut self, admitted: Option<(KvCache, Tensor, Tensor)>) -> Result<(), RolloutError> {
        let start = Instant::now();
        let device = self.model.device();
        let old_rows = self.cache.as_ref().map_or(0, |c| c.batch_size() as usize);
        let keep: Vec<i64> = (0..old_rows).filter(|&i| !self.rows[i].done).map(|i| i as i64).collect();
        let keep_tokens = keep.iter().map(|&i| self.rows[i as usize].cached).max().unwrap_or(0);
        let capacity = self.rows.iter().filter(|r| !r.done).map(|r| r.prompt_len + self.params.max_new_tokens).max();
        let capacity = capacity.unwrap_or(0) as i64;

        // Logits exist between a decode and the next sampling, i.e. when admitting.
        let kept = match (&self.cache, keep.is_empty()) {
            (Some(cache), false) => {
                let rows = Tensor::from_slice(&keep).to_device(device);
                let logits = self.logits.as_ref().map(|l| l.index_select(0, &rows));
                Some((
                    cache.gather(&rows, keep_tokens, if admitted.is_some() { keep_tokens } else { capacity }),
                    logits,
                ))
            }
            _ => None,
        };
        let (cache, logits) = match (kept, admitted) {
            (Some(kept), None) => kept,
            (None, Some((prefill, last, copies))) => {
                (prefill.gather(&copies, prefill.len(), capacity), Some(last.index_select(0, &copies)))
            }
            (Some((kept, kept_logits)), Some((prefill, last, copies))) => {
                let new = prefill.index_select(&copies);
                let capacity = capacity.max(kept.len()).max(new.len());
                let kept_logits = kept_logits.expect("live rows have logits when admitting");
                let logits = Tensor::cat(&[kept_logits, last.index_select(0, &copies)], 0);
                (KvCache::concat(&[&kept, &new], capacity), Some(logits))
            }
            (None, None) => unreachable!("repack of an empty batch"),
        };
        let mut index = 0;
        self.rows.retain(|row| {
            let keep = index >= old_rows || !row.done;
            index += 1;
            keep
        });
        self.stats.peak_kv_cache_bytes = self.stats.peak_kv_cache_bytes.max(cache.bytes() as u64);
        self.cache = Some(cache);
        self.logits = logits;
        self.stats.repack_seconds += start.elapsed().as_secs_f64();
        Ok(())
    }

    /// Chooses the next token of every live row; returns the requests that this completed.
    fn sample(&mut self) -> Result<Vec<GroupOutput>, RolloutError> {
        let start = Instant::now();
        let logits = self.logits.take().expect("a batch has logits").to_device(Device::Cpu);
        let vocab = logits.size()[1] as usize;
        let host: Vec<f32> = Vec::try_from(logits.view([-1])).expect("fp32 logits");
        let tokens = sample_rows(&mut self.rows, &host, vocab, &self.params);
        let mut finished = Vec::new();
        for (row, token) in self.rows.iter_mut().zip(tokens) {
            let Some(token) = token else { continue };
            row.completion.token_ids.push(token.id);
            row.completion.logprobs.push(token.logprob);
            self.stats.completion_tokens += 1;
            let stop = self.params.stop_token_ids.contains(&token.id)
                || match &self.stop_strings {
                    Some(stops) => stops.completed_by_last(&row.completion.token_ids)?,
                    None => false,
                };
            if stop {
                row.completion.finish_reason = FinishReason::Stop;
                row.done = true;
            } else if row.completion.token_ids.len() >= self.params.max_new_tokens {
                row.done = true;
            } else if let Some(tools) = &self.tools {
                row.call = tools.completed_call(row)?;
                if row.call.is_some() {
                    row.done = true; // leaves the batch; `pause_calls` keeps its cache
                    continue;
                }
            }
            if row.done {
                finished.extend(finish_row(&mut self.groups, row));
            }
        }
        self.stats.sample_seconds += start.elapsed().as_secs_f64();
        Ok(finished)
    }

    /// Takes the rows whose last token completed a tool call out of the batch: their cache rows are
    /// copied aside and their code goes to the tool workers. (The rows themselves stay, done, until
    /// the next re-pack drops them.)
    fn pause_calls(&mut self) {
        let Some(tools) = &mut self.tools else { return };
        let Some(cache) = &self.cache else { return };
        let device = self.model.device();
        for (i, row) in self.rows.iter_mut().enumerate() {
            let Some(code) = row.call.take() else { continue };
            let index = Tensor::from_slice(&[i as i64]).to_device(device);
            let capacity = (row.prompt_len + self.params.max_new_tokens) as i64;
            let cache = cache.gather(&index, row.cached, capacity);
            let id = tools.next_call;
            tools.next_call += 1;
            tools.executor.submit(id, code.clone(), tools.reply.clone());
            tools.paused.insert(id, Paused { row: row.clone(), cache, code, since: Instant::now() });
        }
    }

    /// Brings back the sequences whose tool results are in: each result's tokens are appended to
    /// the completion (as context: log-prob 0, marked in `tool_calls`), fed through the model onto
    /// the sequence's own cache rows (with the call's last token, not fed yet), and the sequence
    /// rejoins the batch with its next-token logits. A sequence that has no room left for the
    /// result's tokens ends there (`Length`). Returns the requests that this completed.
    fn resume_calls(&mut self) -> Result<Vec<GroupOutput>, RolloutError> {
        let mut finished = Vec::new();
        let Some(tools) = &mut self.tools else { return Ok(finished) };
        let mut ready: Vec<(u64, ToolResult)> = tools.results.try_iter().collect();
        if ready.is_empty() {
            return Ok(finished);
        }
        ready.sort_by_key(|(id, _)| *id);
        let start = Instant::now();
        let device = self.model.device();
        let mut rejoining: Vec<(Row, KvCache, Tensor)> = Vec::new();
        for (id, result) in ready {
            let Paused { mut row, mut cache, code, since } =
                tools.paused.remove(&id).expect("a result of a paused call");
            let room = self.params.max_new_tokens.saturating_sub(row.completion.token_ids.len());
            let (mut tokens, output, truncated) =
                tools.executor.config().result_tokens(tools.tokenizer, &result.text)?;
            tokens.truncate(room);
            let output_start = row.completion.token_ids.len();
            row.completion.token_ids.extend_from_slice(&tokens);
            row.completion.logprobs.extend(std::iter::repeat_n(0.0, tokens.len()));
            let seconds = since.elapsed().as_secs_f64();
            row.completion.tool_calls.push(ToolCall {
                code,
                status: result.status.as_str().to_string(),
                output,
                seconds,
                output_start,
                output_tokens: tokens.len(),
                truncated,
            });
            row.scan_from = row.completion.token_ids.len();
            row.done = false;
            self.stats.tool_calls += 1;
            self.stats.tool_output_tokens += tokens.len() as u64;
            self.stats.tool_seconds += seconds;
            if row.completion.token_ids.len() >= self.params.max_new_tokens {
                row.done = true;
                finished.extend(finish_row(&mut self.groups, &row));
                continue;
            }
            let fed = row.cached as usize - row.prompt_len;
            let new: Vec<i64> = row.completion.token_ids[fed..].iter().map(|&t| i64::from(t)).collect();
            let k = new.len() as i64;
            let input = Tensor::from_slice(&new).view([1, k]).to_device(device);
            let positions = Tensor::arange_start(row.cached, row.cached + k, (Kind::Int64, device)).view([1, k]);
            let hidden = self.model.forward(&input, &positions, None, Some(&mut cache));
            let logits = self.model.logits(&hidden.select(1, k - 1));
            row.cached += k;
            self.stats.prefill_tokens += k as u64;
            rejoining.push((row, cache, logits));
        }
        self.stats.prefill_seconds += start.elapsed().as_secs_f64();
        if rejoining.is_empty() {
            return Ok(finished);
        }
        let capacity = rejoining.iter().map(|(r, _, _)| (r.prompt_len + self.params.max_new_tokens) as i64).max();
        let caches: Vec<&KvCache> = rejoining.iter().map(|(_, c, _)| c).collect();
        let joined = KvCache::concat(&caches, capacity.unwrap_or(0));
        let logits = Tensor::cat(&rejoining.iter().map(|(_, _, l)| l.shallow_clone()).collect::<Vec<_>>(), 0);
        let copies = Tensor::arange(rejoining.len() as i64, (Kind::Int64, device));
        self.rows.extend(rejoining.into_iter().map(|(row, _, _)| row));
        self.repack(Some((joined, logits, copies)))?;
        Ok(finished)
    }

    /// With nothing to decode but tool calls out, waits a little for a result (the next step
    /// takes it) instead of spinning.
    fn wait_for_calls(&mut self) {
        let Some(tools) = &mut self.tools else { return };
        if tools.paused.is_empty() {
            return;
        }
        let start = Instant::now();
        let result = tools.results.recv_timeout(Duration::from_millis(5));
        if let Ok(result) = result {
            // Put it back for `resume_calls` (this engine holds both ends).
            let _ = tools.reply.send(result);
        }
        self.stats.tool_wait_seconds += start.elapsed().as_secs_f64();
    }

    /// Feeds every row its last token and keeps the next-token logits. Rows that finished but
    /// have not left the batch yet repeat their last position; their output is ignored.
    fn decode(&mut self) {
        let start = Instant::now();
        let device = self.model.device();
        let mut tokens = Vec::with_capacity(self.rows.len());
        let mut positions = Vec::with_capacity(self.rows.len());
        for row in &mut self.rows {
            tokens.push(i64::from(*row.completion.token_ids.last().expect("sampled before decoding")));
            positions.push(row.cached);
            if row.done {
                self.stats.idle_row_steps += 1;
            } else {
                row.cached += 1;
            }
        }
        let b = self.rows.len() as i64;
        let input = Tensor::from_slice(&tokens).view([b, 1]).to_device(device);
        let positions = Tensor::from_slice(&positions).view([b, 1]).to_device(device);
        let cache = self.cache.as_mut().expect("a batch has a cache");
        self.logits = Some(self.model.next_token_logits(&input, &positions, None, cache));
        self.stats.peak_kv_cache_bytes = self.stats.peak_kv_cache_bytes.max(cache.bytes() as u64);
        self.stats.decode_steps += 1;
        self.stats.decode_seconds += start.elapsed().as_secs_f64();
    }
}

/// Hands a finished row's completion to its group; returns the group if that was its last one.
fn finish_row(groups: &mut HashMap<RequestId, Group>, row: &Row) -> Option<GroupOutput> {
    let group = groups.get_mut(&row.request).expect("a row's request is known");
    group.completions[row.sample] = Some(row.completion.clone());
    group.remaining -= 1;
    if group.remaining > 0 {
        return None;
    }
    let group = groups.remove(&row.request).expect("just seen");
    let completions = group.completions.into_iter().map(|c| c.expect("all samples done")).collect();
    Some(GroupOutput { id: row.request, completions })
}

impl EngineTools<'_> {
    /// The code of the call `row`'s last token completed, if any (and it may still call).
    fn completed_call(&self, row: &Row) -> Result<Option<String>, RolloutError> {
        let config = self.executor.config();
        if row.completion.tool_calls.len() >= config.max_calls {
            return Ok(None);
        }
        config.completed_call(self.tokenizer, &row.completion.token_ids[row.scan_from..])
    }
}

impl Backend for Engine<'_> {
    fn submit(&mut self, request: GenerationRequest) -> Result<RequestId, RolloutError> {
        Engine::submit(self, request)
    }

    fn poll(&mut self) -> Result<Vec<GroupOutput>, RolloutError> {
        self.poll_until(&AtomicBool::new(false))
    }

    fn in_flight(&self) -> usize {
        Engine::in_flight(self)
    }
}
