//! The training step on the tiny Qwen2 fixture (CPU, fp32 unless said): gradients independent of
//! the micro-batch size and of whether a prompt is shared (also in bf16 mixed precision),
//! agreement with finite differences, the direction of an update, lr = 0, the alignment of
//! completion log-probs with the model's own, and the step's checks.

mod common;

use std::path::PathBuf;

use aha_grpo::{
    accumulate_gradients, batch_loss, prepare_batch, train_step, AdamW, AdamWConfig, GrpoError, LossParams, LossType,
    StepSettings, TrainBatch, TrainSequence,
};
use aha_model::{CausalLM, LoadOptions};
use common::tokens;
use tch::{Device, Kind, Tensor};

fn model_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/models/qwen2"))
}

fn load(kind: Kind) -> CausalLM {
    CausalLM::load(&model_dir(), LoadOptions { device: Device::Cpu, kind, compute: None, trainable: true }).unwrap()
}

fn sequence(seed: u64, prompt: usize, completion: usize, advantage: f32, truncated: bool) -> TrainSequence {
    TrainSequence {
        prompt_ids: tokens(seed, prompt),
        completion_ids: tokens(seed + 1000, completion),
        advantage,
        old_logprobs: None,
        truncated,
        tool_output: vec![],
    }
}

/// Five completions of different lengths (one empty, one truncated) and prompts of different
/// lengths, with mixed advantages.
fn batch() -> TrainBatch {
    // The last completion answers the first one's prompt, as completions of a GRPO group do: a
    // micro-batch that holds both runs that prompt once (the shared-prompt layout), one that
    // holds either alone runs prompt ++ completion.
    let mut same_prompt = sequence(5, 4, 6, 0.9, false);
    same_prompt.prompt_ids = tokens(1, 5);
    TrainBatch {
        sequences: vec![
            sequence(1, 5, 9, 1.2, false),
            sequence(2, 9, 3, -0.7, false),
            sequence(3, 3, 0, 0.4, false),
            sequence(4, 6, 12, -1.1, true),
            same_prompt,
        ],
    }
}

fn settings(loss_type: LossType, micro_batch_size: usize, num_iterations: usize, beta: f64) -> StepSettings {
    StepSettings {
        loss: LossParams { loss_type, epsilon_low: 0.2, epsilon_high: 0.28, beta, tis_cap: None },
        num_iterations,
        mask_truncated_completions: false,
        temperature: 0.7,
        max_completion_len: 16,
        micro_batch_size,
        max_grad_norm: 1.0,
    }
}

fn sorted_vars(model: &CausalLM) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = model.var_store().variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

fn grads(model: &CausalLM) -> Vec<f32> {
    sorted_vars(model)
        .iter()
        .flat_map(|(_, v)| Vec::<f32>::try_from(v.grad().to_kind(Kind::Float).flatten(0, -1)).unwrap())
        .collect()
}

fn weights(model: &CausalLM) -> Vec<f32> {
    sorted_vars(model)
        .iter()
        .flat_map(|(_, v)| Vec::<f32>::try_from(v.detach().to_kind(Kind::Float).flatten(0, -1)).unwrap())
        .collect()
}

/// Moves the policy away from where the old log-probs were computed, so that ratios differ from 1
/// and some tokens are clipped.
fn perturb(model: &CausalLM, factor: f64) {
    tch::no_grad(|| {
        for (_, mut v) in sorted_vars(model) {
            let _ = v.g_mul_scalar_(factor);
        }
    });
}

