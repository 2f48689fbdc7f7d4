//! A training pass of a small fp32 model on the CPU: the forward pass to the log-probs of
//! completion tokens after their prompts, keeping what the backward pass needs, then the backward
//! pass from the gradient of those log-probs into the weights' `.grad`. libtorch (MKL) does the
//! matrix products; everything between them (norms, rotations, attention, SiLU, the
//! log-softmax, and their gradients) runs in Rust, as in the fused decode step
//! (`fused_decode.rs`).
//!
//! Why: through autograd, a small model's pass is mostly overhead. In GRPO's bench batch on the
//! tiny model (64 completions of 64 tokens after 40-token prompts, 4,472 tokens) the products
//! were about a quarter of the pass: the rest was some two hundred elementwise operations of
//! 1-2 MB each, forward and backward, each waking libtorch's threads. Fused, the pass takes
//! 0.030-0.034 s against autograd's 0.045-0.050 s (interleaved runs of `train_pass`, whose
//! `--autograd` switches paths).
//!
//! Layout, without padding: the rows that share a prompt (a GRPO group) run it once. A group's
//! tokens are its prompt but the last token (the prefix), then each row's last prompt token and
//! completion; a row's tokens attend to the prefix and to the row's own earlier tokens, and the
//! prefix's keys and values get the gradients of every row that read them. Whole groups are
//! shared out among libtorch's threads (`intra_op`), each running forward and backward for its
//! groups with single-threaded products and its own weight gradients; these are summed in a
//! fixed order at the end. So a pass gives the same numbers for the same thread count.
//!
//! The numbers are autograd's up to rounding: grpo/tests/fused_training.rs checks that the loss
//! and every gradient are as close to autograd's in fp64 as autograd's own fp32 pass is, on
//! Qwen2, Llama and Qwen3 (their first layers and embeddings differ from fp64 by about 1e-5 of
//! the largest gradient either way). The log-probs use logits divided by the temperature,
//! log-softmax in fp32, and `exp` from `cpu_math` (2 ulp).

use std::ops::Range;

use tch::{Kind, Tensor};

use super::fused_decode::{add_in_place, add_rows, host, matrix, norm_weight, rotate, silu_times_up};
use super::{Attention, CausalLM, FusedLinear, Linear, RmsNorm};
use crate::cpu_math::{self, multiversioned};
use crate::intra_op;
use crate::mkl_gemm::{sgemm, Operand};

/// Largest model that trains fused: multiply-adds per token of one layer's products. The tiny
/// fixture model has 37k. The 24.5M bench model, 3M, keeps autograd: its pass is mostly products,
/// and fused it took the same time (3.2-3.5 s either way), while each thread would keep a copy
/// of every weight's gradient.
const FUSED_TRAINING_UP_TO_LAYER_MACS: i64 = 1 << 20;

/// Fewest tokens a thread takes when the groups of a pass are shared out.
const MIN_TOKENS_PER_PART: usize = 512;

impl CausalLM {
    /// Whether [`CausalLM::completion_pass`] can run: an fp32 model (weights and passes) on the
    /// CPU, small enough (see `FUSED_TRAINING_UP_TO_LAYER_MACS`), every weight trainable, no LoRA
    /// adapters, and fused training not switched off ([`CausalLM::set_fused_training`]).
    pub fn trains_fused(&self) -> bool {
        self.fused_training
            && self.is_fp32_on_cpu()
            && self.layer_macs_per_token() <= FUSED_TRAINING_UP_TO_LAYER_MACS
            && self.adapters.is_none()
            && self.vars.variables().values().all(Tensor::requires_grad)
    }

    /// Allows or forbids the fused training pass (it is allowed by default): with it forbidden,
    /// training goes through autograd, which the tests compare it with.
    pub fn set_fused_training(&mut self, allowed: bool) {
        self.fused_training = allowed;
    }

    /// The forward pass of a training step (see the module's notes): for each `(prompt,
    /// completion)` row (every prompt at least one token), the log-probs of the completion's
    /// tokens at `temperature`, right-aligned in `[rows, longest completion]` (0 before shorter
    /// completions), and with `entropy` the entropy of each of those distributions. Keeps what
    /// [`CompletionPass::backward`] needs. Only where [`CausalLM::trains_fused`].
    pub(crate) fn completion_pass(&self, rows: &[(&[u32], &[u32])], temperature: f64, entropy: bool) -> CompletionPass {
        assert!(self.trains_fused(), "completion_pass needs a model that trains fused");
        assert!(temperature > 0.0, "temperature must be positive for log-probs, got {temperature}");
        let width = rows.iter().map(|(_, completion)| completion.len()).max().unwrap_or(0);
        let threads = intra_op::threads();
        let parts = Part::split(rows, width, threads);
        let highest = rows.iter().map(|(prompt, completion)| prompt.len() - 1 + completion.len()).max().unwrap_or(0);
        let pass = PassConstants::of(self, temperature as f32, highest);
        let mut forwards: Vec<Option<Forward>> = parts.iter().map(|_| None).collect();
        let tasks: Vec<_> = parts.iter().zip(forwards.iter_mut()).collect();
        run_parts(tasks, threads, |(part, out)| *out = Some(pass.forward(part, entropy)));
        let forwards: Vec<Forward> = forwards.into_iter().map(|f| f.expect("every part ran")).collect();

        let mut logprobs = vec![0f32; rows.len() * width];
        let mut entropies = vec![0f32; if entropy { rows.len() * width } else { 0 }];
        for (part, forward) in parts.iter().zip(&forwards) {
            for (i, scored) in part.scored.iter().enumerate() {
                logprobs[scored.out] = forward.logprobs[i];
                if entropy {
                    entropies[scored.out] = forward.entropies[i];
                }
            }
        }
        let shape = [rows.len() as i64, width as i64];
        CompletionPass {
            logprobs: Tensor::from_slice(&logprobs).view(shape),
            entropies: entropy.then(|| Tensor::from_slice(&entropies).view(shape)),
            parts,
            forwards,
            threads,
            temperature: temperature as f32,
            highest,
        }
    }
}

