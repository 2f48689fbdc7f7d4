//! Held-out evaluation: K completions per problem from the current policy, judged by the run's
//! checkers. The trainer runs it greedily every `run.eval_every` steps; `aha demo` runs it before
//! and after training, greedy and at temperature 1 (pass@1 averaged over K samples).
//!
//! A completion is correct when the first checker (the task's correctness checker, by
//! convention, as for the training `accuracy`) gives it its full reward of 1.

use std::time::Instant;

use serde_json::{json, Value};

use aha_datasets::{Problem, Prompter};
use aha_model::{CausalLM, Tokenizer};
use aha_rewards::CombinedChecker;
use aha_rollout::{
    checker_fields, generate_all, EngineConfig, GenerationRequest, PythonToolConfig, SamplingParams, ShardedEngine,
    ToolExecutor,
};

use crate::error::{GrpoError, Result};

/// Evaluation problems rendered and tokenized once.
pub struct HeldOut {
    problems: Vec<Problem>,
    prompts: Vec<Vec<u32>>,
}

/// How to sample for an evaluation.
#[derive(Debug, Clone)]
pub struct EvalSettings {
    /// 0 = greedy.
    pub temperature: f64,
    pub max_new_tokens: usize,
    /// Completions per problem (1 when greedy).
    pub samples: usize,
    /// Problem i samples from `seed + i`.
    pub seed: u64,
    pub stop_strings: Vec<String>,
    /// The generation engine's limits.
    pub engine: EngineConfig,
    /// The Python tool, as in training (`[tools.python]`; off unless `enable`).
    pub tools: PythonToolConfig,
}

/// One judged completion.
#[derive(Debug, Clone)]
pub struct EvalCompletion {
    pub problem: usize,
    pub text: String,
    pub tokens: usize,
    pub correct: bool,
    pub reward: f64,
}

/// The outcome of an evaluation: `accuracy` is the share of correct completions (pass@1, averaged
/// over the samples of each problem).
#[derive(Debug, Clone)]
pub struct EvalReport {
    pub problems: usize,
    pub accuracy: f64,
    pub reward_mean: f64,
    pub length_mean: f64,
    pub seconds: f64,
    pub completions: Vec<EvalCompletion>,
}

impl HeldOut {
    /// Renders each problem with `prompter`; prompts that are empty or longer than
    /// `max_prompt_tokens` are left out.
    pub fn new(
        problems: &[Problem],
        prompter: &Prompter,
        tokenizer: &Tokenizer,
        max_prompt_tokens: usize,
    ) -> Result<Self> {
        let mut held_out = HeldOut { problems: Vec::new(), prompts: Vec::new() };
        for problem in problems {
            let text = prompter.render(problem).map_err(|e| GrpoError::Data(format!("data: {e}")))?;
            let ids = tokenizer.encode(&text)?;
            if !ids.is_empty() && ids.len() <= max_prompt_tokens {
                held_out.problems.push(problem.clone());
                held_out.prompts.push(ids);
            }
        }
        Ok(held_out)
    }

    pub fn len(&self) -> usize {
        self.problems.len()
    }

    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    /// Problem `index` (as in [`EvalCompletion::problem`]).
    pub fn problem(&self, index: usize) -> Option<&Problem> {
        self.problems.get(index)
    }

    /// Samples and judges every problem's completions with the batched engine.
    pub fn evaluate(
        &self,
        policy: &CausalLM,
        tokenizer: &Tokenizer,
        checker: &CombinedChecker,
        correctness_label: Option<&str>,
        settings: &EvalSettings,
    ) -> Result<EvalReport> {
        let started = Instant::now();
        let greedy = settings.temperature == 0.0;
        let params = SamplingParams {
            temperature: settings.temperature,
            max_new_tokens: settings.max_new_tokens,
            stop_token_ids: policy.config().eos_token_ids.clone(),
            ..Default::default()
        };
        let mut engine = ShardedEngine::new(policy, params, settings.engine.clone())?
            .with_stop_strings(tokenizer, settings.stop_strings.clone())?;
        if settings.tools.enable {
            engine = engine.with_tools(tokenizer, ToolExecutor::new(settings.tools.clone())?);
        }
        let samples = if greedy { 1 } else { settings.samples.max(1) };
        let requests: Vec<GenerationRequest> = self
            .prompts
            .iter()
            .enumerate()
            .map(|(i, ids)| GenerationRequest { prompt_ids: ids.clone(), n: samples, seed: settings.seed + i as u64 })
            .collect();
        let outputs = generate_all(&mut engine, &requests)?;
        let mut completions = Vec::with_capacity(self.problems.len() * samples);
        for (index, (problem, group)) in self.problems.iter().zip(outputs).enumerate() {
            for completion in group {
                let text = tokenizer.decode(&completion.token_ids, true)?;
                let mut length = completion.token_ids.len();
                if !settings.tools.count_output_in_length {
                    length -= completion.tool_output_tokens();
                }
                let fields = checker_fields(&problem.fields, length, completion.finish_reason);
                let breakdown = checker
                    .breakdown(&text, &fields)
                    .map_err(|e| GrpoError::Data(format!("evaluation problem {}: {e}", problem.id)))?;
                let first = breakdown.parts.iter().find(|(label, _, _)| Some(label.as_str()) == correctness_label);
                let correct = first.and_then(|(_, _, verdict)| verdict.reward_value()).is_some_and(|r| r >= 1.0);
                completions.push(EvalCompletion {
                    problem: index,
                    tokens: completion.token_ids.len(),
                    text,
                    correct,
                    reward: breakdown.total.unwrap_or(0.0),
                });
            }
        }
        let n = completions.len().max(1) as f64;
        Ok(EvalReport {
            problems: self.problems.len(),
            accuracy: completions.iter().filter(|c| c.correct).count() as f64 / n,
            reward_mean: completions.iter().map(|c| c.reward).sum::<f64>() / n,
            length_mean: completions.iter().map(|c| c.tokens as f64).sum::<f64>() / n,
            seconds: started.elapsed().as_secs_f64(),
            completions,
        })
    }
}

impl EvalReport {
    /// The fields the trainer adds to a step's metrics line.
    pub fn metrics(&self) -> serde_json::Map<String, Value> {
        let mut results = serde_json::Map::new();
        results.insert("eval_problems".into(), json!(self.problems));
        results.insert("eval_accuracy".into(), json!(self.accuracy));
        results.insert("eval_reward_mean".into(), json!(self.reward_mean));
        results.insert("eval_length_mean".into(), json!(self.length_mean));
        results.insert("eval_s".into(), json!(self.seconds));
        results
    }
}
