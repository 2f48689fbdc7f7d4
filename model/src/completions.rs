//! Completions scored after their prompts: the training pass that GRPO's step and `aha sft` run,
//! behind one interface whichever way the model computes it.
//!
//! A [`CompletionBatch`] holds rows `prompt ++ completion` with the completion's tokens as
//! targets (and which of them count in a loss). [`CompletionBatch::logprobs`] scores them for
//! values only (old and reference log-probs); [`CompletionBatch::train_pass`] scores them for a
//! training step, and [`TrainPass::backward`] takes a loss's gradient back into the model. A
//! small fp32 model on the CPU ([`CausalLM::trains_fused`]) runs its own fused pass
//! (`decoder/fused_train.rs`), whose log-probs are a leaf of the loss's graph and whose backward
//! pass is hand-written; every other model (bf16, GPU, larger, LoRA adapters) goes through
//! autograd. The two give the same loss and gradients up to rounding
//! (grpo/tests/fused_training.rs); callers never see which ran.
//!
//! Layout: each row is scored after its prompt, left-padded ([`PaddedBatch`], with per-row
//! positions and a padding mask), so completions end in the last column; the last `C` positions
//! of the hidden states before the end, where `C` is the longest completion, predict the
//! completion tokens. Rows that share a prompt (a GRPO group) run it once through a KV cache.
//! Log-probs use logits divided by the temperature, log-softmax in fp32, in chunks of rows
//! ([`CausalLM::token_logprobs_and_entropy`]).

use std::sync::OnceLock;

use tch::{Device, Tensor};

use crate::batch::PaddedBatch;
use crate::decoder::{CausalLM, CompletionPass};
use crate::error::{ModelError, Result};

/// Sequences `prompt ++ completion` with their completion tokens as targets: the layout of GRPO's
/// micro-batches and of `aha sft`'s (where the "completion" is what the loss is on), so that both
/// score tokens the same way.
pub struct CompletionBatch {
    /// Each row's prompt and completion: all the fused training pass reads.
    rows: Vec<(Vec<u32>, Vec<u32>)>,
    /// The padded input of an autograd pass, built when one first runs.
    input: OnceLock<LayoutInput>,
    device: Device,
    /// Longest completion, C.
    width: i64,
    /// `[b, C]` completion tokens, right-aligned (zeros before shorter completions).
    targets: Tensor,
    /// `[b, C]` bool: completion tokens that count in the loss.
    loss_mask: Tensor,
}

enum LayoutInput {
    /// Each row `prompt ++ completion`, left-padded: the C positions before the last predict the
    /// completion.
    Whole(PaddedBatch),
    /// Rows that share a prompt (the G completions of a GRPO group) run it once. Its tokens but
    /// the last go through the model once per distinct prompt, into a KV cache; the cache is
    /// copied to every row that shares it (gradients from all of them add up in the copy's
    /// backward pass); then each row's last prompt token and completion attend to it. The same
    /// products as `Whole` for every token that counts, about (G - 1) / G of the prompt's cost
    /// less: with 40-token prompts and 64-token completions, a third of the pass.
    SharedPrompts {
        /// Each distinct prompt without its last token, left-padded.
        prefixes: PaddedBatch,
        /// `[b]` int64: the prefix of each row.
        prefix_of_row: Tensor,
        /// `[b, 1 + C]`: each row's last prompt token, then its completion, left-padded, and the
        /// positions of these tokens in the whole sequence.
        block: PaddedBatch,
    },
}

/// Checked by [`CompletionBatch::new`].
const NON_EMPTY: &str = "every row has a prompt token";

