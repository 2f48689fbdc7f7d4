//! GRPO's step (`aha train`): sample groups, score them, turn rewards into advantages, take an
//! optimizer step. The run around the steps (resume, evaluation, metrics, checkpoints) is the
//! skeleton `aha sft` shares (`run_loop.rs`).
//!
//! ```text
//! for step in 1..=steps:                                  # run_loop.rs
//!     groups  = pool.next_groups(prompts_per_step)        # aha-rollout: generate, then checkers
//!     (dynamic sampling: drop groups whose rewards are all equal, sample more, up to a cap)
//!     A       = group-relative advantages of the rewards   # advantages.rs
//!     stats   = train_step(policy, batch, A, lr(step))     # step.rs: the loss of loss.rs
//!     metrics.jsonl += one line; traces.sqlite += the groups; maybe a checkpoint
//! ```
//!
//! The policy's weights are shared by the generation engine and the optimizer: after a step the
//! next group is sampled from the updated policy, as on-policy GRPO requires. A resumed run loads
//! the latest checkpoint's weights and optimizer state and skips the problems and sampling seeds
//! it had used, so it continues as if it had not stopped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Map, Value};

use aha_datasets::{Dataset, Problem, ProblemSource, Prompter};
use aha_model::{CausalLM, Tokenizer};
use aha_rewards::{Checker, CombinedChecker, Registry};
use aha_rollout::{
    tool_output_mask, Backend, FinishReason, PoolConfig, RemoteBackend, RolloutError, RolloutPool, RolloutPrompt,
    SamplingParams, ScoredGroup, ShardedEngine, ToolExecutor, ROLLOUT_FIELDS,
};
use aha_traces::{TraceCompletion, TraceGroup, TraceWriter};

use crate::advantages::{compute_advantages, DynamicSampling};
use crate::config::{BackendKind, CheckerConfig, TrainConfig};
use crate::error::{GrpoError, Result};
use crate::evaluation::{EvalSettings, HeldOut};
use crate::optim::AdamW;
use crate::run_dir::{RunDir, TrainerState};
pub use crate::run_loop::TrainOutcome;
use crate::run_loop::{Run, RunSchedule, Training};
use crate::step::{train_step, StepSettings, StepStats, TrainBatch, TrainSequence};
use crate::weight_sync::WeightSyncer;

/// Trains as `config` says, in a new run directory, or continues the run in
/// `config.run.output_dir` when `resume`. `on_step` sees each step's metrics line. Checkers are
/// aha-rewards' built-ins; [`train_with_checkers`] takes your own registry.
pub fn train(config: TrainConfig, resume: bool, on_step: impl FnMut(&Value)) -> Result<TrainOutcome> {
    train_with_checkers(config, resume, &Registry::with_builtins(), on_step)
}