/// The forward half of a fused training pass (see [`CausalLM::completion_pass`]).
pub(crate) struct CompletionPass {
    /// `[rows, longest completion]` fp32 log-probs of the completion tokens, right-aligned.
    pub logprobs: Tensor,
    /// The same shape: entropies of the tempered distributions, if asked for.
    pub entropies: Option<Tensor>,
    parts: Vec<Part>,
    forwards: Vec<Forward>,
    threads: usize,
    temperature: f32,
    /// The highest position of the pass.
    highest: usize,
}

impl CompletionPass {
    /// Adds to the `.grad` of `model`'s weights the gradient of a loss whose gradient with
    /// respect to [`CompletionPass::logprobs`] is `grad` (same shape; entries that are not
    /// completion tokens are ignored).
    pub fn backward(self, model: &CausalLM, grad: &Tensor) {
        let grad = Vec::<f32>::try_from(grad.to_kind(Kind::Float).contiguous().view([-1])).expect("fp32 gradient");
        let pass = PassConstants::of(model, self.temperature, self.highest);
        let mut sums: Vec<Option<Gradients>> = self.parts.iter().map(|_| None).collect();
        let tasks: Vec<_> = self.parts.iter().zip(self.forwards).zip(sums.iter_mut()).collect();
        run_parts(tasks, self.threads, |((part, forward), out)| {
            let dlogprobs: Vec<f32> = part.scored.iter().map(|s| grad[s.out]).collect();
            *out = Some(pass.backward(part, forward, &dlogprobs));
        });
        // Summed in the order of the parts, so that the result does not depend on which thread
        // finished first.
        let mut parts = sums.into_iter().map(|g| g.expect("every part ran"));
        let mut total = parts.next().expect("at least one part").0;
        for part in parts {
            for ((_, sum), (_, g)) in total.iter_mut().zip(part.0) {
                *sum = &*sum + g;
            }
        }
        add_to_grads(total);
    }
}

/// Runs `task` on each of `tasks`: on the calling thread (libtorch's products then use every
/// thread) when there is one, else shared out among libtorch's threads, whose products then run
/// single-threaded. No gradient is recorded either way.
fn run_parts<T: Send>(tasks: Vec<T>, threads: usize, task: impl Fn(T) + Sync) {
    if tasks.len() == 1 {
        let only = tasks.into_iter().next().expect("one task");
        return tch::no_grad(|| task(only));
    }
    // Grad mode is per thread: the team's other threads record by default.
    intra_op::parallel_parts(tasks, threads, |_, t| tch::no_grad(|| task(t)));
}

/// Adds each gradient to its weight's `.grad`. A weight that has none yet gets it through
/// autograd (tch cannot set `.grad` directly): the gradient of `sum(weight * g)` is `g`, exactly.
fn add_to_grads(grads: Vec<(Tensor, Tensor)>) {
    let mut fresh: Option<Tensor> = None;
    for (weight, g) in grads {
        let mut existing = weight.grad();
        if existing.defined() {
            tch::no_grad(|| existing += g);
        } else {
            let term = (&weight * g).sum(Kind::Float);
            fresh = Some(match fresh {
                Some(total) => total + term,
                None => term,
            });
        }
    }
    if let Some(total) = fresh {
        total.backward();
    }
}

/// Some whole groups of a pass, run by one thread: their tokens, flat.
struct Part {
    ids: Vec<i64>,
    positions: Vec<usize>,
    groups: Vec<Group>,
    scored: Vec<Scored>,
}

/// A prompt's tokens in a part: its prefix (the prompt but its last token; may be empty) and its
/// rows (the last prompt token, then a completion).
struct Group {
    prefix: Range<usize>,
    rows: Vec<Range<usize>>,
}

/// A token whose next token is scored.
struct Scored {
    /// Its index in the part.
    token: usize,
    target: usize,
    /// Where its log-prob goes in `[rows, width]`.
    out: usize,
}

impl Part {
    /// The rows grouped by prompt (in order of first appearance), the groups shared out among up
    /// to `threads` parts of about equal token counts.
    fn split(rows: &[(&[u32], &[u32])], width: usize, threads: usize) -> Vec<Part> {
        let mut prompts: Vec<(&[u32], Vec<usize>)> = Vec::new();
        for (i, (prompt, _)) in rows.iter().enumerate() {
            assert!(!prompt.is_empty(), "row {i} has an empty prompt");
            match prompts.iter_mut().find(|(p, _)| p == prompt) {
                Some((_, members)) => members.push(i),
                None => prompts.push((prompt, vec![i])),
            }
        }
        let tokens = |(prompt, members): &(&[u32], Vec<usize>)| {
            prompt.len() - 1 + members.iter().map(|&r| 1 + rows[r].1.len()).sum::<usize>()
        };
        let total: usize = prompts.iter().map(tokens).sum();
        let count = threads.min(total / MIN_TOKENS_PER_PART).min(prompts.len()).max(1);
        let mut parts: Vec<Part> = Vec::with_capacity(count);
        let mut done = 0;
        for group in &prompts {
            // A new part starts where this one has its share.
            if parts.is_empty() || (parts.len() < count && done * count >= parts.len() * total) {
                parts.push(Part { ids: Vec::new(), positions: Vec::new(), groups: Vec::new(), scored: Vec::new() });
            }
            parts.last_mut().expect("a part").push_group(rows, group, width);
            done += tokens(group);
        }
        parts
    }

