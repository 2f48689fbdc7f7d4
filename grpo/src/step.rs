//! One optimisation step: a batch of scored completions in, updated weights and statistics out.
//!
//! The batch is cut into micro-batches of `micro_batch_size` completions (in the order given);
//! each runs forward and backward and the gradients add up. Every micro-batch's loss is divided by
//! the sizes of the *whole* batch (see [`Normalizer`]), so the accumulated gradient is the
//! gradient of the whole-batch loss whatever the micro-batch size: for `grpo` each completion
//! contributes 1/B times its token mean, for `dr_grpo` its token sum over B * max_new_tokens, for
//! `dapo` and `bnpo` its token sum over the number of loss tokens in the batch.
//!
//! Each micro-batch is an [`aha_model::CompletionBatch`]: completions scored after their prompts,
//! the completions of one prompt sharing one pass over it, log-probs at the sampling temperature
//! in fp32 (and the entropy of the same distribution, a metric only). Its `train_pass` gives the
//! log-probs the loss is built on and `TrainPass::backward` takes the loss's gradient back into
//! the policy; how the model computes them (autograd, or the fused CPU pass of a small fp32
//! model) is aha-model's business. `aha sft` trains through the same interface.
//!
//! With `num_iterations` (mu) > 1 the old log-probs are computed once, without gradient, before
//! the first update, and the step makes mu updates on the same batch. The reference log-probs
//! (beta > 0) are computed once as well: from the reference model or, for a policy with LoRA
//! adapters, from its own base weights with the adapters switched off.

use aha_model::{CausalLM, CompletionBatch};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::config::TrainConfig;
use crate::error::{GrpoError, Result};
use crate::loss::{policy_loss, LossInputs, LossParams, LossStats, Normalizer};
use crate::optim::AdamW;

/// One completion to train on.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSequence {
    /// The prompt's token ids (at least one).
    pub prompt_ids: Vec<u32>,
    /// The sampled completion's token ids (may be empty).
    pub completion_ids: Vec<u32>,
    /// Its advantage, broadcast to every completion token.
    pub advantage: f32,
    /// The log-probs the sampler computed for the completion tokens, if known: only compared with
    /// the recomputed ones as a health check (`sampling_logprob_diff`).
    pub old_logprobs: Option<Vec<f32>>,
    /// Whether the completion stopped at `max_new_tokens` rather than at a stop token.
    pub truncated: bool,
    /// True for the completion tokens that came from a tool's result (context, not actions):
    /// they are left out of the loss, the ratio, the KL, the entropy and the token count.
    /// Empty: none.
    pub tool_output: Vec<bool>,
}

impl TrainSequence {
    /// Whether completion token `j` is the policy's own (counts in the loss).
    fn is_action(&self, j: usize) -> bool {
        !self.tool_output.get(j).copied().unwrap_or(false)
    }

    /// The tokens that count in the loss.
    fn loss_tokens(&self, settings: &StepSettings) -> usize {
        if settings.mask_truncated_completions && self.truncated {
            return 0;
        }
        (0..self.completion_ids.len()).filter(|&j| self.is_action(j)).count()
    }
}

/// The completions of one step (all groups together).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainBatch {
    pub sequences: Vec<TrainSequence>,
}

/// What a step needs from the configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepSettings {
    pub loss: LossParams,
    /// Updates per batch (mu), at least 1.
    pub num_iterations: usize,
    /// Truncated completions get no loss tokens (they still count as sequences).
    pub mask_truncated_completions: bool,
    /// The sampling temperature; logits are divided by it.
    pub temperature: f64,
    /// `max_new_tokens`, the dr_grpo normaliser.
    pub max_completion_len: usize,
    /// Completions per forward/backward pass, at least 1.
    pub micro_batch_size: usize,
    /// Clip the global gradient norm to this; 0 = no clipping.
    pub max_grad_norm: f64,
}

impl StepSettings {
    pub fn from_config(config: &TrainConfig) -> Self {
        Self {
            loss: config.grpo.loss_params(),
            num_iterations: config.grpo.num_iterations,
            mask_truncated_completions: config.grpo.mask_truncated_completions,
            temperature: config.sampling.temperature,
            max_completion_len: config.sampling.max_new_tokens,
            micro_batch_size: config.optim.micro_batch_size,
            max_grad_norm: config.optim.max_grad_norm,
        }
    }
}