/// [`train`] with the checkers of `registry` (built-ins plus your own `register`ed ones).
pub fn train_with_checkers(
    config: TrainConfig,
    resume: bool,
    registry: &Registry,
    on_step: impl FnMut(&Value),
) -> Result<TrainOutcome> {
    let run = Run::begin(&config.run.output_dir, &config.to_toml_string(), resume, run_schedule(&config))?;
    if let Some(done) = run.already_done() {
        return Ok(done);
    }

    let policy = run.model(&config.model, config.lora.as_ref(), config.run.seed)?;
    // With LoRA the reference is the policy's own base (adapters off): no second copy.
    let reference = if config.grpo.beta > 0.0 && policy.lora().is_none() {
        Some(CausalLM::load(&config.model.path, config.model.load_options(false))?)
    } else {
        None
    };
    // With LoRA and `merge_for_generation`, generation runs on a copy with the adapters merged
    // in (refreshed after every update); by default, through the adapters.
    let merged = policy.lora().filter(|lora| lora.merge_for_generation).map(|_| policy.merged_copy()).transpose()?;
    let tokenizer = Arc::new(Tokenizer::from_dir(&config.model.path, policy.config().vocab_size)?);
    let optimizer = run.optimizer(&policy, config.optim.adamw())?;

    let checker = Arc::new(build_checker(&config, registry)?);
    let (train_set, eval_set) = load_problems(&config, &checker)?;
    warn_skipped_rows(&config, &train_set);
    let prompts = PromptFeed::new(&config, &train_set, run.state().problems_drawn)?;
    let sampler = merged.as_ref().unwrap_or(&policy);
    let backend = generation_backend(&config, sampler, &tokenizer)?;
    let syncer = match config.rollout.backend {
        BackendKind::Engine => None,
        BackendKind::Vllm | BackendKind::Sglang => {
            let method = config.rollout.sync_method();
            Some(WeightSyncer::new(method, &config.rollout.sync_dir, config.rollout.sync_every, &tokenizer)?)
        }
    };
    let held_out = held_out(&config, &eval_set, &tokenizer)?;
    let pool_config = PoolConfig {
        group_size: config.sampling.group_size,
        seed: config.run.seed,
        reward_workers: match config.rewards.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            workers => workers,
        },
        max_prompt_tokens: config.sampling.max_prompt_tokens,
        distinct_prompts: Some(train_set.problems.len()),
        tool_output_in_length: config.tools.python.count_output_in_length,
    };
    let pool = RolloutPool::new(
        backend,
        prompts,
        Arc::clone(&tokenizer),
        Arc::clone(&checker),
        pool_config,
        run.state().groups_sampled,
    )?;
    let traces = TraceWriter::open(&run.dir().traces_path(), Some(run.state().step)).map_err(trace_error)?;

    let training = GrpoTraining {
        config: &config,
        policy: &policy,
        sampler,
        reference,
        tokenizer: &tokenizer,
        checker: &checker,
        optimizer,
        pool,
        syncer,
        ahead_version: None,
        consumed: None,
        held_out,
        traces,
        settings: StepSettings::from_config(&config),
        labels: config.rewards.checkers.iter().map(CheckerConfig::reported_label).collect(),
    };
    run.train(training, on_step)
}

fn run_schedule(config: &TrainConfig) -> RunSchedule {
    RunSchedule {
        steps: config.run.steps,
        eval_every: config.run.eval_every,
        save_every: config.run.save_every,
        keep_last: config.run.keep_last,
        lr: config.lr_schedule(),
        seed: config.run.seed,
    }
}

fn warn_skipped_rows(config: &TrainConfig, train_set: &Dataset) {
    for skipped in train_set.skipped.iter().take(10) {
        tracing::warn!("{skipped}");
    }
    if !train_set.skipped.is_empty() {
        tracing::warn!(
            "{}: {} rows skipped; data.strict = true makes them errors",
            config.data.source,
            train_set.skipped.len()
        );
    }
}

/// Where groups are generated, sampling as `[sampling]` says: aha's engine over the policy's
/// weights, or the servers of `[rollout]`.
fn generation_backend<'a>(
    config: &TrainConfig,
    policy: &'a CausalLM,
    tokenizer: &'a Tokenizer,
) -> Result<Box<dyn Backend + 'a>> {
    let sampling = &config.sampling;
    let params = SamplingParams {
        temperature: sampling.temperature,
        top_p: sampling.top_p,
        top_k: sampling.top_k,
        min_p: sampling.min_p,
        max_new_tokens: sampling.max_new_tokens,
        stop_token_ids: policy.config().eos_token_ids.clone(),
    };
    let python = &config.tools.python;
    let tools = python.enable.then(|| ToolExecutor::new(python.clone())).transpose()?;
    if let Some(remote) = config.rollout.remote(&sampling.stop_strings) {
        let servers = RemoteBackend::new(remote, params)?;
        return Ok(Box::new(match tools {
            Some(executor) => servers.with_tools(tokenizer.clone(), executor),
            None => servers,
        }));
    }
    let engine = ShardedEngine::new(policy, params, config.sampling.engine())?
        .with_stop_strings(tokenizer, sampling.stop_strings.clone())?;
    Ok(Box::new(match tools {
        Some(executor) => engine.with_tools(tokenizer, executor),
        None => engine,
    }))
}

