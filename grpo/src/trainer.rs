//! The training loop of `aha train`: sample groups, score them, turn rewards into advantages, take
//! an optimizer step, record everything, checkpoint.
//!
//! ```text
//! for step in 1..=steps:
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

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use aha_datasets::{Dataset, Problem, ProblemSource, Prompter};
use aha_model::{CausalLM, Tokenizer};
use aha_rewards::{Checker, CombinedChecker, Registry};
use aha_rollout::{
    EngineConfig, FinishReason, PoolConfig, RolloutError, RolloutPool, RolloutPrompt, SamplingParams, ScoredGroup,
    ShardedEngine, ROLLOUT_FIELDS,
};
use aha_traces::{TraceCompletion, TraceGroup, TraceWriter};

use crate::advantages::{compute_advantages, DynamicSampling};
use crate::config::{CheckerConfig, TrainConfig};
use crate::error::{GrpoError, Result};
use crate::evaluation::{EvalSettings, HeldOut};
use crate::optim::AdamW;
use crate::run_dir::{RunDir, TrainerState};
use crate::step::{train_step, StepSettings, TrainBatch, TrainSequence};

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub run_dir: PathBuf,
    /// The step the run started from (0, or the checkpoint a resumed run continued from).
    pub first_step: u64,
    /// `run.steps`: the step it trained to, unless it was there already.
    pub steps: u64,
    pub last_checkpoint: Option<PathBuf>,
}

impl TrainOutcome {
    /// Steps this process trained: none when a resumed run was already at `run.steps` or past it.
    pub fn steps_trained(&self) -> u64 {
        self.steps.saturating_sub(self.first_step)
    }

