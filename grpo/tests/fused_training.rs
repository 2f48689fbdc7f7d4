//! The fused training pass of small fp32 models (`CausalLM::completion_pass`) against autograd,
//! whose gradient `step.rs` checks with finite differences: on each fixture architecture (Qwen2
//! with q/k/v biases, Llama, Qwen3 with q/k norms), the same loss, statistics and gradients for a
//! GRPO batch of groups with prompts of 1 to 40 tokens, empty and truncated completions, a
//! moved policy (ratios off 1, clipping) and a KL term; and on one thread and two (where the
//! groups are shared out).

mod common;

use std::path::PathBuf;

use aha_grpo::{accumulate_gradients, prepare_batch, LossParams, LossType, StepSettings, TrainBatch, TrainSequence};
use aha_model::{CausalLM, LoadOptions};
use common::tokens;
use tch::{Device, Kind, Tensor};

fn load(name: &str, kind: Kind, fused: bool) -> CausalLM {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/models")).join(name);
    let mut model =
        CausalLM::load(&dir, LoadOptions { device: Device::Cpu, kind, compute: None, trainable: true }).unwrap();
    model.set_fused_training(fused);
    assert_eq!(model.trains_fused(), fused);
    model
}

/// Groups of 3 to 6 completions (0 to 47 tokens, some truncated) after prompts of 1 to 40
/// tokens; the first prompt comes back at the end, away from its group. About 1,400 tokens, so
/// that two threads each take some groups.
fn batch() -> TrainBatch {
    let prompts = [(1, 9), (2, 1), (3, 40), (4, 17), (5, 3), (6, 28)];
    let mut sequences = Vec::new();
    for (g, &(seed, prompt_len)) in prompts.iter().enumerate() {
        for c in 0..3 + g % 4 {
            let k = (g * 7 + c) as u64;
            sequences.push(TrainSequence {
                prompt_ids: tokens(seed, prompt_len),
                completion_ids: tokens(100 + k, ((k * 13) % 48) as usize),
                advantage: [1.3, -0.6, 0.25, -1.7, 0.8][c % 5],
                old_logprobs: None,
                truncated: c == 2,
                tool_output: vec![],
            });
        }
    }
    sequences.push(TrainSequence {
        prompt_ids: tokens(1, 9),
        completion_ids: tokens(999, 21),
        advantage: -0.4,
        old_logprobs: None,
        truncated: false,
        tool_output: vec![],
    });
    TrainBatch { sequences }
}

fn settings(loss_type: LossType, num_iterations: usize, beta: f64) -> StepSettings {
    StepSettings {
        loss: LossParams { loss_type, epsilon_low: 0.2, epsilon_high: 0.28, beta, tis_cap: None },
        num_iterations,
        mask_truncated_completions: true,
        temperature: 0.7,
        max_completion_len: 48,
        micro_batch_size: 64,
        max_grad_norm: 1.0,
    }
}

fn sorted_vars(model: &CausalLM) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = model.var_store().variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

fn perturb(model: &CausalLM, factor: f64) {
    tch::no_grad(|| {
        for (_, mut v) in sorted_vars(model) {
            let _ = v.g_mul_scalar_(factor);
        }
    });
}

/// The loss, entropy and clip statistics, and every weight's gradient, of one pass.
fn pass(model: &CausalLM, reference: Option<&CausalLM>, s: &StepSettings) -> (Vec<f64>, Vec<(String, Vec<f32>)>) {
    let prepared = prepare_batch(model, reference, &batch(), s).unwrap();
    if s.num_iterations > 1 {
        perturb(model, 1.04);
    }
    let out = accumulate_gradients(model, &prepared, s).unwrap();
    let st = out.stats;
    let numbers = vec![out.loss, st.tokens, st.entropy_sum, st.kl_sum, st.clipped_low, st.clipped_high];
    let grads = sorted_vars(model)
        .into_iter()
        .map(|(name, v)| (name, Vec::<f32>::try_from(v.grad().to_kind(Kind::Float).flatten(0, -1)).unwrap()))
        .collect();
    (numbers, grads)
}

type Pass = (Vec<f64>, Vec<(String, Vec<f32>)>);

/// Rounding in a gradient summed over every token, relative to the largest gradient, that the
/// CPU's BLAS kernels alone may add: MKL's SSE4.2 path (no fused multiply-add, as another CPU
/// may take) puts the fused pass's embedding gradient 5e-5 of the largest gradient from fp64,
/// where autograd's is 1.2e-5. A wrong term is far above it: 0.1% off one term of attention's
/// backward is 3e-3, a swapped RoPE sine 0.6.
const GRADIENT_ROUNDING: f32 = 2e-4;

/// The fused pass is as close to the fp64 one (`exact`) as autograd's fp32 pass is: its
/// statistics within 1e-5 relative, each weight's gradient within twice autograd's largest
/// error, or within [`GRADIENT_ROUNDING`] of the largest gradient. In fp32 the two differ from
/// fp64 and from each other by about 1e-5 of the largest gradient in the first layer's weights
/// and the embeddings; the fused pass is usually the closer.
fn assert_as_exact(what: &str, fused: &Pass, autograd: &Pass, exact: &Pass) {
    for (i, (x, y)) in fused.0.iter().zip(&exact.0).enumerate() {
        assert!((x - y).abs() <= 1e-5 * y.abs().max(1.0), "{what}: statistic {i}: {x} against {y}");
    }
    let scale = exact.1.iter().flat_map(|(_, g)| g).fold(0.0f32, |m, x| m.max(x.abs()));
    let error = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    for (((name, f), (_, a)), (_, e)) in fused.1.iter().zip(&autograd.1).zip(&exact.1) {
        let (fused_error, autograd_error) = (error(f, e), error(a, e));
        assert!(
            fused_error <= (2.0 * autograd_error).max(GRADIENT_ROUNDING * scale),
            "{what}: {name} is {fused_error} from fp64, autograd in fp32 {autograd_error}"
        );
        assert!(f.iter().any(|&v| v != 0.0), "{what}: {name} has no gradient");
    }
}

#[test]
fn fused_training_is_as_exact_as_autograd_on_every_architecture() {
    tch::set_num_threads(2);
    for name in ["qwen2", "llama", "qwen3"] {
        for (loss_type, mu, beta) in [(LossType::Dapo, 1, 0.0), (LossType::Grpo, 2, 0.05), (LossType::DrGrpo, 2, 0.0)] {
            let what = format!("{name} {loss_type:?} mu={mu} beta={beta}");
            let s = settings(loss_type, mu, beta);
            let run = |kind: Kind, fused: bool| {
                let reference = (beta != 0.0).then(|| load(name, kind, false));
                pass(&load(name, kind, fused), reference.as_ref(), &s)
            };
            let exact = run(Kind::Double, false);
            if mu > 1 {
                assert!(exact.0[4] + exact.0[5] > 0.0, "{what}: the moved policy clips some tokens");
            }
            assert_as_exact(&what, &run(Kind::Float, true), &run(Kind::Float, false), &exact);
        }
    }
}

#[test]
fn fused_training_on_one_thread_is_as_exact_as_on_two() {
    let s = settings(LossType::Bnpo, 1, 0.0);
    let exact = pass(&load("qwen2", Kind::Double, false), None, &s);
    let autograd = pass(&load("qwen2", Kind::Float, false), None, &s);
    for threads in [1, 2] {
        tch::set_num_threads(threads);
        let fused = pass(&load("qwen2", Kind::Float, true), None, &s);
        assert_as_exact(&format!("{threads} thread(s)"), &fused, &autograd, &exact);
    }
}