/// The held-out problems of the evaluation every `run.eval_every` steps; `None` when there
/// are none or it is off.
fn held_out(config: &TrainConfig, eval_set: &Dataset, tokenizer: &Tokenizer) -> Result<Option<HeldOut>> {
    if eval_set.is_empty() || config.run.eval_every == 0 {
        return Ok(None);
    }
    let prompter = Prompter::new(&config.data.template, &config.model.path).map_err(data_error)?;
    Ok(Some(HeldOut::new(&eval_set.problems, &prompter, tokenizer, config.sampling.max_prompt_tokens)?))
}

/// The training prompts in the run's order (seeded epochs, or the file's order over and over),
/// from the problem after the last one used. The feed counts the problems it hands out (the data
/// cursor a checkpoint saves). A problem the template cannot render ends the feed and keeps the
/// error, so that the run stops on it rather than training on fewer prompts.
struct PromptFeed<'a> {
    problems: Box<dyn Iterator<Item = &'a Problem> + 'a>,
    prompter: Prompter,
    drawn: u64,
    template_error: Option<String>,
}

impl<'a> PromptFeed<'a> {
    /// The feed after the first `drawn` problems.
    fn new(config: &TrainConfig, train_set: &'a Dataset, drawn: u64) -> Result<Self> {
        let prompter = Prompter::new(&config.data.template, &config.model.path).map_err(data_error)?;
        let problems: Box<dyn Iterator<Item = &'a Problem> + 'a> = if config.data.shuffle {
            Box::new(train_set.epochs(config.run.seed).map(|(_, problem)| problem))
        } else {
            Box::new(train_set.problems.iter().cycle())
        };
        Ok(Self { problems: Box::new(problems.skip(drawn as usize)), prompter, drawn, template_error: None })
    }

    fn template_error(&self) -> Option<&str> {
        self.template_error.as_deref()
    }
}

impl Iterator for PromptFeed<'_> {
    type Item = RolloutPrompt;

    fn next(&mut self) -> Option<RolloutPrompt> {
        if self.template_error.is_some() {
            return None;
        }
        let problem = self.problems.next()?;
        self.drawn += 1;
        match self.prompter.render(problem) {
            Ok(text) => Some(RolloutPrompt { id: problem.id.clone(), text, fields: problem.fields.clone() }),
            Err(error) => {
                self.template_error = Some(error.to_string());
                None
            }
        }
    }
}

/// GRPO's part of the run loop: what it builds once and what each step does with it.
struct GrpoTraining<'a> {
    config: &'a TrainConfig,
    policy: &'a CausalLM,
    /// The model generation and evaluation run on: the policy, or under LoRA its merged copy.
    sampler: &'a CausalLM,
    reference: Option<CausalLM>,
    tokenizer: &'a Tokenizer,
    checker: &'a CombinedChecker,
    optimizer: AdamW,
    pool: RolloutPool<Box<dyn Backend + 'a>, PromptFeed<'a>>,
    /// For a remote backend: hands the servers each update.
    syncer: Option<WeightSyncer>,
    /// With `rollout.max_staleness = 1`: the policy version that is generating the next step's
    /// groups, and the data cursor (problems drawn, groups sampled) before they were submitted,
    /// which is what a checkpoint saves (a resumed run generates them again).
    ahead_version: Option<u64>,
    consumed: Option<(u64, u64)>,
    held_out: Option<HeldOut>,
    traces: TraceWriter,
    settings: StepSettings,
    /// The checkers' labels in `[rewards]` order (the first is the correctness checker).
    labels: Vec<String>,
}