    fn push_group(&mut self, rows: &[(&[u32], &[u32])], (prompt, members): &(&[u32], Vec<usize>), width: usize) {
        let last = prompt.len() - 1;
        let start = self.ids.len();
        self.ids.extend(prompt[..last].iter().map(|&t| i64::from(t)));
        self.positions.extend(0..last);
        let mut group = Group { prefix: start..self.ids.len(), rows: Vec::with_capacity(members.len()) };
        for &r in members {
            let completion = rows[r].1;
            let start = self.ids.len();
            self.ids.push(i64::from(prompt[last]));
            self.ids.extend(completion.iter().map(|&t| i64::from(t)));
            self.positions.extend(last..last + 1 + completion.len());
            for (j, &target) in completion.iter().enumerate() {
                let out = r * width + width - completion.len() + j;
                self.scored.push(Scored { token: start + j, target: target as usize, out });
            }
            group.rows.push(start..self.ids.len());
        }
        self.groups.push(group);
    }
}

/// The constants every part of a fused training pass reads: the model, its dimensions, the
/// temperature and the rope tables.
struct PassConstants<'a> {
    model: &'a CausalLM,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    hidden: usize,
    intermediate: usize,
    temperature: f32,
    /// cos and sign-folded sin tables (see `Rope`), covering every position of the pass.
    cos: Tensor,
    sin: Tensor,
}

// SAFETY: the parts' tasks only read the model's weights and the rope tables (libtorch tensors
// may be read from several threads at once; fp32 weights are used as stored, without the cast
// cache), and write memory of their own.
unsafe impl Sync for PassConstants<'_> {}

/// What the forward pass of one part keeps for its backward pass.
struct Forward {
    layers: Vec<LayerActivations>,
    /// The residual stream before the final norm, and the norm's factors.
    last: Vec<f32>,
    last_inverse_rms: Vec<f32>,
    /// `[scored, hidden]`: the final hidden states of the scored tokens.
    scored_hidden: Tensor,
    /// `[scored, vocab]`: the softmax of the tempered logits.
    probabilities: Tensor,
    logprobs: Vec<f32>,
    entropies: Vec<f32>,
}

struct LayerActivations {
    /// The residual stream into the layer, `[n, hidden]`, and the input norm's factors.
    input: Vec<f32>,
    input_inverse_rms: Vec<f32>,
    /// `[n, hidden]`: the normed input (the q, k, v products' input).
    normed: Tensor,
    /// `[n, (heads + 2 kv_heads) * head_dim]`: q, k, v as projected.
    qkv: Tensor,
    /// The same after Qwen3's per-head norms and the rotation of q and k.
    rotated: Vec<f32>,
    /// `[n, heads * head_dim]`: attention's output, and `[n, heads]` the log of each softmax's
    /// denominator (scores scaled).
    attended: Tensor,
    log_totals: Vec<f32>,
    /// The residual stream after attention, its norm's factors and the normed values.
    mid: Vec<f32>,
    mid_inverse_rms: Vec<f32>,
    mid_normed: Tensor,
    /// `[n, 2 intermediate]`: gate and up projections; `[n, intermediate]`: silu(gate) * up.
    gate_up: Tensor,
    activated: Tensor,
}

/// `(weight, gradient)` pairs, in an order that depends only on the model.
struct Gradients(Vec<(Tensor, Tensor)>);

impl Gradients {
    fn push(&mut self, weight: &Tensor, grad: Tensor) {
        self.0.push((weight.shallow_clone(), grad));
    }

    fn push_norm(&mut self, norm: &RmsNorm, grad: &[f32]) {
        self.push(&norm.weight.stored, Tensor::from_slice(grad));
    }
}

impl<'a> PassConstants<'a> {
    fn of(model: &'a CausalLM, temperature: f32, highest_position: usize) -> Self {
        let c = &model.config;
        let (cos, sin) = model.rope_table_to(highest_position as i64);
        Self {
            model,
            heads: c.num_attention_heads as usize,
            kv_heads: c.num_key_value_heads as usize,
            head_dim: c.head_dim as usize,
            hidden: c.hidden_size as usize,
            intermediate: c.intermediate_size as usize,
            temperature,
            cos,
            sin,
        }
    }

    fn rotations<'p>(&'p self, part: &'p Part) -> Rotations<'p> {
        Rotations { positions: &part.positions, cos: host(&self.cos), sin: host(&self.sin) }
    }

    fn attention_shape(&self) -> AttentionShape {
        AttentionShape { heads: self.heads, kv_heads: self.kv_heads, head_dim: self.head_dim }
    }