/// Statistics of one update (one pass over the batch).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct IterationStats {
    /// The batch loss.
    pub loss: f64,
    /// Mean k3 KL per loss token (with a reference model).
    pub kl: Option<f64>,
    /// Mean entropy per loss token of the tempered distribution. This and the clip fractions are
    /// over the completions that were run: with beta = 0, those whose advantage is not 0.
    pub entropy: f64,
    /// Fractions of loss tokens clipped from below, above, and either way.
    pub clip_low: f64,
    pub clip_high: f64,
    pub clip_region: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// Statistics of a training step; with mu > 1, the means over its updates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepStats {
    pub loss: f64,
    pub kl: Option<f64>,
    pub entropy: f64,
    pub clip_low: f64,
    pub clip_high: f64,
    pub clip_region: f64,
    pub grad_norm: f64,
    pub lr: f64,
    /// Completion tokens that counted in the loss.
    pub tokens: usize,
    pub sequences: usize,
    /// Mean |sampler log-prob - recomputed log-prob| over the tokens whose sampler log-probs were
    /// given, before the first update; large values mean the two sides disagree (temperature,
    /// dtype, template, a remote server's kernels) and the ratios are off.
    pub sampling_logprob_diff: Option<f64>,
    /// Mean k3 estimate of KL(sampler || trainer) over the same tokens (r - 1 - log r with r the
    /// trainer's probability over the sampler's).
    pub sampler_kl: Option<f64>,
    /// With `grpo.tis_cap`: the share of those tokens whose importance weight was capped.
    pub tis_capped_frac: Option<f64>,
    pub iterations: Vec<IterationStats>,
}

/// The tensors of one micro-batch, on the policy's device.
struct MicroBatch {
    layout: CompletionBatch,
    /// `[b, C]` bool: the tokens in the loss (the layout's, less tool results).
    mask: Tensor,
    /// `[b]` fp32.
    advantages: Tensor,
    old: Option<Tensor>,
    reference: Option<Tensor>,
    /// `[b, C]` sampler log-probs and where they were given.
    sampling: Option<(Tensor, Tensor)>,
}

/// A batch cut into micro-batches, with its old and reference log-probs computed.
pub struct PreparedBatch {
    micro_batches: Vec<MicroBatch>,
    normalizer: Normalizer,
    sequences: usize,
    tokens: usize,
}

impl PreparedBatch {
    pub fn normalizer(&self) -> &Normalizer {
        &self.normalizer
    }

    pub fn num_micro_batches(&self) -> usize {
        self.micro_batches.len()
    }
}

/// Gradients of one pass, left in the parameters' `.grad`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PassStats {
    pub loss: f64,
    pub stats: LossStats,
    /// Sums over the tokens with sampler log-probs: |sampler - recomputed| log-prob, the k3 KL
    /// between them, the tokens whose importance weight reached `tis_cap`; and their number.
    pub sampling_diff_sum: f64,
    pub sampler_kl_sum: f64,
    pub tis_capped: f64,
    pub sampling_tokens: f64,
}

fn check_batch(policy: &CausalLM, batch: &TrainBatch, settings: &StepSettings, reference: bool) -> Result<()> {
    let reference = reference || policy.lora().is_some();
    if batch.sequences.is_empty() {
        return Err(GrpoError::Input("the batch has no sequences".into()));
    }
    if settings.micro_batch_size == 0 || settings.num_iterations == 0 {
        return Err(GrpoError::Input("micro_batch_size and num_iterations must be at least 1".into()));
    }
    if settings.temperature.is_nan() || settings.temperature <= 0.0 {
        return Err(GrpoError::Input(format!("temperature must be > 0, got {}", settings.temperature)));
    }
    if settings.loss.beta != 0.0 && !reference {
        return Err(GrpoError::Input(format!("beta = {} needs a reference model", settings.loss.beta)));
    }
    for (i, s) in batch.sequences.iter().enumerate() {
        if s.prompt_ids.is_empty() {
            return Err(GrpoError::Input(format!("sequence {i} has an empty prompt")));
        }
        if !s.advantage.is_finite() {
            return Err(GrpoError::Input(format!("sequence {i} has advantage {}", s.advantage)));
        }
        if !s.tool_output.is_empty() && s.tool_output.len() != s.completion_ids.len() {
            return Err(GrpoError::Input(format!(
                "sequence {i} marks {} tool-output tokens for {} completion tokens",
                s.tool_output.len(),
                s.completion_ids.len()
            )));
        }
        if let Some(old) = &s.old_logprobs {
            if old.len() != s.completion_ids.len() {
                return Err(GrpoError::Input(format!(
                    "sequence {i} has {} sampler log-probs for {} completion tokens",
                    old.len(),
                    s.completion_ids.len()
                )));
            }
        }
        policy.check_token_ids(std::slice::from_ref(&s.prompt_ids))?;
        policy.check_token_ids(std::slice::from_ref(&s.completion_ids))?;
    }
    Ok(())
}