/// A group with the rewards its advantages are computed from (see [`shaped_rewards`]).
type JudgedGroup = (ScoredGroup, Vec<f64>);

/// The groups a step trains on, with how they were sampled.
struct SampledGroups {
    groups: Vec<ScoredGroup>,
    /// The rewards advantages are computed from, per group (see [`shaped_rewards`]).
    rewards: Vec<Vec<f64>>,
    /// Groups left out because a checker could not judge them.
    unjudged: usize,
    /// Groups dynamic sampling dropped (no signal, or beyond the target).
    dropped: usize,
    /// Generation batches it took (1 without dynamic sampling).
    batches: usize,
}

impl Training for GrpoTraining<'_> {
    /// The step's groups for traces.sqlite.
    type Record = Vec<TraceGroup>;

    fn step(&mut self, step: u64, lr: f64) -> Result<(Value, Vec<TraceGroup>)> {
        let step_started = Instant::now();
        // A remote backend's servers get the policy before they generate from it (and before
        // the first step: they start from whatever they were launched with); with
        // `rollout.max_staleness = 1` this step's groups were generated during the last one.
        let mut sync_metrics = self.sync_weights(step - 1)?;
        let sampled_by = self.ahead_version.take().or_else(|| self.syncer.as_ref().and_then(WeightSyncer::served));
        let generation_before = self.pool.stats().clone();
        let sampled = self.sample_groups(step)?;
        if self.config.rollout.max_staleness > 0 {
            self.consumed = Some((self.pool.prompts().drawn, self.pool.next_index()));
            sync_metrics.extend(self.sync_weights(step - 1)?);
            self.pool.submit_ahead(self.config.sampling.prompts_per_step)?;
            self.ahead_version = self.syncer.as_ref().and_then(WeightSyncer::served);
        }
        let advantages = compute_advantages(&sampled.rewards, self.config.grpo.scale_rewards)?;
        let generation = self.pool.stats().clone();

        let train_started = Instant::now();
        let batch = train_batch(&sampled.groups, &advantages.advantages);
        let stats = train_step(self.policy, self.reference.as_ref(), &mut self.optimizer, &batch, &self.settings, lr)?;
        if !std::ptr::eq(self.sampler, self.policy) {
            self.policy.merge_into(self.sampler);
        }
        let train_seconds = train_started.elapsed().as_secs_f64();

        let mut metrics = step_metrics(StepRecord {
            step,
            labels: &self.labels,
            sampled: &sampled,
            frac_reward_zero_std: advantages.frac_reward_zero_std,
            stats: &stats,
            generation_seconds: generation.generation_seconds - generation_before.generation_seconds,
            reward_wait_seconds: generation.reward_wait_seconds - generation_before.reward_wait_seconds,
            reward_seconds: generation.reward_seconds - generation_before.reward_seconds,
            train_seconds,
            step_seconds: step_started.elapsed().as_secs_f64(),
        });
        if let Some(version) = sampled_by {
            metrics["sampled_by_version"] = json!(version);
        }
        metrics.as_object_mut().expect("an object").extend(sync_metrics);
        Ok((metrics, trace_groups(step, &sampled.groups, &advantages.advantages, sampled_by)))
    }

    /// Accuracy on the held-out problems: greedy, or sampled at `run.eval_temperature`.
    fn evaluate(&mut self) -> Result<Map<String, Value>> {
        let Some(held_out) = &self.held_out else { return Ok(Map::new()) };
        let (run, sampling) = (&self.config.run, &self.config.sampling);
        let settings = EvalSettings {
            temperature: run.eval_temperature,
            max_new_tokens: sampling.max_new_tokens,
            samples: run.eval_samples,
            seed: run.eval_seed,
            stop_strings: sampling.stop_strings.clone(),
            engine: sampling.engine(),
            tools: self.config.tools.python.clone(),
        };
        let correctness_label = self.labels.first().map(String::as_str);
        let report = held_out.evaluate(self.sampler, self.tokenizer, self.checker, correctness_label, &settings)?;
        Ok(report.metrics())
    }

    fn record(&mut self, groups: Vec<TraceGroup>) -> Result<()> {
        self.traces.write(groups).map_err(trace_error)
    }

    fn state(&mut self, step: u64) -> Result<TrainerState> {
        // Traces first: a checkpoint promises that everything up to its step is recorded.
        self.traces.flush().map_err(trace_error)?;
        let (problems_drawn, groups_sampled) =
            self.consumed.unwrap_or((self.pool.prompts().drawn, self.pool.next_index()));
        Ok(TrainerState { step, problems_drawn, groups_sampled, version: env!("CARGO_PKG_VERSION").into() })
    }

    fn model(&self) -> &CausalLM {
        self.policy
    }

    fn optimizer(&self) -> &AdamW {
        &self.optimizer
    }

    fn finish(self, run: &RunDir) -> Result<()> {
        let skipped = self.pool.stats().skipped_long_prompts;
        if skipped > 0 {
            tracing::warn!(
                "{}: {skipped} prompts skipped, longer than sampling.max_prompt_tokens = {} tokens (or empty)",
                self.config.data.source,
                self.config.sampling.max_prompt_tokens
            );
        }
        drop(self.pool);
        self.traces.close().map_err(trace_error)?;
        run.write_report()?;
        Ok(())
    }
}