    /// The outcome of a resumed run with nothing left to do, if `state` is at `steps` already.
    pub(crate) fn if_done(
        run: &RunDir,
        state: &TrainerState,
        steps: u64,
        checkpoint: &Option<PathBuf>,
    ) -> Option<Self> {
        (state.step >= steps).then(|| Self {
            run_dir: run.root().to_path_buf(),
            first_step: state.step,
            steps,
            last_checkpoint: checkpoint.clone(),
        })
    }
}

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
    mut on_step: impl FnMut(&Value),
) -> Result<TrainOutcome> {
    let started = Instant::now();
    let (run, checkpoint, state) = RunDir::begin(&config.run.output_dir, &config.to_toml_string(), resume)?;
    if let Some(done) = TrainOutcome::if_done(&run, &state, config.run.steps, &checkpoint) {
        return Ok(done);
    }

    let weights_dir = checkpoint.clone().unwrap_or_else(|| config.model.path.clone());
    let policy = CausalLM::load(&weights_dir, config.model.load_options(true)?)?;
    let reference = if config.grpo.beta > 0.0 {
        Some(CausalLM::load(&config.model.path, config.model.load_options(false)?)?)
    } else {
        None
    };
    let tokenizer = Arc::new(Tokenizer::from_dir(&config.model.path, policy.config().vocab_size)?);
    let mut optimizer = AdamW::for_model(&policy, config.optim.adamw());
    if let Some(dir) = &checkpoint {
        RunDir::load_optimizer(dir, &mut optimizer)?;
    }

    // Problems, shuffled per epoch from the run's seed, skipping those a resumed run has used.
    let checker = Arc::new(build_checker(&config, registry)?);
    let (train_set, eval_set) = load_problems(&config, &checker)?;
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
    let prompter = Prompter::new(&config.data.template, &config.model.path).map_err(data_error)?;
    let drawn = Rc::new(Cell::new(state.problems_drawn));
    let counter = Rc::clone(&drawn);
    let problems: Box<dyn Iterator<Item = &Problem>> = if config.data.shuffle {
        Box::new(train_set.epochs(config.run.seed).map(|(_, problem)| problem))
    } else {
        Box::new(train_set.problems.iter().cycle())
    };
    let prompts = problems
        .skip(state.problems_drawn as usize)
        .inspect(move |_| counter.set(counter.get() + 1))
        .map(|problem| rollout_prompt(&prompter, problem));
    // A template error surfaces as a prompt that fails to render: stop on the first.
    let template_error: Rc<Cell<Option<String>>> = Rc::new(Cell::new(None));
    let error_slot = Rc::clone(&template_error);
    let prompts = prompts.map_while(move |prompt| match prompt {
        Ok(prompt) => Some(prompt),
        Err(message) => {
            error_slot.set(Some(message));
            None
        }
    });

    let sampling = &config.sampling;
    let params = SamplingParams {
        temperature: sampling.temperature,
        top_p: sampling.top_p,
        top_k: sampling.top_k,
        min_p: sampling.min_p,
        max_new_tokens: sampling.max_new_tokens,
        stop_token_ids: policy.config().eos_token_ids.clone(),
    };
    let engine = ShardedEngine::new(&policy, params, EngineConfig::default())?
        .with_stop_strings(&tokenizer, sampling.stop_strings.clone())?;
    let pool_config = PoolConfig {
        group_size: sampling.group_size,
        seed: config.run.seed,
        reward_workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
        max_prompt_tokens: sampling.max_prompt_tokens,
        distinct_prompts: Some(train_set.problems.len()),
    };
    // Greedy evaluation on the held-out problems every `run.eval_every` steps.
    let evaluation = if eval_set.is_empty() || config.run.eval_every == 0 {
        None
    } else {
        let prompter = Prompter::new(&config.data.template, &config.model.path).map_err(data_error)?;
        Some(HeldOut::new(&eval_set.problems, &prompter, &tokenizer, sampling.max_prompt_tokens)?)
    };
    let eval_settings = EvalSettings {
        temperature: 0.0,
        max_new_tokens: sampling.max_new_tokens,
        samples: 1,
        seed: 0,
        stop_strings: sampling.stop_strings.clone(),
    };
    let mut pool = RolloutPool::new(
        engine,
        prompts,
        Arc::clone(&tokenizer),
        Arc::clone(&checker),
        pool_config,
        state.groups_sampled,
    )?;
    let traces = TraceWriter::open(&run.traces_path(), Some(state.step)).map_err(trace_error)?;

    let settings = StepSettings::from_config(&config);
    let schedule = config.lr_schedule();
    let labels: Vec<String> = config.rewards.checkers.iter().map(CheckerConfig::reported_label).collect();
    let mut last_checkpoint = checkpoint;
    for step in state.step + 1..=config.run.steps {
        let step_started = Instant::now();
        let lr = schedule.lr_at(step - 1);
        let generation_before = pool.stats().clone();

        // Sample until the step has its groups (with dynamic sampling: groups with signal).
        let wanted = sampling.prompts_per_step;
        let mut collected = DynamicSampling::new(wanted, config.grpo.max_extra_batches);
        let mut unjudged = 0;
        let mut all_judged = Vec::new();
        loop {
            let batch = pool.next_groups(wanted).map_err(|e| match e {
                RolloutError::NoUsablePrompt { distinct, limit } => GrpoError::Config(format!(
                    "{}: no usable problem: the prompts of all {distinct} are longer than \
                     sampling.max_prompt_tokens = {limit} tokens (or empty)",
                    config.data.source
                )),
                other => other.into(),
            })?;
            if let Some(message) = template_error.take() {
                return Err(GrpoError::Config(format!("data.template: {message}")));
            }
            if batch.is_empty() {
                return Err(GrpoError::Config(format!(
                    "{}: no usable problems (all skipped, or every prompt is longer than sampling.max_prompt_tokens)",
                    config.data.source
                )));
            }
            let mut judged = Vec::with_capacity(batch.len());
            for group in batch {
                match shaped_rewards(&config, &group) {
                    Some(rewards) => judged.push((group, rewards)),
                    None => {
                        unjudged += 1;
                        tracing::warn!(prompt = %group.prompt.id, "a checker could not judge this problem; its group is left out");
                    }
                }
            }
            if !config.grpo.dynamic_sampling {
                all_judged = judged;
                break;
            }
            collected.add_batch(judged.into_iter().map(|(g, r)| ((g, r.clone()), r)));
            if !collected.wants_more() {
                break;
            }
        }
        let (dropped_groups, sampling_batches) = (collected.dropped(), collected.batches().max(1));
        if config.grpo.dynamic_sampling {
            all_judged = collected.into_groups();
        }
        let (groups, rewards): (Vec<ScoredGroup>, Vec<Vec<f64>>) = all_judged.into_iter().unzip();
        if groups.is_empty() {
            return Err(GrpoError::Config(format!(
                "step {step}: no group to train on (every problem was unjudged, or dynamic sampling found no group \
                 whose rewards differ within grpo.max_extra_batches)"
            )));
        }
        let advantages = compute_advantages(&rewards, config.grpo.scale_rewards)?;
        let generation = pool.stats().clone();

        let train_started = Instant::now();
        let batch = TrainBatch {
            sequences: groups
                .iter()
                .zip(&advantages.advantages)
                .flat_map(|(group, advantages)| {
                    group.completions.iter().zip(advantages).map(|(c, &a)| TrainSequence {
                        prompt_ids: group.prompt_ids.clone(),
                        completion_ids: c.token_ids.clone(),
                        advantage: a as f32,
                        old_logprobs: Some(c.logprobs.clone()),
                        truncated: c.finish_reason == FinishReason::Length,
                    })
                })
                .collect(),
        };
        let stats = train_step(&policy, reference.as_ref(), &mut optimizer, &batch, &settings, lr)
            .map_err(|e| diverged(step, e, last_checkpoint.as_deref()))?;
        let train_seconds = train_started.elapsed().as_secs_f64();

        let metrics = step_metrics(StepRecord {
            step,
            labels: &labels,
            groups: &groups,
            rewards: &rewards,
            frac_reward_zero_std: advantages.frac_reward_zero_std,
            dropped_groups,
            unjudged,
            sampling_batches,
            stats: &stats,
            generation_seconds: generation.generation_seconds - generation_before.generation_seconds,
            reward_wait_seconds: generation.reward_wait_seconds - generation_before.reward_wait_seconds,
            reward_seconds: generation.reward_seconds - generation_before.reward_seconds,
            train_seconds,
            step_seconds: step_started.elapsed().as_secs_f64(),
            elapsed_seconds: started.elapsed().as_secs_f64(),
        });
        let mut metrics = metrics;
        let eval_every = config.run.eval_every;
        if let Some(evaluation) =
            evaluation.as_ref().filter(|_| eval_every > 0 && (step % eval_every == 0 || step == config.run.steps))
        {
            let report = evaluation.evaluate(
                &policy,
                &tokenizer,
                &checker,
                labels.first().map(String::as_str),
                &eval_settings,
            )?;
            metrics.as_object_mut().expect("an object").extend(report.metrics());
        }
        run.append_metrics(&metrics)?;
        traces.write(trace_groups(step, &groups, &advantages.advantages)).map_err(trace_error)?;
        on_step(&metrics);

        let save_every = config.run.save_every;
        if step == config.run.steps || (save_every > 0 && step % save_every == 0) {
            // Traces first: a checkpoint promises that everything up to its step is recorded.
            traces.flush().map_err(trace_error)?;
            let state = TrainerState {
                step,
                problems_drawn: drawn.get(),
                groups_sampled: pool.next_index(),
                version: env!("CARGO_PKG_VERSION").into(),
            };
            last_checkpoint = Some(run.save_checkpoint(&policy, &optimizer, &state, config.run.keep_last)?);
        }
    }
    let skipped = pool.stats().skipped_long_prompts;
    if skipped > 0 {
        tracing::warn!(
            "{}: {skipped} prompts skipped, longer than sampling.max_prompt_tokens = {} tokens (or empty)",
            config.data.source,
            sampling.max_prompt_tokens
        );
    }
    drop(pool);
    traces.close().map_err(trace_error)?;
    run.write_report()?;
    Ok(TrainOutcome {
        run_dir: run.root().to_path_buf(),
        first_step: state.step,
        steps: config.run.steps,
        last_checkpoint,
    })
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
        return Err(GrpoError::Config(format!("{}: no problems ({})", data.source, dataset.why_empty())));
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

fn rollout_prompt(prompter: &Prompter, problem: &Problem) -> std::result::Result<RolloutPrompt, String> {
    let text = prompter.render(problem).map_err(|e| e.to_string())?;
    Ok(RolloutPrompt { id: problem.id.clone(), text, sample: problem.sample.clone() })
}

/// The rewards the advantages are computed from: the checkers' totals, plus DAPO's soft overlong
/// penalty when configured. `None` when a checker could not judge the problem.
fn shaped_rewards(config: &TrainConfig, group: &ScoredGroup) -> Option<Vec<f64>> {
    let rewards = group.rewards()?;
    Some(match &config.grpo.overlong_penalty {
        Some(penalty) => rewards
            .iter()
            .zip(&group.completions)
            .map(|(r, c)| r + penalty.penalty(c.token_ids.len(), config.sampling.max_new_tokens))
            .collect(),
        None => rewards,
    })
}

struct StepRecord<'a> {
    step: u64,
    labels: &'a [String],
    groups: &'a [ScoredGroup],
    rewards: &'a [Vec<f64>],
    frac_reward_zero_std: f64,
    dropped_groups: usize,
    unjudged: usize,
    sampling_batches: usize,
    stats: &'a crate::step::StepStats,
    generation_seconds: f64,
    reward_wait_seconds: f64,
    reward_seconds: f64,
    train_seconds: f64,
    step_seconds: f64,
    elapsed_seconds: f64,
}