fn build_micro_batch(sequences: &[&TrainSequence], settings: &StepSettings, device: Device) -> Result<MicroBatch> {
    let rows: Vec<(&[u32], &[u32], bool)> = sequences
        .iter()
        .map(|s| (&s.prompt_ids[..], &s.completion_ids[..], !(settings.mask_truncated_completions && s.truncated)))
        .collect();
    let layout = CompletionBatch::new(&rows, device)?;
    let (b, width) = (sequences.len(), layout.width() as usize);
    // The layout's mask (completion tokens, truncation) without the tokens of tool results.
    let mut actions = vec![true; b * width];
    for (row, s) in sequences.iter().enumerate() {
        let start = row * width + width - s.completion_ids.len();
        for j in 0..s.completion_ids.len() {
            actions[start + j] = s.is_action(j);
        }
    }
    let actions = Tensor::from_slice(&actions).view([b as i64, width as i64]).to_device(device);
    let mask = layout.loss_mask().logical_and(&actions);
    let mut sampled = vec![0f32; b * width];
    let mut has_sampled = vec![false; b * width];
    for (row, s) in sequences.iter().enumerate() {
        if let Some(old) = &s.old_logprobs {
            let start = row * width + width - s.completion_ids.len();
            sampled[start..start + old.len()].copy_from_slice(old);
            // A tool result's tokens were not sampled: they have no sampler log-prob.
            for (j, x) in has_sampled[start..start + old.len()].iter_mut().enumerate() {
                *x = s.is_action(j);
            }
        }
    }
    let shape = [b as i64, width as i64];
    let any_sampled = sequences.iter().any(|s| s.old_logprobs.is_some());
    let advantages: Vec<f32> = sequences.iter().map(|s| s.advantage).collect();
    Ok(MicroBatch {
        layout,
        mask,
        advantages: Tensor::from_slice(&advantages).to_device(device),
        old: None,
        reference: None,
        sampling: any_sampled.then(|| {
            (
                Tensor::from_slice(&sampled).view(shape).to_device(device),
                Tensor::from_slice(&has_sampled).view(shape).to_device(device),
            )
        }),
    })
}