impl GrpoTraining<'_> {
    /// Hands a remote backend's servers the weights after `version` optimizer steps, when due
    /// and none of their requests is in flight; the sync's metrics.
    fn sync_weights(&mut self, version: u64) -> Result<Map<String, Value>> {
        let Some(syncer) = self.syncer.as_mut() else { return Ok(Map::new()) };
        if self.pool.submitted_ahead() > 0 || !syncer.due(version) {
            return Ok(Map::new());
        }
        let backend = self.pool.backend_mut().weight_sync().expect("a remote backend syncs weights");
        syncer.sync(backend, self.sampler, version)
    }

    /// Samples until the step has its groups: `sampling.prompts_per_step` judged ones, or, with
    /// dynamic sampling, as many whose rewards differ, within `grpo.max_extra_batches` more
    /// generation batches.
    fn sample_groups(&mut self, step: u64) -> Result<SampledGroups> {
        let wanted = self.config.sampling.prompts_per_step;
        let (mut judged, mut unjudged) = self.judged_groups(wanted)?;
        let (mut dropped, mut batches) = (0, 1);
        if self.config.grpo.dynamic_sampling {
            // Dynamic sampling looks at a group's rewards to keep it; a kept group keeps them too.
            let offer = |judged: Vec<JudgedGroup>| {
                judged.into_iter().map(|(group, rewards)| ((group, rewards.clone()), rewards))
            };
            let mut kept = DynamicSampling::new(wanted, self.config.grpo.max_extra_batches);
            kept.add_batch(offer(judged));
            while kept.wants_more() {
                let (more, left_out) = self.judged_groups(wanted)?;
                unjudged += left_out;
                kept.add_batch(offer(more));
            }
            (dropped, batches) = (kept.dropped(), kept.batches());
            judged = kept.into_groups();
        }
        let (groups, rewards): (Vec<ScoredGroup>, Vec<Vec<f64>>) = judged.into_iter().unzip();
        if groups.is_empty() {
            return Err(GrpoError::Data(format!(
                "step {step}: no group to train on (every problem was unjudged, or dynamic sampling found no group \
                 whose rewards differ within grpo.max_extra_batches)"
            )));
        }
        Ok(SampledGroups { groups, rewards, unjudged, dropped, batches })
    }

    /// The next `count` groups from the pool, each with its shaped rewards, and how many were left
    /// out because a checker could not judge them.
    fn judged_groups(&mut self, count: usize) -> Result<(Vec<JudgedGroup>, usize)> {
        let source = &self.config.data.source;
        let batch = self.pool.next_groups(count).map_err(|e| match e {
            RolloutError::NoUsablePrompt { distinct, limit } => GrpoError::Data(format!(
                "{source}: no usable problem: the prompts of all {distinct} are longer than \
                 sampling.max_prompt_tokens = {limit} tokens (or empty)"
            )),
            other => other.into(),
        })?;
        if let Some(message) = self.pool.prompts().template_error() {
            return Err(GrpoError::Data(format!("data.template: {message}")));
        }
        if batch.is_empty() {
            return Err(GrpoError::Data(format!(
                "{source}: no usable problems (all skipped, or every prompt is longer than sampling.max_prompt_tokens)"
            )));
        }
        let mut judged = Vec::with_capacity(batch.len());
        let mut unjudged = 0;
        for group in batch {
            match shaped_rewards(self.config, &group) {
                Some(rewards) => judged.push((group, rewards)),
                None => {
                    unjudged += 1;
                    tracing::warn!(prompt = %group.prompt.id, "a checker could not judge this problem; its group is left out");
                }
            }
        }
        Ok((judged, unjudged))
    }
}