    fn forward(&self, part: &Part, entropy: bool) -> Forward {
        let model = self.model;
        let (n, h) = (part.ids.len(), self.hidden);
        let embed = host(&model.embed_tokens);
        let mut x = vec![0f32; n * h];
        for (row, &id) in x.chunks_exact_mut(h).zip(&part.ids) {
            row.copy_from_slice(&embed[id as usize * h..][..h]);
        }
        let width = (self.heads + 2 * self.kv_heads) * self.head_dim;
        let mut layers = Vec::with_capacity(model.layers.len());
        for layer in &model.layers {
            let attn = &layer.self_attn;
            let (input_inverse_rms, normed) = norm_rows(&x, &layer.input_layernorm);
            let qkv = attn.qkv.fused.forward(&normed, false);
            let mut rotated = vec![0f32; n * width];
            rotate_rows(&self.attention_shape(), host(&qkv), self.rotations(part), head_norms(attn), &mut rotated);
            let mut log_totals = vec![0f32; n * self.heads];
            let attended = matrix(n, self.heads * self.head_dim, |out| {
                attention_forward(&self.attention_shape(), &part.groups, &rotated, out, &mut log_totals)
            });
            let input = x.clone();
            add_rows(&mut x, &attn.o_proj.forward(&attended, false));

            let mlp = &layer.mlp;
            let (mid_inverse_rms, mid_normed) = norm_rows(&x, &layer.post_attention_layernorm);
            let gate_up = mlp.gate_up.fused.forward(&mid_normed, false);
            let activated = matrix(n, self.intermediate, |out| silu_times_up(host(&gate_up), self.intermediate, out));
            let mid = x.clone();
            add_rows(&mut x, &mlp.down_proj.forward(&activated, false));
            layers.push(LayerActivations {
                input,
                input_inverse_rms,
                normed,
                qkv,
                rotated,
                attended,
                log_totals,
                mid,
                mid_inverse_rms,
                mid_normed,
                gate_up,
                activated,
            });
        }
        // Only the scored tokens go through the final norm's output and the LM head.
        let (weight, eps) = norm_weight(&model.norm);
        let mut last_inverse_rms = vec![0f32; n];
        let scored_hidden = matrix(part.scored.len(), h, |out| {
            for (s, out) in part.scored.iter().zip(out.chunks_exact_mut(h)) {
                last_inverse_rms[s.token] = rms_norm_row(&x[s.token * h..][..h], weight, eps, out);
            }
        });
        let logits = model.logits(&scored_hidden);
        let targets: Vec<usize> = part.scored.iter().map(|s| s.target).collect();
        let mut logprobs = vec![0f32; targets.len()];
        let mut entropies = vec![0f32; if entropy { targets.len() } else { 0 }];
        let probabilities = matrix(targets.len(), model.config.vocab_size as usize, |out| {
            log_softmax_rows(host(&logits), self.temperature, &targets, out, &mut logprobs, &mut entropies)
        });
        Forward { layers, last: x, last_inverse_rms, scored_hidden, probabilities, logprobs, entropies }
    }

    fn backward(&self, part: &Part, forward: Forward, dlogprobs: &[f32]) -> Gradients {
        let model = self.model;
        let (n, h) = (part.ids.len(), self.hidden);
        let mut grads = Gradients(Vec::new());
        // d logp / d logit_v = (1[v = target] - p_v) / T.
        let targets: Vec<usize> = part.scored.iter().map(|s| s.target).collect();
        let vocab = model.config.vocab_size as usize;
        let dlogits = matrix(targets.len(), vocab, |out| {
            logit_gradients(host(&forward.probabilities), &targets, dlogprobs, self.temperature, out)
        });
        drop(forward.probabilities);
        let lm_head = &model.lm_head.stored;
        grads.push(lm_head, dlogits.tr().mm(&forward.scored_hidden));
        let dscored = dlogits.mm(lm_head);
        // The gradient of the residual stream, from the top down.
        let mut dx = vec![0f32; n * h];
        let weight = host(&model.norm.weight.stored);
        let mut dweight = vec![0f32; h];
        for (s, dy) in part.scored.iter().zip(host(&dscored).chunks_exact(h)) {
            let token = s.token * h..(s.token + 1) * h;
            norm_backward(
                &forward.last[token.clone()],
                forward.last_inverse_rms[s.token],
                weight,
                dy,
                &mut dx[token],
                &mut dweight,
            );
        }
        let mut layer_grads = Vec::with_capacity(model.layers.len());
        for (layer, saved) in model.layers.iter().zip(forward.layers).rev() {
            let mut g = Gradients(Vec::new());
            let mlp = &layer.mlp;
            let dy = tensor_of(&dx, h);
            let dactivated = linear_backward(&mlp.down_proj, &saved.activated, &dy, &mut g);
            let dgate_up = matrix(n, 2 * self.intermediate, |out| {
                silu_times_up_backward(host(&saved.gate_up), host(&dactivated), self.intermediate, out)
            });
            let dmid_normed = fused_linear_backward(&mlp.gate_up, &saved.mid_normed, &dgate_up, &mut g);
            let norm = &layer.post_attention_layernorm;
            norm_rows_backward(&saved.mid, &saved.mid_inverse_rms, norm, host(&dmid_normed), &mut dx, &mut g);

            let attn = &layer.self_attn;
            let dy = tensor_of(&dx, h);
            let dattended = linear_backward(&attn.o_proj, &saved.attended, &dy, &mut g);
            let width = (self.heads + 2 * self.kv_heads) * self.head_dim;
            let mut drotated = vec![0f32; n * width];
            attention_backward(
                &self.attention_shape(),
                &part.groups,
                &saved.rotated,
                host(&saved.attended),
                &saved.log_totals,
                host(&dattended),
                &mut drotated,
            );
            let norms = head_norms(attn);
            let mut dhead_norms = vec![0f32; if norms.is_some() { 2 * self.head_dim } else { 0 }];
            let dqkv = matrix(n, width, |out| {
                let shape = self.attention_shape();
                rotate_rows_backward(
                    &shape,
                    host(&saved.qkv),
                    self.rotations(part),
                    norms,
                    &drotated,
                    out,
                    &mut dhead_norms,
                )
            });
            if let (Some(q_norm), Some(k_norm)) = (&attn.q_norm, &attn.k_norm) {
                g.push_norm(q_norm, &dhead_norms[..self.head_dim]);
                g.push_norm(k_norm, &dhead_norms[self.head_dim..]);
            }
            let dnormed = fused_linear_backward(&attn.qkv, &saved.normed, &dqkv, &mut g);
            let norm = &layer.input_layernorm;
            norm_rows_backward(&saved.input, &saved.input_inverse_rms, norm, host(&dnormed), &mut dx, &mut g);
            layer_grads.push(g);
        }
        let mut dembed = vec![0f32; vocab * h];
        for (&id, dx) in part.ids.iter().zip(dx.chunks_exact(h)) {
            add_in_place(&mut dembed[id as usize * h..][..h], dx);
        }
        grads.push(&model.embed_tokens, Tensor::from_slice(&dembed).view([vocab as i64, h as i64]));
        grads.push_norm(&model.norm, &dweight);
        for g in layer_grads {
            grads.0.extend(g.0);
        }
        grads
    }
}