/// Cuts the batch into micro-batches and computes what stays fixed during the step: the
/// reference log-probs (beta != 0) and, with mu > 1, the old log-probs. The reference log-probs
/// come from `reference`, or, for a policy with LoRA adapters and no `reference`, from the
/// policy's own base weights (adapters off).
pub fn prepare_batch(
    policy: &CausalLM,
    reference: Option<&CausalLM>,
    batch: &TrainBatch,
    settings: &StepSettings,
) -> Result<PreparedBatch> {
    check_batch(policy, batch, settings, reference.is_some())?;
    let device = policy.device();
    // Without a KL term, a completion whose advantage is 0 (its whole group scored alike) adds
    // exactly 0 to the loss and its gradient: it still counts in the normaliser below, but is
    // never run. Late in training, when most groups are all right, this is most of the batch.
    // The rest go in order of prompt, so that a micro-batch holds the completions of a group
    // and runs their prompt once (`CompletionBatch`), then of completion length, so that it
    // pads less (the loss is a sum: the order does not change it).
    let mut carrying: Vec<&TrainSequence> =
        batch.sequences.iter().filter(|s| settings.loss.beta != 0.0 || s.advantage != 0.0).collect();
    carrying.sort_by(|a, b| {
        (a.prompt_ids.len(), &a.prompt_ids, a.completion_ids.len()).cmp(&(
            b.prompt_ids.len(),
            &b.prompt_ids,
            b.completion_ids.len(),
        ))
    });
    let mut micro_batches = carrying
        .chunks(settings.micro_batch_size)
        .map(|chunk| build_micro_batch(chunk, settings, device))
        .collect::<Result<Vec<_>>>()?;
    tch::no_grad(|| {
        for mb in micro_batches.iter_mut().filter(|mb| mb.layout.width() > 0) {
            if settings.loss.beta != 0.0 {
                let logprobs = match reference {
                    Some(reference) => mb.layout.logprobs(reference, settings.temperature, false).0,
                    // A policy with LoRA adapters: its base is the reference.
                    None => policy.without_adapters(|| mb.layout.logprobs(policy, settings.temperature, false).0),
                };
                mb.reference = Some(logprobs.to_device(device));
            }
            if settings.num_iterations > 1 {
                mb.old = Some(mb.layout.logprobs(policy, settings.temperature, false).0);
            }
        }
    });
    let tokens: usize = batch.sequences.iter().map(|s| s.loss_tokens(settings)).sum();
    let normalizer = Normalizer {
        sequences: batch.sequences.len() as f64,
        tokens: tokens as f64,
        max_completion_len: settings.max_completion_len as f64,
    };
    Ok(PreparedBatch { micro_batches, normalizer, sequences: batch.sequences.len(), tokens })
}

/// Zeroes the policy's gradients, then runs forward and backward over every micro-batch, leaving
/// the gradient of the whole-batch loss in the parameters' `.grad`.
pub fn accumulate_gradients(policy: &CausalLM, batch: &PreparedBatch, settings: &StepSettings) -> Result<PassStats> {
    for mut var in policy.trainable_parameters() {
        var.zero_grad();
    }
    let mut pass = PassStats {
        loss: 0.0,
        stats: LossStats::default(),
        sampling_diff_sum: 0.0,
        sampler_kl_sum: 0.0,
        tis_capped: 0.0,
        sampling_tokens: 0.0,
    };
    for mb in batch.micro_batches.iter().filter(|mb| mb.layout.width() > 0) {
        let scored = mb.layout.train_pass(policy, settings.temperature, true);
        let logprobs = &scored.logprobs;
        // The sampler's log-probs, with log pi_old where it gave none (an importance weight of 1).
        let old = mb.old.as_ref().map_or_else(|| logprobs.detach(), Tensor::shallow_clone);
        let behaviour = mb.sampling.as_ref().map(|(sampled, given)| sampled.where_self(given, &old));
        let inputs = LossInputs {
            logprobs,
            old_logprobs: mb.old.as_ref(),
            ref_logprobs: mb.reference.as_ref(),
            advantages: &mb.advantages,
            mask: &mb.mask,
            entropies: scored.entropies.as_ref(),
            behaviour_logprobs: behaviour.as_ref(),
        };
        let out = policy_loss(&inputs, &settings.loss, &batch.normalizer)?;
        if let (Some((_, given)), Some(behaviour)) = (&mb.sampling, &behaviour) {
            tch::no_grad(|| {
                let sum = |t: Tensor| t.where_self(given, &old.zeros_like()).sum(Kind::Double).double_value(&[]);
                // Before the first update (the iteration these are reported for) pi_theta is pi_old.
                let log_r = logprobs.detach() - behaviour;
                pass.sampling_diff_sum += sum(log_r.abs());
                pass.sampler_kl_sum += sum(log_r.exp() - &log_r - 1.0);
                if let Some(cap) = settings.loss.tis_cap {
                    pass.tis_capped += sum(log_r.ge(cap.ln()).to_kind(Kind::Double));
                }
                pass.sampling_tokens += given.sum(Kind::Double).double_value(&[]);
            });
        }
        let value = out.loss.double_value(&[]);
        if !value.is_finite() {
            return Err(GrpoError::NonFinite { what: "loss", value });
        }
        pass.loss += value;
        pass.stats.add(&out.stats);
        scored.backward(policy, &out.loss);
    }
    // Nothing ran (every advantage 0): the gradient is still defined, and zero, so that AdamW
    // moves exactly as it would have after running them (a resumed run must not differ).
    let trainable = policy.trainable_parameters();
    if trainable.iter().any(|v| !v.grad().defined()) {
        let zero: Tensor = trainable.iter().map(|v| v.sum(v.kind()) * 0.0).sum();
        zero.backward();
    }
    Ok(pass)
}