impl LayoutInput {
    /// The padded input of `rows` (see the variants) on `device`.
    fn of(rows: &[(Vec<u32>, Vec<u32>)], device: Device) -> Self {
        let mut distinct: Vec<&Vec<u32>> = Vec::new();
        let prefix_of_row: Vec<i64> = rows
            .iter()
            .map(|(prompt, _)| match distinct.iter().position(|p| *p == prompt) {
                Some(i) => i as i64,
                None => {
                    distinct.push(prompt);
                    distinct.len() as i64 - 1
                }
            })
            .collect();
        let shared = distinct.len() < rows.len() && rows.iter().all(|(prompt, _)| prompt.len() >= 2);
        if shared {
            let prefixes: Vec<Vec<u32>> = distinct.iter().map(|p| p[..p.len() - 1].to_vec()).collect();
            let blocks: Vec<Vec<u32>> = rows
                .iter()
                .map(|(prompt, completion)| [&prompt[prompt.len() - 1..], &completion[..]].concat())
                .collect();
            let mut block = PaddedBatch::left_padded(&blocks, 0, device).expect(NON_EMPTY);
            // Block token k of a row sits at position (prompt length - 1) + k.
            let offsets: Vec<i64> = rows.iter().map(|(prompt, _)| prompt.len() as i64 - 1).collect();
            let offsets = Tensor::from_slice(&offsets).to_device(device).unsqueeze(1);
            block.positions = (&block.positions + offsets).where_self(&block.attention_mask, &block.positions);
            LayoutInput::SharedPrompts {
                prefixes: PaddedBatch::left_padded(&prefixes, 0, device).expect(NON_EMPTY),
                prefix_of_row: Tensor::from_slice(&prefix_of_row).to_device(device),
                block,
            }
        } else {
            let full: Vec<Vec<u32>> =
                rows.iter().map(|(prompt, completion)| [&prompt[..], &completion[..]].concat()).collect();
            LayoutInput::Whole(PaddedBatch::left_padded(&full, 0, device).expect(NON_EMPTY))
        }
    }
}

impl CompletionBatch {
    /// One row per `(prompt, completion, counts)`: every prompt has at least one token; the
    /// completion's tokens are in the loss mask when `counts`. Rows with equal prompts share
    /// their prompt's pass when there are any (and every prompt has two tokens or more).
    pub fn new(rows: &[(&[u32], &[u32], bool)], device: Device) -> Result<Self> {
        let b = rows.len();
        let width = rows.iter().map(|(_, completion, _)| completion.len()).max().unwrap_or(0);
        let mut targets = vec![0i64; b * width];
        let mut mask = vec![false; b * width];
        for (row, &(_, completion, counts)) in rows.iter().enumerate() {
            let start = row * width + width - completion.len();
            for (j, &id) in completion.iter().enumerate() {
                targets[start + j] = i64::from(id);
                mask[start + j] = counts;
            }
        }
        if rows.is_empty() || rows.iter().any(|(prompt, _, _)| prompt.is_empty()) {
            return Err(ModelError::Input(
                "a completion batch needs rows, each with a prompt of one token or more".into(),
            ));
        }
        let shape = [b as i64, width as i64];
        Ok(Self {
            rows: rows.iter().map(|(prompt, completion, _)| (prompt.to_vec(), completion.to_vec())).collect(),
            input: OnceLock::new(),
            device,
            width: width as i64,
            targets: Tensor::from_slice(&targets).view(shape).to_device(device),
            loss_mask: Tensor::from_slice(&mask).view(shape).to_device(device),
        })
    }

    /// C, the longest completion (0 when every completion is empty).
    pub fn width(&self) -> i64 {
        self.width
    }

    /// `[b, C]` bool: the completion tokens that count in the loss.
    pub fn loss_mask(&self) -> &Tensor {
        &self.loss_mask
    }

    /// Forward pass on `model` (moved to its device) for values only (old and reference
    /// log-probs, losses for checks): completion log-probs `[b, C]` at `temperature` and, if
    /// asked, entropies.
    pub fn logprobs(&self, model: &CausalLM, temperature: f64, entropy: bool) -> (Tensor, Option<Tensor>) {
        let scored = self.train_pass(model, temperature, entropy);
        (scored.logprobs.detach(), scored.entropies)
    }