fn mean_std(values: &[f64]) -> (f64, f64) {
    crate::advantages::mean_and_sample_std(values)
}

/// One line of metrics.jsonl. `accuracy` is the share of completions that the first checker
/// (the task's correctness checker, by convention) gives its full reward of 1.
fn step_metrics(r: StepRecord) -> Value {
    let completions: Vec<&aha_rollout::ScoredCompletion> = r.groups.iter().flat_map(|g| &g.completions).collect();
    let all_rewards: Vec<f64> = r.rewards.iter().flatten().copied().collect();
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
    json!({
        "step": r.step,
        "reward_mean": reward_mean,
        "reward_std": reward_std,
        "rewards": per_checker,
        "accuracy": correct as f64 / n,
        "frac_reward_zero_std": r.frac_reward_zero_std,
        "groups": r.groups.len(),
        "completions": completions.len(),
        "dropped_groups": r.dropped_groups,
        "unjudged_groups": r.unjudged,
        "sampling_batches": r.sampling_batches,
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
        "completion_tokens_per_s": tokens as f64 / r.step_seconds.max(1e-9),
        "generation_s": r.generation_seconds,
        "reward_wait_s": r.reward_wait_seconds,
        "reward_s": r.reward_seconds,
        "train_s": r.train_seconds,
        "step_s": r.step_seconds,
        "elapsed_s": r.elapsed_seconds,
    })
}