/// One sequence per completion, with its group-relative advantage and sampling log-probs.
fn train_batch(groups: &[ScoredGroup], advantages: &[Vec<f64>]) -> TrainBatch {
    TrainBatch {
        sequences: groups
            .iter()
            .zip(advantages)
            .flat_map(|(group, advantages)| {
                group.completions.iter().zip(advantages).map(|(c, &a)| TrainSequence {
                    prompt_ids: group.prompt_ids.clone(),
                    completion_ids: c.token_ids.clone(),
                    advantage: a as f32,
                    old_logprobs: Some(c.logprobs.clone()),
                    truncated: c.finish_reason == FinishReason::Length,
                    tool_output: tool_output_mask(c.token_ids.len(), &c.tool_calls),
                })
            })
            .collect(),
    }
}

/// The weighted checkers of `[rewards]`, built from `registry`.
pub fn build_checker(config: &TrainConfig, registry: &Registry) -> Result<CombinedChecker> {
    registry.build_combined(&config.rewards.to_reward_config()).map_err(|e| GrpoError::Config(format!("rewards: {e}")))
}

/// The training and evaluation problems of `[data]`, with the fields `checker` reads.
pub fn load_problems(config: &TrainConfig, checker: &CombinedChecker) -> Result<(Dataset, Dataset)> {
    // What the problems must carry: the checkers' fields, except those the rollout adds.
    let required_fields: Vec<String> =
        checker.required_fields().into_iter().filter(|f| !ROLLOUT_FIELDS.contains(&f.as_str())).collect();
    let required_fields = &required_fields;
    let data = &config.data;
    let source = ProblemSource {
        source: data.source.clone(),
        preset: data.preset.clone(),
        fields: data.fields.clone(),
        strict: data.strict,
        limit: None,
    };
    let dataset = source.load(required_fields, config.run.seed).map_err(data_error)?;
    if dataset.is_empty() {
        return Err(GrpoError::Data(format!("{}: no problems ({})", data.source, dataset.why_empty())));
    }
    match &data.eval_source {
        Some(eval) => {
            let eval_source =
                ProblemSource { source: eval.clone(), limit: Some(data.eval_count).filter(|&n| n > 0), ..source };
            // A different default seed: a built-in eval set must not repeat the training problems.
            let eval_set = eval_source.load(required_fields, config.run.seed ^ 0x5EED).map_err(data_error)?;
            let (dataset, left_out) = dataset.without_questions_of(&eval_set);
            if left_out > 0 {
                tracing::info!("{left_out} training problems left out: their question is also an evaluation question");
            }
            Ok((dataset, eval_set))
        }
        None if data.eval_count > 0 => {
            dataset.split(aha_datasets::SplitSize::Count(data.eval_count), config.run.seed).map_err(data_error)
        }
        None => Ok((dataset, Dataset::default())),
    }
}