/// `[rows, cols]` copy of `data`.
fn tensor_of(data: &[f32], cols: usize) -> Tensor {
    matrix(data.len() / cols, cols, |out| out.copy_from_slice(data))
}

/// `dy -> dx` of `y = x W^T + b`; pushes the gradients of W and b.
fn linear_backward(linear: &Linear, x: &Tensor, dy: &Tensor, grads: &mut Gradients) -> Tensor {
    grads.push(&linear.weight.stored, dy.tr().mm(x));
    if let Some(bias) = &linear.bias {
        grads.push(&bias.stored, dy.sum_dim_intlist(0, false, Kind::Float));
    }
    dy.mm(&linear.weight.stored)
}

/// `linear_backward` of the fused product, the gradients pushed for each part's rows.
fn fused_linear_backward(linear: &FusedLinear, x: &Tensor, dy: &Tensor, grads: &mut Gradients) -> Tensor {
    let dweight = dy.tr().mm(x);
    let dbias = linear.fused.bias.as_ref().map(|_| dy.sum_dim_intlist(0, false, Kind::Float));
    let mut row = 0;
    for part in &linear.parts {
        let rows = part.weight.stored.size()[0];
        grads.push(&part.weight.stored, dweight.narrow(0, row, rows));
        if let (Some(bias), Some(dbias)) = (&part.bias, &dbias) {
            grads.push(&bias.stored, dbias.narrow(0, row, rows));
        }
        row += rows;
    }
    dy.mm(&linear.fused.weight.stored)
}

/// RMSNorm of each row of `x`: the factors and the normed rows.
fn norm_rows(x: &[f32], norm: &RmsNorm) -> (Vec<f32>, Tensor) {
    let (weight, eps) = norm_weight(norm);
    let rows = x.len() / weight.len();
    let mut factors = vec![0f32; rows];
    let normed = matrix(rows, weight.len(), |out| norm_rows_into(x, weight, eps, out, &mut factors));
    (factors, normed)
}

/// Adds each row's input gradient to `dx`, and pushes the weight's gradient.
fn norm_rows_backward(x: &[f32], factors: &[f32], norm: &RmsNorm, dy: &[f32], dx: &mut [f32], grads: &mut Gradients) {
    let weight = host(&norm.weight.stored);
    let h = weight.len();
    let mut dweight = vec![0f32; h];
    for (((x, &r), dy), dx) in x.chunks_exact(h).zip(factors).zip(dy.chunks_exact(h)).zip(dx.chunks_exact_mut(h)) {
        norm_backward(x, r, weight, dy, dx, &mut dweight);
    }
    grads.push_norm(norm, &dweight);
}

multiversioned! {
    fn norm_rows_into(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32], factors: &mut [f32]) {
        let h = weight.len();
        for ((x, out), factor) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)).zip(factors) {
            *factor = cpu_math::rms_norm(x, weight, eps, out);
        }
    }
}

multiversioned! {
    fn rms_norm_row(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) -> f32 {
        cpu_math::rms_norm(x, weight, eps, out)
    }
}

multiversioned! {
    fn norm_backward(x: &[f32], factor: f32, weight: &[f32], dy: &[f32], dx: &mut [f32], dweight: &mut [f32]) {
        cpu_math::rms_norm_backward(x, factor, weight, dy, dx, dweight);
    }
}