#[test]
fn gradient_does_not_depend_on_micro_batch_size() {
    let batch = batch();
    // (mu, beta, mask truncated): plain; mu = 2 with a moved policy and a KL term; masking.
    for (mu, beta, mask_truncated) in [(1, 0.0, false), (2, 0.04, false), (1, 0.0, true)] {
        for loss_type in LossType::ALL {
            let mut reference_grads: Option<Vec<f32>> = None;
            let mut reference_loss = 0.0;
            for micro in [1, 2, 5] {
                let policy = load(Kind::Float);
                let reference = (beta != 0.0).then(|| load(Kind::Float));
                let mut s = settings(loss_type, micro, mu, beta);
                s.mask_truncated_completions = mask_truncated;
                let prepared = prepare_batch(&policy, reference.as_ref(), &batch, &s).unwrap();
                assert_eq!(prepared.num_micro_batches(), batch.sequences.len().div_ceil(micro));
                if mu > 1 {
                    perturb(&policy, 1.05);
                }
                let pass = accumulate_gradients(&policy, &prepared, &s).unwrap();
                if mu > 1 {
                    assert!(pass.stats.clipped_region > 0.0, "{loss_type:?}: the moved policy clips some tokens");
                    assert!(pass.stats.kl_sum > 0.0);
                }
                let tokens = if mask_truncated { 9 + 3 + 6 } else { 9 + 3 + 12 + 6 };
                assert_eq!(pass.stats.tokens, tokens as f64);
                let g = grads(&policy);
                assert!(g.iter().all(|x| x.is_finite()));
                match &reference_grads {
                    None => {
                        reference_grads = Some(g);
                        reference_loss = pass.loss;
                    }
                    Some(r) => {
                        // fp32: padding changes the attention kernel and the summation order, so
                        // agreement is to 1e-5 relative to the largest gradient (seen: 5e-6).
                        let max_diff = g.iter().zip(r).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                        let scale = r.iter().map(|a| a.abs()).fold(1.0f32, f32::max);
                        assert!(
                            max_diff <= 1e-5 * scale,
                            "{loss_type:?} mu={mu} beta={beta} micro={micro}: gradients differ by {max_diff}"
                        );
                        assert!((pass.loss - reference_loss).abs() <= 1e-6, "{loss_type:?}: loss");
                    }
                }
            }
        }
    }
}

#[test]
fn gradient_matches_finite_differences() {
    // fp64 weights (the logits and the loss are fp32, as in training), mu = 2 with a moved policy
    // and beta > 0, micro-batches of 2 (each prompt run whole) and of 5 (a shared prompt): the
    // accumulated gradient against central differences of the batch loss on the entries with the
    // largest gradients.
    let batch = batch();
    for (loss_type, micro) in LossType::ALL.into_iter().flat_map(|l| [(l, 2), (l, 5)]) {
        let policy = load(Kind::Double);
        let reference = load(Kind::Double);
        let s = settings(loss_type, micro, 2, 0.1);
        let prepared = prepare_batch(&policy, Some(&reference), &batch, &s).unwrap();
        perturb(&policy, 1.03);
        accumulate_gradients(&policy, &prepared, &s).unwrap();
        let vars = sorted_vars(&policy);
        let mut entries: Vec<(usize, i64, f64)> = Vec::new();
        for (v, (_, t)) in vars.iter().enumerate() {
            let g = t.grad().flatten(0, -1);
            let i = g.abs().argmax(0, false).int64_value(&[]);
            entries.push((v, i, g.double_value(&[i])));
        }
        entries.sort_by(|a, b| b.2.abs().total_cmp(&a.2.abs()));
        let h = 1e-3;
        for &(v, i, analytic) in entries.iter().take(6) {
            let flat = vars[v].1.detach().flatten(0, -1);
            let original = flat.double_value(&[i]);
            let at = |x: f64| {
                tch::no_grad(|| {
                    let _ = flat.get(i).fill_(x);
                });
                batch_loss(&policy, &prepared, &s).unwrap()
            };
            let numeric = (at(original + h) - at(original - h)) / (2.0 * h);
            at(original);
            let tol = 2e-3 * analytic.abs().max(1e-2);
            assert!(
                (numeric - analytic).abs() <= tol,
                "{loss_type:?} micro={micro} {}[{i}]: finite differences {numeric}, gradient {analytic}",
                vars[v].0
            );
        }
    }
}

fn completion_logprob(model: &CausalLM, s: &TrainSequence, temperature: f64) -> f64 {
    let full: Vec<u32> = s.prompt_ids.iter().chain(&s.completion_ids).copied().collect();
    let lp = model.sequence_logprobs(&[full], temperature).unwrap().remove(0);
    lp[s.prompt_ids.len() - 1..].iter().map(|&x| f64::from(x)).sum()
}