    /// The forward pass of a training step: as `logprobs`, and the way back for a loss's
    /// gradient. A model that trains fused (`CausalLM::trains_fused`: small, fp32, CPU) runs its
    /// own pass, whose log-probs are a leaf here; others go through autograd.
    pub fn train_pass(&self, model: &CausalLM, temperature: f64, entropy: bool) -> TrainPass {
        if model.trains_fused() {
            let rows: Vec<(&[u32], &[u32])> = self.rows.iter().map(|(p, c)| (&p[..], &c[..])).collect();
            let mut pass = model.completion_pass(&rows, temperature, entropy);
            let logprobs = std::mem::replace(&mut pass.logprobs, Tensor::new()).set_requires_grad(true);
            let entropies = pass.entropies.take();
            return TrainPass { logprobs, entropies, fused: Some(pass) };
        }
        let (logprobs, entropies) = self.autograd_logprobs(model, temperature, entropy);
        TrainPass { logprobs, entropies, fused: None }
    }

    fn autograd_logprobs(&self, model: &CausalLM, temperature: f64, entropy: bool) -> (Tensor, Option<Tensor>) {
        let device = model.device();
        let on_device = |batch: &PaddedBatch| {
            (
                batch.input_ids.to_device(device),
                batch.positions.to_device(device),
                batch.padding_mask().map(|m| m.to_device(device)),
            )
        };
        let input = self.input.get_or_init(|| LayoutInput::of(&self.rows, self.device));
        let hidden = match input {
            LayoutInput::Whole(input) => {
                let (ids, positions, mask) = on_device(input);
                let hidden = model.forward(&ids, &positions, mask.as_ref(), None);
                // Position p predicts token p + 1: the C positions before the last predict the
                // completion.
                let full = ids.size()[1];
                hidden.narrow(1, full - self.width - 1, self.width)
            }
            LayoutInput::SharedPrompts { prefixes, prefix_of_row, block } => {
                let (ids, positions, mask) = on_device(prefixes);
                let prefix_len = ids.size()[1];
                let mut cache = model.new_cache(ids.size()[0], prefix_len);
                let _ = model.forward(&ids, &positions, mask.as_ref(), Some(&mut cache));
                let block_len = block.input_ids.size()[1];
                let mut cache = cache.gather(&prefix_of_row.to_device(device), prefix_len, prefix_len + block_len);
                // Padding inside the block is masked whether or not a row is padded.
                let (ids, positions, mask) = (
                    block.input_ids.to_device(device),
                    block.positions.to_device(device),
                    block.attention_mask.to_device(device),
                );
                let hidden = model.forward(&ids, &positions, Some(&mask), Some(&mut cache));
                // Block token k predicts block token k + 1: the first C positions predict the
                // (right-aligned) completion.
                hidden.narrow(1, 0, self.width)
            }
        };
        model.token_logprobs_and_entropy(&hidden, &self.targets.to_device(device), temperature, entropy)
    }
}

/// Log-probs (and entropies) of a [`CompletionBatch`] from a training pass, and the way back
/// for a loss's gradient.
pub struct TrainPass {
    /// `[b, C]` completion log-probs (see [`CompletionBatch::logprobs`]); a loss built on them
    /// goes back through [`TrainPass::backward`].
    pub logprobs: Tensor,
    /// `[b, C]` entropies, without gradient, when asked for.
    pub entropies: Option<Tensor>,
    fused: Option<CompletionPass>,
}

impl TrainPass {
    /// Adds the gradient of `loss` (a function of `logprobs`) to the `.grad` of the model's
    /// trainable parameters.
    pub fn backward(self, model: &CausalLM, loss: &Tensor) {
        loss.backward();
        if let Some(fused) = self.fused {
            // No gradient reached the log-probs (a loss that does not use them): nothing to add.
            let grad = self.logprobs.grad();
            if grad.defined() {
                fused.backward(model, &grad);
            }
        }
    }
}