multiversioned! {
    /// The gradient of `silu(gate) * up` with respect to `[gate, up]`: with s = sigmoid(g),
    /// d/dg = up * s * (1 + g (1 - s)), d/du = silu(g).
    fn silu_times_up_backward(gate_up: &[f32], dy: &[f32], intermediate: usize, out: &mut [f32]) {
        let rows = gate_up.chunks_exact(2 * intermediate).zip(dy.chunks_exact(intermediate));
        for ((gate_up, dy), out) in rows.zip(out.chunks_exact_mut(2 * intermediate)) {
            let (gate, up) = gate_up.split_at(intermediate);
            let (dgate, dup) = out.split_at_mut(intermediate);
            for ((((dg, du), &g), &u), &d) in dgate.iter_mut().zip(dup).zip(gate).zip(up).zip(dy) {
                let s = 1.0 / (1.0 + cpu_math::exp(-g));
                *dg = d * u * s * (1.0 + g * (1.0 - s));
                *du = d * g * s;
            }
        }
    }
}

multiversioned! {
    /// Each row's log-softmax of `logits / temperature` at its target, its entropy (when
    /// `entropies` is not empty: log Z - sum p z, with z the tempered logits), and the softmax
    /// into `probabilities`.
    fn log_softmax_rows(
        logits: &[f32],
        temperature: f32,
        targets: &[usize],
        probabilities: &mut [f32],
        logprobs: &mut [f32],
        entropies: &mut [f32],
    ) {
        let vocab = probabilities.len() / targets.len().max(1);
        let mut tempered = vec![0f32; if entropies.is_empty() { 0 } else { vocab }];
        let rows = logits.chunks_exact(vocab).zip(probabilities.chunks_exact_mut(vocab));
        for (i, (logits, p)) in rows.enumerate() {
            for (p, &l) in p.iter_mut().zip(logits) {
                *p = l / temperature;
            }
            if !entropies.is_empty() {
                tempered.copy_from_slice(p);
            }
            let highest = cpu_math::max(p);
            let target = p[targets[i]];
            let total = cpu_math::exp_shifted_in_place(p, highest);
            let log_total = highest + total.ln();
            logprobs[i] = target - log_total;
            let inverse = 1.0 / total;
            for p in p.iter_mut() {
                *p *= inverse;
            }
            if !entropies.is_empty() {
                entropies[i] = log_total - cpu_math::dot(p, &tempered);
            }
        }
    }
}

multiversioned! {
    /// `dlogits[v] = dlogp * (1[v = target] - p[v]) / T` for each row.
    fn logit_gradients(probabilities: &[f32], targets: &[usize], dlogprobs: &[f32], temperature: f32, out: &mut [f32]) {
        let vocab = out.len() / targets.len().max(1);
        let rows = probabilities.chunks_exact(vocab).zip(out.chunks_exact_mut(vocab));
        for (i, (p, out)) in rows.enumerate() {
            let scale = dlogprobs[i] / temperature;
            for (o, &p) in out.iter_mut().zip(p) {
                *o = -p * scale;
            }
            out[targets[i]] += scale;
        }
    }
}

#[derive(Clone, Copy)]
struct AttentionShape {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

/// Each token's rotation: its position's rows of the cos and sign-folded sin tables (see
/// `Rope`).
#[derive(Clone, Copy)]
struct Rotations<'a> {
    positions: &'a [usize],
    cos: &'a [f32],
    sin: &'a [f32],
}

/// Qwen3's per-head norms of queries and keys, `(weight, eps)` each.
type HeadNorms<'a> = Option<((&'a [f32], f32), (&'a [f32], f32))>;

fn head_norms(attn: &Attention) -> HeadNorms<'_> {
    attn.q_norm.as_ref().map(norm_weight).zip(attn.k_norm.as_ref().map(norm_weight))
}

multiversioned! {
    /// Each token's q and k heads after the per-head norms (if any) and the rotation of its
    /// position; v copied. `qkv` and `out` `[n, (heads + 2 kv_heads) * head_dim]`.
    fn rotate_rows(shape: &AttentionShape, qkv: &[f32], rotations: Rotations<'_>, norms: HeadNorms<'_>, out: &mut [f32]) {
        let AttentionShape { heads, kv_heads, head_dim: d } = *shape;
        let width = (heads + 2 * kv_heads) * d;
        let (q_norm, k_norm) = (norms.map(|(q, _)| q), norms.map(|(_, k)| k));
        let mut normed = vec![0f32; d];
        let rows = qkv.chunks_exact(width).zip(out.chunks_exact_mut(width)).zip(rotations.positions);
        for ((qkv, out), &position) in rows {
            let (cos, sin) = (&rotations.cos[position * d..][..d], &rotations.sin[position * d..][..d]);
            for (head, (x, y)) in qkv.chunks_exact(d).zip(out.chunks_exact_mut(d)).enumerate() {
                match head {
                    _ if head < heads => rotate(x, q_norm, &mut normed, cos, sin, y),
                    _ if head < heads + kv_heads => rotate(x, k_norm, &mut normed, cos, sin, y),
                    _ => y.copy_from_slice(x),
                }
            }
        }
    }
}