#[test]
fn an_update_follows_the_sign_of_the_advantage() {
    for advantage in [1.0f32, -1.0] {
        for loss_type in LossType::ALL {
            let policy = load(Kind::Float);
            let mut opt = AdamW::for_model(&policy, AdamWConfig::default());
            let seq = sequence(7, 6, 8, advantage, false);
            let s = settings(loss_type, 1, 1, 0.0);
            let before = completion_logprob(&policy, &seq, s.temperature);
            let batch = TrainBatch { sequences: vec![seq.clone()] };
            let stats = train_step(&policy, None, &mut opt, &batch, &s, 1e-3).unwrap();
            let after = completion_logprob(&policy, &seq, s.temperature);
            assert!(stats.grad_norm > 0.0);
            if advantage > 0.0 {
                assert!(after > before, "{loss_type:?}: log-prob {before} -> {after} with A > 0");
            } else {
                assert!(after < before, "{loss_type:?}: log-prob {before} -> {after} with A < 0");
            }
        }
    }
    // Both at once, in one batch of two micro-batches.
    let policy = load(Kind::Float);
    let mut opt = AdamW::for_model(&policy, AdamWConfig::default());
    let (good, bad) = (sequence(11, 5, 7, 1.0, false), sequence(12, 5, 7, -1.0, false));
    let s = settings(LossType::Grpo, 1, 1, 0.0);
    let (good_before, bad_before) = (completion_logprob(&policy, &good, 0.7), completion_logprob(&policy, &bad, 0.7));
    let batch = TrainBatch { sequences: vec![good.clone(), bad.clone()] };
    train_step(&policy, None, &mut opt, &batch, &s, 1e-3).unwrap();
    assert!(completion_logprob(&policy, &good, 0.7) > good_before);
    assert!(completion_logprob(&policy, &bad, 0.7) < bad_before);
}

#[test]
fn lr_zero_changes_nothing() {
    let policy = load(Kind::Float);
    let reference = load(Kind::Float);
    let mut opt = AdamW::for_model(&policy, AdamWConfig { weight_decay: 0.1, ..AdamWConfig::default() });
    let before = weights(&policy);
    let stats =
        train_step(&policy, Some(&reference), &mut opt, &batch(), &settings(LossType::Dapo, 2, 2, 0.04), 0.0).unwrap();
    assert_eq!(weights(&policy), before);
    assert_eq!(opt.step_count(), 2);
    assert_eq!(stats.iterations.len(), 2);
    assert_eq!(stats.lr, 0.0);
    // Nothing moved, so the second update saw rho = 1 and a KL of 0.
    assert_eq!(stats.kl, Some(0.0));
    assert_eq!(stats.clip_region, 0.0);
    assert!(stats.loss.is_finite() && stats.entropy > 0.0 && stats.grad_norm > 0.0);
    assert_eq!(stats.tokens, 9 + 3 + 12 + 6);
    assert_eq!(stats.sequences, 5);
}

#[test]
fn completion_logprobs_line_up_with_the_model() {
    // Sampler log-probs computed by CausalLM::sequence_logprobs (each sequence alone) agree with
    // the step's micro-batches, left-padded (2) or with a shared prompt (5): the health metric is
    // ~0. Shifted by 0.5, it reads 0.5.
    for micro in [2, 5] {
        logprobs_line_up(micro);
    }
}

fn logprobs_line_up(micro_batch_size: usize) {
    let policy = load(Kind::Float);
    let s = settings(LossType::Grpo, micro_batch_size, 1, 0.0);
    let mut batch = batch();
    for seq in &mut batch.sequences {
        let full: Vec<u32> = seq.prompt_ids.iter().chain(&seq.completion_ids).copied().collect();
        let lp = policy.sequence_logprobs(&[full], s.temperature).unwrap().remove(0);
        seq.old_logprobs = Some(lp[seq.prompt_ids.len() - 1..].to_vec());
    }
    let mut opt = AdamW::for_model(&policy, AdamWConfig::default());
    let stats = train_step(&policy, None, &mut opt, &batch, &s, 0.0).unwrap();
    let diff = stats.sampling_logprob_diff.unwrap();
    assert!(diff < 1e-5, "micro={micro_batch_size}: mean |sampler - trainer| = {diff}");
    for seq in &mut batch.sequences {
        seq.old_logprobs.as_mut().unwrap().iter_mut().for_each(|x| *x -= 0.5);
    }
    let stats = train_step(&policy, None, &mut opt, &batch, &s, 0.0).unwrap();
    assert!((stats.sampling_logprob_diff.unwrap() - 0.5).abs() < 1e-4);
}

