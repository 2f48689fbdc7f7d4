//! The rollout pool: prompts in, groups of scored completions out.
//!
//! The model thread (the caller) owns the backend and only generates. Each group that finishes is
//! handed through a crossbeam channel to reward workers, which decode its text and run the
//! checkers (the code sandbox can take seconds) while the model thread keeps generating the other
//! groups; it waits for a checker only once every group it was asked for has been generated.
//! Nothing is generated ahead of a request unless asked ([`RolloutPool::submit_ahead`]): GRPO is
//! on-policy, and a group sampled before an optimizer step comes from an older policy. A remote
//! backend's servers may generate the next step's groups while the trainer trains
//! (`rollout.max_staleness = 1`); the groups come out in the same order, with the same seeds.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;
use serde_json::{json, Value};

use aha_model::Tokenizer;
use aha_rewards::{CombinedChecker, ProblemFields};

use crate::tools::ToolCall;
use crate::{Backend, Completion, FinishReason, GenerationRequest, RequestId, RolloutError};

/// Problem fields the pool adds for the checkers (a problem file need not have them): the
/// completion's length in tokens and its finish reason.
pub const ROLLOUT_FIELDS: [&str; 2] = ["completion_tokens", "finish_reason"];

/// What a checker sees of a completion's problem: its fields plus [`ROLLOUT_FIELDS`].
pub fn checker_fields(
    problem: &ProblemFields,
    completion_tokens: usize,
    finish_reason: impl Serialize,
) -> ProblemFields {
    let mut fields = problem.clone();
    fields.insert(ROLLOUT_FIELDS[0].into(), json!(completion_tokens));
    fields.insert(ROLLOUT_FIELDS[1].into(), json!(finish_reason));
    fields
}

/// A problem ready for generation: the rendered prompt and the fields its checkers read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloutPrompt {
    pub id: String,
    pub text: String,
    #[serde(rename = "sample")]
    pub fields: ProblemFields,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoredCompletion {
    pub token_ids: Vec<u32>,
    /// The completion decoded without special tokens (what the checkers saw).
    pub text: String,
    pub logprobs: Vec<f32>,
    pub finish_reason: FinishReason,
    /// The tool calls it made, with where their results' tokens are (context, not trained on).
    pub tool_calls: Vec<ToolCall>,
    /// Each checker's reward by label; `None` when that checker skipped the problem.
    pub rewards: BTreeMap<String, Option<f64>>,
    /// The weighted total; `None` when some checker skipped (the problem cannot be judged).
    pub reward: Option<f64>,
    /// What the checkers extracted and why they decided as they did.
    pub detail: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoredGroup {
    /// Position of the group in the pool's whole history (0, 1, 2, ...).
    pub index: u64,
    pub prompt: RolloutPrompt,
    pub prompt_ids: Vec<u32>,
    /// The seed its completions were sampled with.
    pub seed: u64,
    pub completions: Vec<ScoredCompletion>,
}

impl ScoredGroup {
    /// The total rewards, or `None` if any completion could not be judged.
    pub fn rewards(&self) -> Option<Vec<f64>> {
        self.completions.iter().map(|c| c.reward).collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// G: completions per prompt.
    pub group_size: usize,
    /// Group k is sampled with seed `seed + k`: a run is reproducible, and a resumed run continues
    /// the same sequence of seeds.
    pub seed: u64,
    /// Threads running the reward checkers.
    pub reward_workers: usize,
    /// Prompts longer than this many tokens are skipped (with one warning and a count), not cut:
    /// a truncated problem may no longer have its answer.
    pub max_prompt_tokens: usize,
    /// How many distinct prompts the source cycles through (a dataset's size), when it repeats
    /// them: once that many distinct prompts, or twice that many prompts, have been skipped in a
    /// row, none is usable and `next_groups` fails instead of reading the source forever. `None`
    /// for a source that ends by itself.
    pub distinct_prompts: Option<usize>,
    /// Count the tokens of tool results in the `completion_tokens` the checkers see (length
    /// penalties). Default false: only the model's own tokens.
    pub tool_output_in_length: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            group_size: 8,
            seed: 0,
            reward_workers: 2,
            max_prompt_tokens: 1024,
            distinct_prompts: None,
            tool_output_in_length: false,
        }
    }
}