/// The rewards the advantages are computed from: the checkers' totals, plus DAPO's soft overlong
/// penalty when configured. `None` when a checker could not judge the problem.
fn shaped_rewards(config: &TrainConfig, group: &ScoredGroup) -> Option<Vec<f64>> {
    let rewards = group.rewards()?;
    Some(match &config.grpo.overlong_penalty {
        Some(penalty) => rewards
            .iter()
            .zip(&group.completions)
            .map(|(r, c)| r + penalty.penalty(penalized_length(config, c), config.sampling.max_new_tokens))
            .collect(),
        None => rewards,
    })
}

/// The completion length that length penalties see: without the tokens of tool results unless
/// `tools.python.count_output_in_length`.
fn penalized_length(config: &TrainConfig, completion: &aha_rollout::ScoredCompletion) -> usize {
    let tool_tokens: usize = completion.tool_calls.iter().map(|c| c.output_tokens).sum();
    match config.tools.python.count_output_in_length {
        true => completion.token_ids.len(),
        false => completion.token_ids.len() - tool_tokens,
    }
}

/// Tool metrics of a step: calls per completion, the share of completions that called, the
/// share of calls that failed, and the seconds calls took (summed).
fn tool_metrics(completions: &[&aha_rollout::ScoredCompletion]) -> Value {
    let n = completions.len().max(1) as f64;
    let calls: usize = completions.iter().map(|c| c.tool_calls.len()).sum();
    let using = completions.iter().filter(|c| !c.tool_calls.is_empty()).count();
    let errors = completions.iter().flat_map(|c| &c.tool_calls).filter(|t| t.is_error()).count();
    let seconds: f64 = completions.iter().flat_map(|c| &c.tool_calls).map(|t| t.seconds).sum();
    json!({
        "tool_calls_per_completion": calls as f64 / n,
        "tool_use_frac": using as f64 / n,
        "tool_error_frac": if calls == 0 { 0.0 } else { errors as f64 / calls as f64 },
        "tool_s": seconds,
    })
}

struct StepRecord<'a> {
    step: u64,
    labels: &'a [String],
    sampled: &'a SampledGroups,
    frac_reward_zero_std: f64,
    stats: &'a StepStats,
    generation_seconds: f64,
    reward_wait_seconds: f64,
    reward_seconds: f64,
    train_seconds: f64,
    step_seconds: f64,
}

fn mean_std(values: &[f64]) -> (f64, f64) {
    crate::advantages::mean_and_sample_std(values)
}