#[test]
fn rejects_bad_batches() {
    let policy = load(Kind::Float);
    let mut opt = AdamW::for_model(&policy, AdamWConfig::default());
    let s = settings(LossType::Grpo, 2, 1, 0.0);
    let mut err =
        |batch: TrainBatch, s: &StepSettings| train_step(&policy, None, &mut opt, &batch, s, 1e-3).unwrap_err();
    let e = err(TrainBatch::default(), &s);
    assert!(e.to_string().contains("no sequences"), "{e}");
    let mut b = batch();
    b.sequences[1].prompt_ids.clear();
    assert!(err(b, &s).to_string().contains("sequence 1 has an empty prompt"));
    let mut b = batch();
    b.sequences[0].old_logprobs = Some(vec![0.0; 2]);
    assert!(err(b, &s).to_string().contains("2 sampler log-probs for 9 completion tokens"));
    let mut b = batch();
    b.sequences[2].completion_ids = vec![400];
    assert!(err(b, &s).to_string().contains("outside the vocabulary"));
    let mut b = batch();
    b.sequences[0].advantage = f32::NAN;
    assert!(err(b, &s).to_string().contains("advantage NaN"));
    let e = err(batch(), &settings(LossType::Grpo, 2, 1, 0.1));
    assert!(e.to_string().contains("needs a reference model"), "{e}");

    // A non-finite loss stops the step before the update.
    let mut b = batch();
    b.sequences[0].advantage = f32::MAX;
    b.sequences[4].advantage = f32::MAX;
    let before = weights(&policy);
    let e = train_step(&policy, None, &mut opt, &b, &s, 1e-3).unwrap_err();
    assert!(matches!(e, GrpoError::NonFinite { .. }), "{e}");
    assert_eq!(weights(&policy), before);
    assert_eq!(opt.step_count(), 0);
}

#[test]
fn all_empty_completions_give_zero() {
    let policy = load(Kind::Float);
    let mut opt = AdamW::for_model(&policy, AdamWConfig::default());
    let batch = TrainBatch { sequences: vec![sequence(1, 4, 0, 1.0, false), sequence(2, 3, 0, -1.0, true)] };
    for loss_type in LossType::ALL {
        let stats = train_step(&policy, None, &mut opt, &batch, &settings(loss_type, 1, 1, 0.0), 1e-3).unwrap();
        assert_eq!((stats.loss, stats.grad_norm, stats.tokens), (0.0, 0.0, 0));
    }
}

#[test]
fn mixed_precision_shares_prompts_like_fp32() {
    // bf16 passes over fp32 weights: the shared-prompt layout (micro-batches of 5) and the whole
    // one (micro-batches of 1) agree to bf16's precision, and both point where fp32 does.
    let mixed = || {
        let options = LoadOptions { compute: Some(Kind::BFloat16), trainable: true, ..LoadOptions::default() };
        CausalLM::load(&model_dir(), options).unwrap()
    };
    let gradient = |policy: &CausalLM, micro: usize| {
        let s = settings(LossType::Dapo, micro, 1, 0.0);
        let prepared = prepare_batch(policy, None, &batch(), &s).unwrap();
        accumulate_gradients(policy, &prepared, &s).unwrap();
        Tensor::from_slice(&grads(policy))
    };
    let cosine = |a: &Tensor, b: &Tensor| {
        (a * b).sum(Kind::Double).double_value(&[]) / (a.norm().double_value(&[]) * b.norm().double_value(&[]))
    };
    let (whole, shared) = (gradient(&mixed(), 1), gradient(&mixed(), 5));
    let fp32 = gradient(&load(Kind::Float), 5);
    assert!(cosine(&whole, &shared) > 0.999, "whole against shared: {}", cosine(&whole, &shared));
    assert!(cosine(&shared, &fp32) > 0.95, "bf16 against fp32: {}", cosine(&shared, &fp32));
}