/// Counters since the pool was created.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PoolStats {
    pub groups: u64,
    pub skipped_long_prompts: u64,
    /// Model-thread time spent generating.
    pub generation_seconds: f64,
    /// Model-thread time spent waiting for checkers after generation was done.
    pub reward_wait_seconds: f64,
    /// Checker time summed over the workers.
    pub reward_seconds: f64,
}

struct Job {
    index: u64,
    prompt: RolloutPrompt,
    prompt_ids: Vec<u32>,
    seed: u64,
    completions: Vec<Completion>,
    tool_output_in_length: bool,
}

type JobResult = (Result<ScoredGroup, RolloutError>, f64);

pub struct RolloutPool<B: Backend, P: Iterator<Item = RolloutPrompt>> {
    backend: B,
    prompts: P,
    tokenizer: Arc<Tokenizer>,
    config: PoolConfig,
    jobs: Option<Sender<Job>>,
    results: Receiver<JobResult>,
    workers: Vec<JoinHandle<()>>,
    next_index: u64,
    stats: PoolStats,
    /// Prompts skipped since the last usable one, and their distinct ids.
    skipped_in_a_row: usize,
    skipped_ids: HashSet<String>,
    /// Requests submitted ahead of `next_groups`, oldest first, and the groups of those that
    /// have finished.
    ahead: VecDeque<(RequestId, Submitted)>,
    finished_ahead: HashMap<RequestId, Vec<Completion>>,
}

/// What the pool remembers of a submitted request: group index, prompt, its ids, seed.
type Submitted = (u64, RolloutPrompt, Vec<u32>, u64);

impl<B: Backend, P: Iterator<Item = RolloutPrompt>> RolloutPool<B, P> {
    /// `first_index` is the number of groups drawn before (0 for a new run; the saved count when
    /// resuming), which fixes the seeds of what comes next.
    pub fn new(
        backend: B,
        prompts: P,
        tokenizer: Arc<Tokenizer>,
        checker: Arc<CombinedChecker>,
        config: PoolConfig,
        first_index: u64,
    ) -> Result<Self, RolloutError> {
        if config.group_size == 0 || config.reward_workers == 0 {
            return Err(RolloutError::Params("group_size and reward_workers must be at least 1".into()));
        }
        let (jobs, job_queue) = crossbeam_channel::unbounded::<Job>();
        let (result_sender, results) = crossbeam_channel::unbounded();
        let workers = (0..config.reward_workers)
            .map(|i| {
                let job_queue = job_queue.clone();
                let results = result_sender.clone();
                let tokenizer = Arc::clone(&tokenizer);
                let checker = Arc::clone(&checker);
                std::thread::Builder::new()
                    .name(format!("reward-{i}"))
                    .spawn(move || {
                        for job in job_queue {
                            let start = Instant::now();
                            let scored = score(job, &tokenizer, &checker);
                            if results.send((scored, start.elapsed().as_secs_f64())).is_err() {
                                break;
                            }
                        }
                    })
                    .expect("spawn a reward worker")
            })
            .collect();
        Ok(Self {
            backend,
            prompts,
            tokenizer,
            config,
            jobs: Some(jobs),
            results,
            workers,
            next_index: first_index,
            stats: PoolStats::default(),
            skipped_in_a_row: 0,
            skipped_ids: HashSet::new(),
            ahead: VecDeque::new(),
            finished_ahead: HashMap::new(),
        })
    }

    pub fn stats(&self) -> &PoolStats {
        &self.stats
    }