/// One line of metrics.jsonl, without what the run loop adds (`elapsed_s`, the evaluation's
/// fields). `accuracy` is the share of completions that the first checker
/// (the task's correctness checker, by convention) gives its full reward of 1.
fn step_metrics(r: StepRecord) -> Value {
    let sampled = r.sampled;
    let completions: Vec<&aha_rollout::ScoredCompletion> = sampled.groups.iter().flat_map(|g| &g.completions).collect();
    let all_rewards: Vec<f64> = sampled.rewards.iter().flatten().copied().collect();
    let (reward_mean, reward_std) = mean_std(&all_rewards);
    let mut per_checker = BTreeMap::new();
    for label in r.labels {
        let values: Vec<f64> = completions.iter().filter_map(|c| c.rewards.get(label).copied().flatten()).collect();
        let (mean, std) = mean_std(&values);
        per_checker.insert(label.clone(), json!({ "mean": mean, "std": std }));
    }
    let first = r.labels.first();
    let correct = completions
        .iter()
        .filter(|c| first.and_then(|l| c.rewards.get(l).copied().flatten()).is_some_and(|v| v >= 1.0))
        .count();
    let lengths: Vec<usize> = completions.iter().map(|c| c.token_ids.len()).collect();
    let tokens: usize = lengths.iter().sum();
    let n = completions.len().max(1) as f64;
    let truncated = completions.iter().filter(|c| c.finish_reason == FinishReason::Length).count();
    let s = r.stats;
    let mut metrics = json!({
        "step": r.step,
        "reward_mean": reward_mean,
        "reward_std": reward_std,
        "rewards": per_checker,
        "accuracy": correct as f64 / n,
        "frac_reward_zero_std": r.frac_reward_zero_std,
        "groups": sampled.groups.len(),
        "completions": completions.len(),
        "dropped_groups": sampled.dropped,
        "unjudged_groups": sampled.unjudged,
        "sampling_batches": sampled.batches,
        "completion_length_mean": tokens as f64 / n,
        "completion_length_min": lengths.iter().min(),
        "completion_length_max": lengths.iter().max(),
        "truncated_frac": truncated as f64 / n,
        "loss": s.loss,
        "kl": s.kl,
        "entropy": s.entropy,
        "clip_low": s.clip_low,
        "clip_high": s.clip_high,
        "clip_region": s.clip_region,
        "grad_norm": s.grad_norm,
        "lr": s.lr,
        "sampling_logprob_diff": s.sampling_logprob_diff,
        "sampler_kl": s.sampler_kl,
        "tis_capped_frac": s.tis_capped_frac,
        "completion_tokens_per_s": tokens as f64 / r.step_seconds.max(1e-9),
        "generation_s": r.generation_seconds,
        "reward_wait_s": r.reward_wait_seconds,
        "reward_s": r.reward_seconds,
        "train_s": r.train_seconds,
        "step_s": r.step_seconds,
    });
    if completions.iter().any(|c| !c.tool_calls.is_empty()) {
        if let (Value::Object(m), Value::Object(t)) = (&mut metrics, tool_metrics(&completions)) {
            m.extend(t);
        }
    }
    metrics
}

/// The step's groups for the trace store; `sampled_by`: the policy version a remote backend's
/// servers sampled them with.
fn trace_groups(
    step: u64,
    groups: &[ScoredGroup],
    advantages: &[Vec<f64>],
    sampled_by: Option<u64>,
) -> Vec<TraceGroup> {
    groups
        .iter()
        .zip(advantages)
        .map(|(group, advantages)| TraceGroup {
            step,
            index: group.index,
            prompt_id: group.prompt.id.clone(),
            prompt: group.prompt.text.clone(),
            sample: Value::Object(group.prompt.fields.clone()),
            completions: group
                .completions
                .iter()
                .zip(advantages)
                .map(|(c, &advantage)| TraceCompletion {
                    text: c.text.clone(),
                    tokens: c.token_ids.len() as u32,
                    finish_reason: match c.finish_reason {
                        FinishReason::Stop => "stop".into(),
                        FinishReason::Length => "length".into(),
                    },
                    reward: c.reward,
                    rewards: c.rewards.clone(),
                    advantage: Some(advantage),
                    detail: trace_detail(&c.detail, &c.tool_calls, sampled_by),
                })
                .collect(),
        })
        .collect()
}

/// A completion's checker details, plus its tool calls (`tool_calls`: code, status, output,
/// seconds, where the result's tokens are) when it made any, and the policy version that sampled
/// it (`sampled_by_version`) when servers did.
fn trace_detail(detail: &Value, calls: &[aha_rollout::ToolCall], sampled_by: Option<u64>) -> Value {
    let mut detail = detail.clone();
    if let Value::Object(map) = &mut detail {
        if !calls.is_empty() {
            map.insert("tool_calls".into(), json!(calls));
        }
        if let Some(version) = sampled_by {
            map.insert("sampled_by_version".into(), json!(version));
        }
    }
    detail
}

fn data_error(error: aha_datasets::DatasetError) -> GrpoError {
    GrpoError::Data(format!("data: {error}"))
}

fn trace_error(error: aha_traces::TraceError) -> GrpoError {
    GrpoError::Traces(error.to_string())
}
