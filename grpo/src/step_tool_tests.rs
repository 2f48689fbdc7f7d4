//! The tokens of tool results are context, not actions: their log-probs get no gradient from the
//! loss (policy term, ratio, KL), and they do not count in the loss's token normaliser.

use aha_model::{CausalLM, LoadOptions};
use tch::{Device, Kind, Tensor};

use super::*;
use crate::loss::{LossParams, LossType};

fn model() -> CausalLM {
    let dir = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/models/qwen2"));
    CausalLM::load(&dir, LoadOptions { device: Device::Cpu, kind: Kind::Float, compute: None, trainable: true })
        .unwrap()
}

fn ids(seed: u32, n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (seed * 37 + i * 11) % 400).collect()
}

/// Two completions of one prompt and one of another, with tool-result spans inside.
fn batch() -> TrainBatch {
    let sequence = |prompt: Vec<u32>, seed: u32, len: usize, advantage: f32, spans: &[(usize, usize)]| {
        let mut tool_output = vec![false; len];
        for &(start, n) in spans {
            tool_output[start..start + n].iter_mut().for_each(|t| *t = true);
        }
        TrainSequence {
            prompt_ids: prompt,
            completion_ids: ids(seed, len),
            advantage,
            // The sampler gives 0.0 for a result's tokens; the rest are plausible log-probs.
            old_logprobs: Some((0..len).map(|j| if tool_output[j] { 0.0 } else { -6.0 }).collect()),
            truncated: false,
            tool_output,
        }
    };
    TrainBatch {
        sequences: vec![
            sequence(ids(1, 5), 2, 14, 1.3, &[(3, 4)]),
            sequence(ids(1, 5), 3, 10, -0.8, &[(2, 3), (7, 2)]),
            sequence(ids(4, 7), 5, 12, 0.6, &[]),
        ],
    }
}

fn settings(loss_type: LossType, beta: f64) -> StepSettings {
    StepSettings {
        loss: LossParams { loss_type, epsilon_low: 0.2, epsilon_high: 0.28, beta, tis_cap: None },
        num_iterations: 2,
        mask_truncated_completions: false,
        temperature: 0.9,
        max_completion_len: 16,
        micro_batch_size: 2,
        max_grad_norm: 1.0,
    }
}

#[test]
fn tool_output_tokens_get_no_gradient_and_do_not_count() {
    let policy = model();
    let batch = batch();
    let actions: usize = batch.sequences.iter().map(|s| s.tool_output.iter().filter(|t| !**t).count()).sum();
    for (loss_type, beta) in [(LossType::Grpo, 0.0), (LossType::Dapo, 0.04), (LossType::DrGrpo, 0.04)] {
        let settings = settings(loss_type, beta);
        // The policy is its own reference here: the KL term is present (and 0 in value).
        let prepared = prepare_batch(&policy, Some(&policy), &batch, &settings).unwrap();
        assert_eq!(prepared.tokens, actions, "only the policy's own tokens count");
        assert_eq!(prepared.normalizer.tokens, actions as f64);
        let mut checked_tool = 0;
        let mut moved_action = 0;
        for mb in &prepared.micro_batches {
            // Log-probs as a leaf, perturbed so that the ratio and the KL are not at their
            // stationary point: every term of the loss has a gradient where it is not masked.
            let pass = mb.layout.train_pass(&policy, settings.temperature, true);
            let noise = Tensor::randn_like(&pass.logprobs.detach()) * 0.1;
            let logprobs = (pass.logprobs.detach() + noise).set_requires_grad(true);
            let inputs = LossInputs {
                logprobs: &logprobs,
                old_logprobs: mb.old.as_ref(),
                ref_logprobs: mb.reference.as_ref(),
                advantages: &mb.advantages,
                mask: &mb.mask,
                entropies: pass.entropies.as_ref(),
                behaviour_logprobs: None,
            };
            let out = policy_loss(&inputs, &settings.loss, &prepared.normalizer).unwrap();
            out.loss.backward();
            let grad = Vec::<f32>::try_from(logprobs.grad().flatten(0, -1)).unwrap();
            let mask = Vec::<bool>::try_from(mb.mask.flatten(0, -1)).unwrap();
            let layout = Vec::<bool>::try_from(mb.layout.loss_mask().flatten(0, -1)).unwrap();
            for ((g, in_loss), completion) in grad.iter().zip(&mask).zip(&layout) {
                if *completion && !*in_loss {
                    assert_eq!(*g, 0.0, "{loss_type:?}: a tool-output token has gradient {g}");
                    checked_tool += 1;
                } else if *in_loss && *g != 0.0 {
                    moved_action += 1;
                }
            }
        }
        assert_eq!(checked_tool, 4 + 3 + 2, "{loss_type:?}: every tool-output token was checked");
        assert!(moved_action > actions / 2, "{loss_type:?}: the model's own tokens train ({moved_action}/{actions})");
    }
}

#[test]
fn tool_output_marks_must_match_the_completion() {
    let policy = model();
    let mut batch = batch();
    batch.sequences[0].tool_output.pop();
    let err = prepare_batch(&policy, None, &batch, &settings(LossType::Grpo, 0.0)).err().expect("a mismatch");
    assert!(err.to_string().contains("tool-output tokens"), "{err}");
}