    /// Groups drawn so far (including those of earlier sessions of a resumed run).
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// The generation backend (to hand a remote one new weights).
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// The prompt source, for what it counts or keeps (the trainer's counts its problems).
    pub fn prompts(&self) -> &P {
        &self.prompts
    }

    /// Generates and scores groups for the next `count` prompts, in prompt order: first those
    /// submitted ahead, then new ones. Fewer come back only when the prompts run out; an error
    /// when a repeating source has no usable prompt (see [`PoolConfig::distinct_prompts`]).
    pub fn next_groups(&mut self, count: usize) -> Result<Vec<ScoredGroup>, RolloutError> {
        let start = Instant::now();
        let mut pending: HashMap<RequestId, Submitted> = HashMap::new();
        let mut ready = Vec::new();
        while pending.len() + ready.len() < count {
            let Some((id, submitted)) = self.ahead.pop_front() else { break };
            match self.finished_ahead.remove(&id) {
                Some(completions) => ready.push((submitted, completions)),
                None => {
                    pending.insert(id, submitted);
                }
            }
        }
        while pending.len() + ready.len() < count {
            let Some((id, submitted)) = self.submit_next()? else { break };
            pending.insert(id, submitted);
        }
        let submitted = pending.len() + ready.len();
        let jobs = self.jobs.as_ref().expect("workers run until the pool is dropped");
        let tool_output_in_length = self.config.tool_output_in_length;
        for ((index, prompt, prompt_ids, seed), completions) in ready {
            let job = Job { index, prompt, prompt_ids, seed, completions, tool_output_in_length };
            jobs.send(job).map_err(|_| RolloutError::Backend("the reward workers stopped".into()))?;
        }
        while !pending.is_empty() {
            let finished = self.backend.poll()?;
            if finished.is_empty() {
                return Err(RolloutError::Backend("the backend stopped with requests outstanding".into()));
            }
            for group in finished {
                let Some((index, prompt, prompt_ids, seed)) = pending.remove(&group.id) else {
                    if self.ahead.iter().any(|(id, _)| *id == group.id) {
                        self.finished_ahead.insert(group.id, group.completions);
                        continue;
                    }
                    return Err(RolloutError::Backend(format!("unknown request {}", group.id)));
                };
                let job =
                    Job { index, prompt, prompt_ids, seed, completions: group.completions, tool_output_in_length };
                jobs.send(job).map_err(|_| RolloutError::Backend("the reward workers stopped".into()))?;
            }
        }
        self.stats.generation_seconds += start.elapsed().as_secs_f64();

        let waiting = Instant::now();
        let mut groups = Vec::with_capacity(submitted);
        let mut first_error = None;
        for _ in 0..submitted {
            let (scored, seconds) =
                self.results.recv().map_err(|_| RolloutError::Backend("the reward workers stopped".into()))?;
            self.stats.reward_seconds += seconds;
            match scored {
                Ok(group) => groups.push(group),
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        self.stats.reward_wait_seconds += waiting.elapsed().as_secs_f64();
        if let Some(error) = first_error {
            return Err(error);
        }
        groups.sort_by_key(|g| g.index);
        self.stats.groups += groups.len() as u64;
        Ok(groups)
    }

    /// Submits the next `count` prompts without waiting for them: the backend generates them
    /// while the caller does something else, and [`RolloutPool::next_groups`] returns them first.
    pub fn submit_ahead(&mut self, count: usize) -> Result<(), RolloutError> {
        for _ in 0..count {
            let Some(next) = self.submit_next()? else { break };
            self.ahead.push_back(next);
        }
        Ok(())
    }

    /// Requests submitted ahead and not yet returned by `next_groups`.
    pub fn submitted_ahead(&self) -> usize {
        self.ahead.len()
    }

    /// Submits the next usable prompt's group; `None` when the prompts have run out.
    fn submit_next(&mut self) -> Result<Option<(RequestId, Submitted)>, RolloutError> {
        loop {
            let Some(prompt) = self.prompts.next() else { return Ok(None) };
            let prompt_ids = self.tokenizer.encode(&prompt.text)?;
            if prompt_ids.is_empty() || prompt_ids.len() > self.config.max_prompt_tokens {
                self.skip(&prompt, prompt_ids.len())?;
                continue;
            }
            if self.skipped_in_a_row > 0 {
                self.skipped_in_a_row = 0;
                self.skipped_ids.clear();
            }
            let index = self.next_index;
            self.next_index += 1;
            let seed = self.config.seed.wrapping_add(index);
            let id = self.backend.submit(GenerationRequest {
                prompt_ids: prompt_ids.clone(),
                n: self.config.group_size,
                seed,
            })?;
            return Ok(Some((id, (index, prompt, prompt_ids, seed))));
        }
    }

    /// Counts a prompt that cannot be generated from (empty, or over `max_prompt_tokens`): the
    /// first one is named in a warning, the rest only counted (`PoolStats::skipped_long_prompts`).
    fn skip(&mut self, prompt: &RolloutPrompt, tokens: usize) -> Result<(), RolloutError> {
        let limit = self.config.max_prompt_tokens;
        if self.stats.skipped_long_prompts == 0 {
            tracing::warn!(
                "skipping prompts that are empty or longer than max_prompt_tokens ({limit}); the first is {} \
                 ({tokens} tokens), the rest are only counted",
                prompt.id
            );
        }
        self.stats.skipped_long_prompts += 1;
        self.skipped_in_a_row += 1;
        self.skipped_ids.insert(prompt.id.clone());
        if let Some(distinct) = self.config.distinct_prompts {
            // Within any 2n prompts in a row of a source that repeats n prompts lies a whole pass.
            if self.skipped_ids.len() >= distinct || self.skipped_in_a_row >= 2 * distinct.max(1) {
                return Err(RolloutError::NoUsablePrompt { distinct, limit });
            }
        }
        Ok(())
    }
}

impl<B: Backend, P: Iterator<Item = RolloutPrompt>> Drop for RolloutPool<B, P> {
    fn drop(&mut self) {
        self.jobs = None; // closes the queue: the workers finish and exit
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// Decodes and judges every completion of a group. The checkers also see the completion's token
/// count and finish reason (`completion_tokens`, `finish_reason`), which only the rollout knows.
fn score(job: Job, tokenizer: &Tokenizer, checker: &CombinedChecker) -> Result<ScoredGroup, RolloutError> {
    let Job { index, prompt, prompt_ids, seed, completions, tool_output_in_length } = job;
    let scored = completions
        .into_iter()
        .map(|completion| {
            let text = tokenizer.decode(&completion.token_ids, true)?;
            let mut length = completion.token_ids.len();
            if !tool_output_in_length {
                length -= completion.tool_output_tokens();
            }
            let fields = checker_fields(&prompt.fields, length, completion.finish_reason);
            let breakdown = checker
                .breakdown(&text, &fields)
                .map_err(|e| RolloutError::Reward { prompt: prompt.id.clone(), message: e.to_string() })?;
            let rewards =
                breakdown.parts.iter().map(|(label, _, verdict)| (label.clone(), verdict.reward_value())).collect();
            let detail: BTreeMap<&str, &Value> =
                breakdown.parts.iter().map(|(label, _, verdict)| (label.as_str(), &verdict.detail)).collect();
            Ok(ScoredCompletion {
                detail: json!(detail),
                reward: breakdown.total,
                rewards,
                text,
                token_ids: completion.token_ids,
                logprobs: completion.logprobs,
                finish_reason: completion.finish_reason,
                tool_calls: completion.tool_calls,
            })
        })
        .collect::<Result<Vec<_>, RolloutError>>()?;
    Ok(ScoredGroup { index, prompt, prompt_ids, seed, completions: scored })
}