multiversioned! {
    /// The gradient of `rotate_rows` with respect to its input `qkv`, from that of its output
    /// (`dout`), into `out`; adds the per-head norms' weight gradients (q's, then k's) to
    /// `dnorms`. The rotation's transpose: with y1 = x1 c + x2 s1 and y2 = x2 c + x1 s2 (s the
    /// sign-folded sin), dx1 = dy1 c + dy2 s2 and dx2 = dy1 s1 + dy2 c.
    fn rotate_rows_backward(
        shape: &AttentionShape,
        qkv: &[f32],
        rotations: Rotations<'_>,
        norms: HeadNorms<'_>,
        dout: &[f32],
        out: &mut [f32],
        dnorms: &mut [f32],
    ) {
        let AttentionShape { heads, kv_heads, head_dim: d } = *shape;
        let width = (heads + 2 * kv_heads) * d;
        let half = d / 2;
        let mut dnormed = vec![0f32; d];
        let rows = qkv.chunks_exact(width).zip(dout.chunks_exact(width)).zip(out.chunks_exact_mut(width));
        for (((qkv, dout), out), &position) in rows.zip(rotations.positions) {
            let (cos, sin) = (&rotations.cos[position * d..][..d], &rotations.sin[position * d..][..d]);
            let heads_of_row = qkv.chunks_exact(d).zip(dout.chunks_exact(d)).zip(out.chunks_exact_mut(d));
            for (head, ((x, dy), dx)) in heads_of_row.enumerate() {
                if head >= heads + kv_heads {
                    dx.copy_from_slice(dy);
                    continue;
                }
                let target: &mut [f32] = if norms.is_some() { &mut dnormed } else { &mut *dx };
                for i in 0..half {
                    target[i] = dy[i] * cos[i] + dy[half + i] * sin[half + i];
                    target[half + i] = dy[i] * sin[i] + dy[half + i] * cos[half + i];
                }
                if let Some((q_norm, k_norm)) = norms {
                    let ((weight, eps), dweight) =
                        if head < heads { (q_norm, &mut dnorms[..d]) } else { (k_norm, &mut dnorms[d..]) };
                    let factor = cpu_math::inverse_rms(x, eps);
                    dx.fill(0.0);
                    cpu_math::rms_norm_backward(x, factor, weight, &dnormed, dx, dweight);
                }
            }
        }
    }
}

/// The segments of a group: its prefix (attending to itself), then each row (attending to the
/// prefix, then to itself), as (tokens before, own tokens).
fn segments(group: &Group) -> impl Iterator<Item = (Range<usize>, Range<usize>)> + '_ {
    let prefix = group.prefix.clone();
    std::iter::once((0..0, prefix.clone())).chain(group.rows.iter().map(move |row| (prefix.clone(), row.clone())))
}

/// One segment's attention for one kv head, as matrices: its `m` tokens' queries of the `G`
/// query heads that share the kv head, one row per (token, head), `[m G, head_dim]`, against the
/// keys and values of its context (the tokens before, then its own), `[len, head_dim]`. Query
/// row `i G + h` may attend the first `before + i + 1` keys.
#[derive(Default)]
struct SegmentMatrices {
    rows: usize,
    len: usize,
    queries: Vec<f32>,
    keys: Vec<f32>,
    values: Vec<f32>,
    /// `[m G, len]`: scores, then softmax weights (0 where hidden).
    weights: Vec<f32>,
}

/// Gives `buffer` length `len` for a product that writes every element: only the part beyond its
/// old length is zeroed (a cleared buffer zeroed in full cost the tiny model's training pass
/// 30 MB of memset a step).
fn resize_for_overwrite(buffer: &mut Vec<f32>, len: usize) {
    buffer.truncate(len);
    buffer.resize(len, 0.0);
}

impl SegmentMatrices {
    /// Gathers the queries, keys and values of `own` (after `before`) for kv head `kv_head` from
    /// `rotated`.
    fn gather(
        &mut self,
        shape: &AttentionShape,
        rotated: &[f32],
        kv_head: usize,
        before: &Range<usize>,
        own: &Range<usize>,
    ) {
        let AttentionShape { heads, kv_heads, head_dim: d } = *shape;
        let (width, group) = ((heads + 2 * kv_heads) * d, heads / kv_heads);
        self.rows = own.len() * group;
        self.len = before.len() + own.len();
        self.queries.clear();
        for token in own.clone() {
            // The heads of one kv head are consecutive: `group` rows at once.
            self.queries.extend_from_slice(&rotated[token * width + kv_head * group * d..][..group * d]);
        }
        let (key_at, value_at) = ((heads + kv_head) * d, (heads + kv_heads + kv_head) * d);
        self.keys.clear();
        self.values.clear();
        for token in before.clone().chain(own.clone()) {
            self.keys.extend_from_slice(&rotated[token * width + key_at..][..d]);
            self.values.extend_from_slice(&rotated[token * width + value_at..][..d]);
        }
        resize_for_overwrite(&mut self.weights, self.rows * self.len);
    }

    /// `weights = scale * queries keys^T`, every column (the hidden ones are overwritten).
    fn scores(&mut self, d: usize, scale: f32) {
        let (q, k) = (Operand::plain(&self.queries, d), Operand::transposed(&self.keys, d));
        sgemm(self.rows, self.len, d, scale, q, k, 0.0, &mut self.weights, self.len);
    }
}