fn trace_groups(step: u64, groups: &[ScoredGroup], advantages: &[Vec<f64>]) -> Vec<TraceGroup> {
    groups
        .iter()
        .zip(advantages)
        .map(|(group, advantages)| TraceGroup {
            step,
            index: group.index,
            prompt_id: group.prompt.id.clone(),
            prompt: group.prompt.text.clone(),
            sample: Value::Object(group.prompt.sample.clone()),
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
                    detail: c.detail.clone(),
                })
                .collect(),
        })
        .collect()
}

/// A NaN or infinite loss or gradient stops the run: the error says where its last good
/// checkpoint is. Other errors pass through.
pub(crate) fn diverged(step: u64, error: GrpoError, last_checkpoint: Option<&Path>) -> GrpoError {
    match error {
        GrpoError::NonFinite { .. } => GrpoError::Config(format!(
            "step {step}: {error}; the run stops here, and its last good checkpoint is {}",
            last_checkpoint.map_or("none (no checkpoint was saved yet)".into(), |p| p.display().to_string())
        )),
        other => other,
    }
}

fn data_error(error: aha_datasets::DatasetError) -> GrpoError {
    GrpoError::Config(format!("data: {error}"))
}

fn trace_error(error: aha_traces::TraceError) -> GrpoError {
    GrpoError::Config(error.to_string())
}