/// The loss of a prepared batch at the current weights, without gradient (for checks).
pub fn batch_loss(policy: &CausalLM, batch: &PreparedBatch, settings: &StepSettings) -> Result<f64> {
    tch::no_grad(|| {
        let mut total = 0.0;
        for mb in batch.micro_batches.iter().filter(|mb| mb.layout.width() > 0) {
            let (logprobs, _) = mb.layout.logprobs(policy, settings.temperature, false);
            let inputs = LossInputs {
                logprobs: &logprobs,
                old_logprobs: mb.old.as_ref(),
                ref_logprobs: mb.reference.as_ref(),
                advantages: &mb.advantages,
                mask: &mb.mask,
                entropies: None,
                behaviour_logprobs: None,
            };
            total += policy_loss(&inputs, &settings.loss, &batch.normalizer)?.loss.double_value(&[]);
        }
        Ok(total)
    })
}

/// One training step: `num_iterations` AdamW updates of `policy` on `batch` at learning rate
/// `lr` (the caller takes it from the schedule). `optimizer` must hold the policy's parameters
/// ([`AdamW::for_model`]). A NaN or infinite loss or gradient norm stops the step with
/// [`GrpoError::NonFinite`] before the update it would have corrupted (earlier updates of the
/// same step, with mu > 1, stay applied).
pub fn train_step(
    policy: &CausalLM,
    reference: Option<&CausalLM>,
    optimizer: &mut AdamW,
    batch: &TrainBatch,
    settings: &StepSettings,
    lr: f64,
) -> Result<StepStats> {
    // Broken weights show in the sampler's log-probs even when no completion is run below.
    if let Some(&value) = batch.sequences.iter().flat_map(|s| s.old_logprobs.iter().flatten()).find(|l| !l.is_finite())
    {
        return Err(GrpoError::NonFinite { what: "sampled log-prob", value: f64::from(value) });
    }
    let prepared = prepare_batch(policy, reference, batch, settings)?;
    let mut iterations = Vec::with_capacity(settings.num_iterations);
    let (mut sampling_logprob_diff, mut sampler_kl, mut tis_capped_frac) = (None, None, None);
    for iteration in 0..settings.num_iterations {
        let pass = accumulate_gradients(policy, &prepared, settings)?;
        if iteration == 0 && pass.sampling_tokens > 0.0 {
            sampling_logprob_diff = Some(pass.sampling_diff_sum / pass.sampling_tokens);
            sampler_kl = Some(pass.sampler_kl_sum / pass.sampling_tokens);
            tis_capped_frac = settings.loss.tis_cap.map(|_| pass.tis_capped / pass.sampling_tokens);
        }
        let grad_norm = optimizer.clip_and_step(lr, settings.max_grad_norm)?;
        let s = &pass.stats;
        iterations.push(IterationStats {
            loss: pass.loss,
            kl: (settings.loss.beta != 0.0).then(|| s.kl_mean()),
            entropy: s.entropy_mean(),
            clip_low: s.clip_low_fraction(),
            clip_high: s.clip_high_fraction(),
            clip_region: s.clip_region_fraction(),
            grad_norm,
        });
    }
    let n = iterations.len() as f64;
    let mean = |f: fn(&IterationStats) -> f64| iterations.iter().map(f).sum::<f64>() / n;
    Ok(StepStats {
        loss: mean(|i| i.loss),
        kl: (settings.loss.beta != 0.0).then(|| mean(|i| i.kl.unwrap_or(0.0))),
        entropy: mean(|i| i.entropy),
        clip_low: mean(|i| i.clip_low),
        clip_high: mean(|i| i.clip_high),
        clip_region: mean(|i| i.clip_region),
        grad_norm: mean(|i| i.grad_norm),
        lr,
        tokens: prepared.tokens,
        sequences: prepared.sequences,
        sampling_logprob_diff,
        sampler_kl,
        tis_capped_frac,
        iterations,
    })
}

#[cfg(test)]
#[path = "step_tool_tests.rs"]
mod tool_tests;