multiversioned! {
    /// Causal attention of every token over its context (see `segments`): `rotated` as
    /// `rotate_rows` leaves it, `out` `[n, heads * head_dim]`, `log_totals` `[n, heads]` (the log
    /// of each softmax's denominator, for the backward pass).
    fn attention_forward(
        shape: &AttentionShape,
        groups: &[Group],
        rotated: &[f32],
        out: &mut [f32],
        log_totals: &mut [f32],
    ) {
        let AttentionShape { heads, kv_heads, head_dim: d } = *shape;
        let group = heads / kv_heads;
        let scale = (d as f32).powf(-0.5);
        let mut s = SegmentMatrices::default();
        let mut attended = Vec::new();
        for (before, own) in groups.iter().flat_map(segments).filter(|(_, own)| !own.is_empty()) {
            for g in 0..kv_heads {
                s.gather(shape, rotated, g, &before, &own);
                s.scores(d, scale);
                for (r, row) in s.weights.chunks_exact_mut(s.len).enumerate() {
                    let (visible, hidden) = row.split_at_mut(before.len() + r / group + 1);
                    let highest = cpu_math::max(visible);
                    let total = cpu_math::exp_shifted_in_place(visible, highest);
                    let inverse = 1.0 / total;
                    for w in visible.iter_mut() {
                        *w *= inverse;
                    }
                    hidden.fill(0.0);
                    let token = own.start + r / group;
                    log_totals[token * heads + g * group + r % group] = highest + total.ln();
                }
                resize_for_overwrite(&mut attended, s.rows * d);
                let (p, v) = (Operand::plain(&s.weights, s.len), Operand::plain(&s.values, d));
                sgemm(s.rows, d, s.len, 1.0, p, v, 0.0, &mut attended, d);
                for (token, rows) in own.clone().zip(attended.chunks_exact(group * d)) {
                    out[(token * heads + g * group) * d..][..group * d].copy_from_slice(rows);
                }
            }
        }
    }
}

multiversioned! {
    /// The gradient of `attention_forward` with respect to `rotated` (`drotated`, zeroed, gets
    /// it), from that of its output (`dout`). With P the softmax weights, O = P V and
    /// S = scale Q K^T: dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(dO * O)),
    /// dQ = scale dS K, dK = scale dS^T Q.
    fn attention_backward(
        shape: &AttentionShape,
        groups: &[Group],
        rotated: &[f32],
        attended: &[f32],
        log_totals: &[f32],
        dout: &[f32],
        drotated: &mut [f32],
    ) {
        let AttentionShape { heads, kv_heads, head_dim: d } = *shape;
        let (width, group) = ((heads + 2 * kv_heads) * d, heads / kv_heads);
        let scale = (d as f32).powf(-0.5);
        let mut s = SegmentMatrices::default();
        let (mut outs, mut douts, mut dweights) = (Vec::new(), Vec::new(), Vec::new());
        let (mut dq, mut dk, mut dv) = (Vec::new(), Vec::new(), Vec::new());
        for (before, own) in groups.iter().flat_map(segments).filter(|(_, own)| !own.is_empty()) {
            for g in 0..kv_heads {
                s.gather(shape, rotated, g, &before, &own);
                s.scores(d, scale);
                outs.clear();
                douts.clear();
                for token in own.clone() {
                    let at = (token * heads + g * group) * d;
                    outs.extend_from_slice(&attended[at..][..group * d]);
                    douts.extend_from_slice(&dout[at..][..group * d]);
                }
                // The weights again, from the saved log-denominators.
                for (r, row) in s.weights.chunks_exact_mut(s.len).enumerate() {
                    let token = own.start + r / group;
                    let log_total = log_totals[token * heads + g * group + r % group];
                    let (visible, hidden) = row.split_at_mut(before.len() + r / group + 1);
                    for w in visible.iter_mut() {
                        *w = cpu_math::exp(*w - log_total);
                    }
                    hidden.fill(0.0);
                }
                resize_for_overwrite(&mut dweights, s.rows * s.len);
                let (o, v) = (Operand::plain(&douts, d), Operand::transposed(&s.values, d));
                sgemm(s.rows, s.len, d, 1.0, o, v, 0.0, &mut dweights, s.len);
                // dS, in place of dP.
                let rows = s.weights.chunks_exact(s.len).zip(dweights.chunks_exact_mut(s.len));
                for (r, (p, ds)) in rows.enumerate() {
                    let centre = cpu_math::dot(&douts[r * d..][..d], &outs[r * d..][..d]);
                    for (ds, &p) in ds.iter_mut().zip(p) {
                        *ds = p * (*ds - centre);
                    }
                }
                for (buffer, rows) in [(&mut dq, s.rows), (&mut dk, s.len), (&mut dv, s.len)] {
                    resize_for_overwrite(buffer, rows * d);
                }
                let ds = Operand::plain(&dweights, s.len);
                sgemm(s.rows, d, s.len, scale, ds, Operand::plain(&s.keys, d), 0.0, &mut dq, d);
                let ds_t = Operand::transposed(&dweights, s.len);
                sgemm(s.len, d, s.rows, scale, ds_t, Operand::plain(&s.queries, d), 0.0, &mut dk, d);
                let p_t = Operand::transposed(&s.weights, s.len);
                sgemm(s.len, d, s.rows, 1.0, p_t, Operand::plain(&douts, d), 0.0, &mut dv, d);
                for (token, rows) in own.clone().zip(dq.chunks_exact(group * d)) {
                    drotated[token * width + g * group * d..][..group * d].copy_from_slice(rows);
                }
                let (key_at, value_at) = ((heads + g) * d, (heads + kv_heads + g) * d);
                let context = before.clone().chain(own.clone());
                for ((token, dk), dv) in context.zip(dk.chunks_exact(d)).zip(dv.chunks_exact(d)) {
                    let row = &mut drotated[token * width..][..width];
                    for (x, &y) in row[key_at..][..d].iter_mut().zip(dk) {
                        *x += y;
                    }
                    for (x, &y) in row[value_at..][..d].iter_mut().zip(dv) {
                        *x += y;
                    }
                }
            }
        }
    }
}
