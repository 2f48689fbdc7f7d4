//! The decode step of generation on the CPU in fp32: one new token per row through the KV cache,
//! with libtorch (MKL) for the matrix products and everything between them in Rust, one pass
//! over each row's memory.
//!
//! Why: at decode shapes a layer is four small GEMMs and some fifty other tensor operations
//! (norms, rotations, cache writes, masks, attention per row). Through libtorch each of those
//! costs several microseconds of dispatch and allocation whatever its size, so a small model's
//! step was mostly overhead: the tiny fixture model decoding 64 rows took about 1.2 ms a step for
//! 9 MFLOP. Here a layer is four libtorch calls, and the step about 0.5 ms, of which attention
//! (reading the cache) is about half and the GEMMs a third (tests/benches/rollout_throughput.rs:
//! 55k -> 85-108k tokens/s on the tiny model, 1.96k -> 2.09k on the 24.5M one, same load).
//!
//! Attention reads each kv head's keys (stored transposed, `[head_dim, slots]`, see `cache.rs`)
//! and values once for the query heads that share it (up to four at a time). The work goes to
//! libtorch's own OpenMP threads (`intra_op`; threads of its own would fight the OpenMP workers
//! for the cores): a small model's step splits its rows among them, each running every layer
//! for its rows with single-threaded GEMMs (the tiny model: one parallel region a step instead
//! of a dozen; 64 rows of 256 tokens, 85-108k -> 126k tokens/s at best, and 141-146k for 64
//! tokens after 40-token prompts, GRPO's bench shape); a larger model's GEMMs run on all
//! threads, and attention splits its rows.
//!
//! It computes what `CausalLM::forward` computes, in the same order of operations (RMSNorm in
//! fp32 then the weight, rotate-half RoPE from the same table, scores scaled by head_dim^-0.5,
//! softmax, weighted values), up to rounding: sums run in another order, and `exp` is
//! `cpu_math::exp` (2 ulp). tests/tests/model_parity.rs checks decoding against the full forward
//! and greedy generation against transformers.

use tch::{Device, Kind, Tensor};

use super::{CausalLM, FusedLinear, Linear, RmsNorm};
use crate::cache::{KvCache, SLOT_ALIGNMENT};
use crate::cpu_math::{self, multiversioned};
use crate::intra_op;
use crate::mkl_gemm::{sgemm, Operand};

/// Multiply-adds of a layer's attention below which one thread does all rows: waking the other
/// threads costs a few microseconds.
const PARALLEL_ATTENTION_WORK: usize = 1 << 16;

impl CausalLM {
    /// Whether a forward pass of `new_tokens` per row through `cache` runs fused: single-token
    /// steps of generation (no gradient) of an fp32 model on the CPU. Other steps go through
    /// libtorch with SDPA: on a GPU, and in bf16 or f16, where batched GEMMs were 5% faster than
    /// SDPA but oneDNN compiles and keeps a kernel for every cache length (24.5M bench model, 256
    /// tokens: 1.2 GB peak RSS against 0.36 GB).
    pub(super) fn decodes_fused(&self, new_tokens: i64, cache: &KvCache, grad_enabled: bool) -> bool {
        new_tokens == 1 && !grad_enabled && self.is_fp32_on_cpu() && cache.keys_are_transposed()
    }

    /// fp32 weights and passes on the CPU: what the fused (Rust and MKL) paths run on.
    pub(super) fn is_fp32_on_cpu(&self) -> bool {
        self.device() == Device::Cpu && self.kind == Kind::Float && self.compute == Kind::Float
    }

    /// Multiply-adds of one layer's products (projections and MLP) for one token.
    pub(super) fn layer_macs_per_token(&self) -> i64 {
        let c = &self.config;
        let (h, q, kv) = (c.hidden_size, c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim);
        h * (q + 2 * kv) + q * h + 3 * h * c.intermediate_size
    }

    /// Whether generation on the CPU is fastest with each thread taking whole sequences through
    /// every step (the rollout's `ShardedEngine`): a model that decodes fused and whose steps
    /// split their rows among threads at a batch of 64 (the tiny fixture, 37k multiply-adds a
    /// layer and token, 1.16x faster sharded). A larger one (the 24.5M bench model, 3M) is faster
    /// with each product on every thread: sharded, every thread reads every weight each step
    /// (1.55 s against 1.33 s for 64 x 64 tokens).
    pub fn prefers_sharded_generation(&self) -> bool {
        self.is_fp32_on_cpu() && 64 * self.layer_macs_per_token() < SPLIT_ROWS_BELOW_LAYER_WORK
    }

    /// `forward` for one token per row through `cache` (see [`CausalLM::decodes_fused`]):
    /// `input_ids`, `positions` `[rows, 1]`, `step_mask` `[rows, 1]` (whether each new token is
    /// real). Returns the final hidden states `[rows, 1, hidden]`, or with `logits` the fp32
    /// logits `[rows, vocab]` (computed on the threads that computed the rows, where the step is
    /// split).
    pub(super) fn forward_fused_decode(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        step_mask: Option<&Tensor>,
        cache: &mut KvCache,
        logits: bool,
    ) -> Tensor {
        let c = &self.config;
        let ids = Vec::<i64>::try_from(input_ids.reshape([-1])).expect("int64 token ids");
        let positions = Vec::<i64>::try_from(positions.reshape([-1])).expect("int64 positions");
        let rows = ids.len();
        let hidden = c.hidden_size as usize;
        let highest = positions.iter().copied().max().unwrap_or(0);
        assert!(positions.iter().all(|&p| p >= 0), "decode positions must be >= 0");
        let (cos, sin) = self.rope_table_to(highest);

        let _ = cache.begin_step(step_mask, 1);
        let (capacity, slot) = (cache.capacity() as usize, cache.len() as usize);
        let out = Tensor::empty([rows as i64, hidden as i64], (Kind::Float, Device::Cpu));
        let vocab = c.vocab_size;
        let threads = intra_op::threads();
        let layer_work = rows as i64 * self.layer_macs_per_token();
        let split = threads > 1 && rows >= threads * MIN_ROWS_PER_PART && layer_work < SPLIT_ROWS_BELOW_LAYER_WORK;
        // The rows' own threads take them through the LM head where each has whole rows (a
        // serial product of the batch after the parallel region was an eighth of the tiny model's
        // step); otherwise libtorch's product uses every thread.
        let run_logits = (logits && (split || threads == 1))
            .then(|| Tensor::empty([rows as i64, vocab], (Kind::Float, Device::Cpu)));
        {
            let layers = (0..self.layers.len()).map(|index| cache.layer_tensors(index));
            // SAFETY: the cache's tensors and `out` are contiguous fp32 CPU tensors that nothing
            // else reads or writes while these slices live (the cache is borrowed mutably).
            let (keys, values): (Vec<&mut [f32]>, Vec<&mut [f32]>) =
                layers.map(|(keys, values, _)| unsafe { (host_mut(keys), host_mut(values)) }).unzip();
            let rows_in = RowsOfStep {
                ids: &ids,
                positions: &positions,
                key_mask: host_bools(cache.layer_tensors(0).2),
                keys,
                values,
                // SAFETY: as above.
                out: unsafe { host_mut(&out) },
                // SAFETY: a fresh contiguous fp32 CPU tensor, written only through this slice.
                logits: run_logits.as_ref().map(|l| unsafe { host_mut(l) }),
            };
            let step = DecodeStep {
                model: self,
                cos: host(&cos),
                sin: host(&sin),
                capacity,
                slot,
                adapters: self.adapters_active(),
            };
            if split {
                step.run_split(rows_in, threads);
            } else {
                step.run(rows_in, threads);
            }
        }
        cache.end_step(1);
        match (logits, run_logits) {
            (false, _) => out.view([rows as i64, 1, hidden as i64]),
            (true, Some(logits)) => logits,
            (true, None) => self.logits(&out),
        }
    }
}

/// Multiply-adds of a layer's GEMMs in a step below which the rows are split among libtorch's
/// threads for the whole step (each thread runs every layer for its rows, its GEMMs on one
/// thread) rather than each operation being split: the tiny model's GEMMs are too small to pay
/// for waking the team several times a layer. The 24.5M model (about 190M a layer at 64 rows)
/// keeps each GEMM on all threads, which MKL uses well at that size.
const SPLIT_ROWS_BELOW_LAYER_WORK: i64 = 16 << 20;

/// Fewest rows a thread takes when a step's rows are split: fewer are not worth a parallel
/// region, and a GEMM of one or two rows takes other MKL kernels, whose roundings would make a
/// sequence's log-probs depend on how many others share its step by more than usual (2e-5).
const MIN_ROWS_PER_PART: usize = 8;

/// One decode step's shared inputs.
struct DecodeStep<'a> {
    model: &'a CausalLM,
    /// cos and sign-folded sin tables `[positions, head_dim]` (see `Rope`).
    cos: &'a [f32],
    sin: &'a [f32],
    capacity: usize,
    slot: usize,
    /// Whether the LoRA adapters apply (decided on the calling thread: the switch is per thread,
    /// and the step may run on several).
    adapters: bool,
}

/// Some consecutive rows of a decode step: their tokens, positions and key mask, each layer's
/// keys and values of these rows, and where their final hidden states go.
struct RowsOfStep<'a> {
    ids: &'a [i64],
    positions: &'a [i64],
    key_mask: &'a [u8],
    keys: Vec<&'a mut [f32]>,
    values: Vec<&'a mut [f32]>,
    out: &'a mut [f32],
    /// Where the rows' logits go, `[rows, vocab]`, if the step computes them.
    logits: Option<&'a mut [f32]>,
}

/// Lets the tasks of `run_split` share a `DecodeStep`.
struct SharedStep<'a>(DecodeStep<'a>);

// SAFETY: the tasks only read the model's weights (libtorch tensors may be read from several
// threads at once; fp32 weights are used as stored, without the cast cache) and write disjoint
// rows of memory they were handed.
unsafe impl Sync for SharedStep<'_> {}

impl SharedStep<'_> {
    /// A task of `run_split`: its rows on this thread.
    fn run(&self, rows: RowsOfStep<'_>) {
        // Grad mode is per thread: the team's other threads record by default.
        tch::no_grad(|| self.0.run(rows, 1));
    }
}

impl DecodeStep<'_> {
    /// Runs `rows` through every layer on this thread; attention may use `threads`.
    fn run(&self, rows: RowsOfStep<'_>, threads: usize) {
        let model = self.model;
        let c = &model.config;
        let n = rows.ids.len();
        let hidden = c.hidden_size as usize;
        let embed = host(&model.embed_tokens);
        let mut x = vec![0f32; n * hidden];
        for (row, &id) in x.chunks_exact_mut(hidden).zip(rows.ids) {
            row.copy_from_slice(&embed[id as usize * hidden..][..hidden]);
        }
        let (heads, kv_heads, head_dim) =
            (c.num_attention_heads as usize, c.num_key_value_heads as usize, c.head_dim as usize);
        let shape = AttentionShape { heads, kv_heads, head_dim, capacity: self.capacity, slot: self.slot };
        for ((layer, keys), values) in model.layers.iter().zip(rows.keys).zip(rows.values) {
            let attn = &layer.self_attn;
            let qkv = self.project_fused(&attn.qkv, &norm_rows(&x, &layer.input_layernorm, n));
            let inputs = AttentionInputs {
                qkv: host(&qkv),
                positions: rows.positions,
                cos: self.cos,
                sin: self.sin,
                q_norm: attn.q_norm.as_ref().map(norm_weight),
                k_norm: attn.k_norm.as_ref().map(norm_weight),
                key_mask: rows.key_mask,
            };
            let attended = matrix(n, heads * head_dim, |out| attend(&shape, inputs, keys, values, out, threads));
            add_rows(&mut x, &self.project(&attn.o_proj, &attended));

            let mlp = &layer.mlp;
            let gate_up = self.project_fused(&mlp.gate_up, &norm_rows(&x, &layer.post_attention_layernorm, n));
            let intermediate = c.intermediate_size as usize;
            let activated = matrix(n, intermediate, |out| silu_times_up(host(&gate_up), intermediate, out));
            add_rows(&mut x, &self.project(&mlp.down_proj, &activated));
        }
        let (weight, eps) = norm_weight(&model.norm);
        rms_norm_rows(&x, weight, eps, rows.out);
        if let Some(logits) = rows.logits {
            let lm_head = Operand::transposed(host(&model.lm_head.stored), hidden);
            let vocab = c.vocab_size as usize;
            sgemm(n, vocab, hidden, 1.0, Operand::plain(rows.out, hidden), lm_head, 0.0, logits, vocab);
        }
    }

    /// `linear` of `x` (`[rows, in]`), through MKL's packed copy of the weight where the model
    /// keeps one, plus its LoRA adapter's update when adapters apply.
    fn project(&self, linear: &Linear, x: &Tensor) -> Tensor {
        let mut y = self.project_base(linear, x);
        if let Some(adapter) = linear.lora.as_ref().filter(|_| self.adapters) {
            let _ = y.g_add_(&adapter.delta(x));
        }
        y
    }

    /// [`DecodeStep::project`] of the parts of `linear` with one product: each part's adapter
    /// update goes to its columns.
    fn project_fused(&self, linear: &FusedLinear, x: &Tensor) -> Tensor {
        let y = self.project_base(&linear.fused, x);
        if self.adapters {
            let mut start = 0;
            for part in &linear.parts {
                let size = part.weight.stored.size()[0];
                if let Some(adapter) = &part.lora {
                    let _ = y.narrow(1, start, size).g_add_(&adapter.delta(x));
                }
                start += size;
            }
        }
        y
    }

    /// `x·Wᵀ + b` of the base weights.
    fn project_base(&self, linear: &Linear, x: &Tensor) -> Tensor {
        let rows = x.size()[0];
        let packed = if self.model.packs_weights { linear.packed(rows as usize) } else { None };
        let Some(packed) = packed else {
            let bias = linear.bias.as_ref().map(|b| &b.stored);
            return x.linear(&linear.weight.stored, bias);
        };
        let bias = linear.bias.as_ref().map(|b| host(&b.stored));
        let outputs = linear.weight.stored.size()[0] as usize;
        matrix(rows as usize, outputs, |out| packed.multiply(host(x), bias, out))
    }

    /// Runs `rows` in `threads` parts, one per libtorch thread, each part through every layer.
    /// libtorch and MKL run single-threaded inside the team's parallel region.
    fn run_split(self, rows: RowsOfStep<'_>, threads: usize) {
        let per_task = rows.ids.len().div_ceil(threads);
        let capacity = self.capacity;
        let hidden = self.model.config.hidden_size as usize;
        let mut keys: Vec<_> =
            rows.keys.into_iter().map(|k| k.chunks_mut(k.len() / rows.ids.len() * per_task)).collect();
        let mut values: Vec<_> =
            rows.values.into_iter().map(|v| v.chunks_mut(v.len() / rows.ids.len() * per_task)).collect();
        let mut logits = rows.logits.map(|l| l.chunks_mut(l.len() / rows.ids.len() * per_task));
        let parts: Vec<RowsOfStep<'_>> = rows
            .ids
            .chunks(per_task)
            .zip(rows.positions.chunks(per_task))
            .zip(rows.key_mask.chunks(per_task * capacity))
            .zip(rows.out.chunks_mut(per_task * hidden))
            .map(|(((ids, positions), key_mask), out)| RowsOfStep {
                ids,
                positions,
                key_mask,
                keys: keys.iter_mut().map(|k| k.next().expect("a part per task")).collect(),
                values: values.iter_mut().map(|v| v.next().expect("a part per task")).collect(),
                out,
                logits: logits.as_mut().map(|l| l.next().expect("a part per task")),
            })
            .collect();
        let step = SharedStep(self);
        intra_op::parallel_parts(parts, threads, |_, part| step.run(part));
    }
}

/// RMSNorm of each row of `x` (`rows` of them), as a new `[rows, hidden]` tensor.
fn norm_rows(x: &[f32], norm: &RmsNorm, rows: usize) -> Tensor {
    let (weight, eps) = norm_weight(norm);
    matrix(rows, weight.len(), |out| rms_norm_rows(x, weight, eps, out))
}

/// An RMSNorm's weight as a slice, and its epsilon.
pub(super) fn norm_weight(norm: &RmsNorm) -> (&[f32], f32) {
    (host(&norm.weight.stored), norm.eps as f32)
}

/// `x += y` for the rows of a linear layer's output.
pub(super) fn add_rows(x: &mut [f32], y: &Tensor) {
    add_in_place(x, host(y));
}

multiversioned! {
    pub(super) fn add_in_place(x: &mut [f32], y: &[f32]) {
        assert_eq!(x.len(), y.len());
        for (x, &y) in x.iter_mut().zip(y) {
            *x += y;
        }
    }
}

multiversioned! {
    fn rms_norm_rows(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
        let hidden = weight.len();
        for (x, out) in x.chunks_exact(hidden).zip(out.chunks_exact_mut(hidden)) {
            cpu_math::rms_norm(x, weight, eps, out);
        }
    }
}

multiversioned! {
    /// `out = silu(gate) * up` for rows of `[gate (intermediate), up (intermediate)]`, with
    /// silu(g) = g / (1 + e^-g) as libtorch computes it.
    pub(super) fn silu_times_up(gate_up: &[f32], intermediate: usize, out: &mut [f32]) {
        for (gate_up, out) in gate_up.chunks_exact(2 * intermediate).zip(out.chunks_exact_mut(intermediate)) {
            let (gate, up) = gate_up.split_at(intermediate);
            for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
                *o = g / (1.0 + cpu_math::exp(-g)) * u;
            }
        }
    }
}

/// The layout of one layer's attention in a decode step.
struct AttentionShape {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    /// Slots per row in the cache.
    capacity: usize,
    /// The slot of the new token; slots `0..=slot` are filled.
    slot: usize,
}

/// What one layer's attention reads, all rows.
#[derive(Clone, Copy)]
struct AttentionInputs<'a> {
    /// `[rows, (heads + 2 kv_heads) * head_dim]`: the fused q, k, v projections.
    qkv: &'a [f32],
    positions: &'a [i64],
    /// cos and sign-folded sin tables `[positions, head_dim]` (see `Rope`).
    cos: &'a [f32],
    sin: &'a [f32],
    /// Qwen3's per-head norms of queries and keys, before the rotation.
    q_norm: Option<(&'a [f32], f32)>,
    k_norm: Option<(&'a [f32], f32)>,
    /// `[rows, capacity]` bools: the slot holds a real token.
    key_mask: &'a [u8],
}

/// Writes each row's new key and value into the cache (keys `[rows, kv_heads, head_dim,
/// capacity]`, values `[rows, kv_heads, capacity, head_dim]`) and its attention output into `out`
/// `[rows, heads * head_dim]`. Rows are shared out among `threads` of libtorch's threads when the
/// work is large enough to pay for them: reading the cache is most of a large model's attention.
fn attend(
    shape: &AttentionShape,
    inputs: AttentionInputs<'_>,
    keys: &mut [f32],
    values: &mut [f32],
    out: &mut [f32],
    threads: usize,
) {
    let AttentionShape { heads, kv_heads, head_dim, capacity, slot } = *shape;
    let rows = inputs.positions.len();
    let work = rows * heads * (slot + 1) * head_dim;
    if threads == 1 || work < PARALLEL_ATTENTION_WORK {
        return attend_rows(shape, inputs, 0, keys, values, out);
    }
    let per_task = rows.div_ceil(threads);
    let (key_row, value_row, out_row) =
        (kv_heads * head_dim * capacity, kv_heads * capacity * head_dim, heads * head_dim);
    let parts: Vec<_> = keys
        .chunks_mut(per_task * key_row)
        .zip(values.chunks_mut(per_task * value_row))
        .zip(out.chunks_mut(per_task * out_row))
        .collect();
    intra_op::parallel_parts(parts, threads, |task, ((keys, values), out)| {
        attend_rows(shape, inputs, task * per_task, keys, values, out);
    });
}

multiversioned! {
    /// `attend` for the rows from `first` on that `keys`, `values` and `out` hold.
    fn attend_rows(
        shape: &AttentionShape,
        inputs: AttentionInputs<'_>,
        first: usize,
        keys: &mut [f32],
        values: &mut [f32],
        out: &mut [f32],
    ) {
        let AttentionShape { heads, kv_heads, head_dim: d, capacity, slot } = *shape;
        let group = heads / kv_heads;
        let width = (heads + 2 * kv_heads) * d;
        let slots = slot + 1;
        // Scores are computed for whole blocks of slots (capacities are multiples of the block).
        let blocked = slots.next_multiple_of(SLOT_ALIGNMENT as usize);
        let scale = (d as f32).powf(-0.5);
        let scratch = &mut AttentionScratch {
            blocked,
            bias: vec![0f32; slots],
            masked: false,
            scores: vec![0f32; MAX_HEADS_AT_ONCE * blocked],
        };
        let mut queries = vec![0f32; heads * d];
        let mut key = vec![0f32; d];
        let mut normed = vec![0f32; d];
        let rows = out.len() / (heads * d);
        for local in 0..rows {
            let row = first + local;
            let qkv = &inputs.qkv[row * width..][..width];
            let position = inputs.positions[row] as usize;
            let (cos, sin) = (&inputs.cos[position * d..][..d], &inputs.sin[position * d..][..d]);
            for (head, query) in queries.chunks_exact_mut(d).enumerate() {
                rotate(&qkv[head * d..][..d], inputs.q_norm, &mut normed, cos, sin, query);
                // Scaled here rather than every score (exact where head_dim is a power of 4).
                for q in query.iter_mut() {
                    *q *= scale;
                }
            }
            let row_keys = &mut keys[local * kv_heads * d * capacity..][..kv_heads * d * capacity];
            let row_values = &mut values[local * kv_heads * capacity * d..][..kv_heads * capacity * d];
            for g in 0..kv_heads {
                rotate(&qkv[(heads + g) * d..][..d], inputs.k_norm, &mut normed, cos, sin, &mut key);
                let head_keys = &mut row_keys[g * d * capacity..][..d * capacity];
                for (j, &k) in key.iter().enumerate() {
                    head_keys[j * capacity + slot] = k;
                }
                row_values[(g * capacity + slot) * d..][..d].copy_from_slice(&qkv[(heads + kv_heads + g) * d..][..d]);
            }
            // Padding is hidden; a row may always attend its own slot, so that a padding row never
            // has an empty softmax (its output is never used).
            let mask = &inputs.key_mask[row * capacity..][..slots];
            scratch.masked = false;
            for (s, (bias, &real)) in scratch.bias.iter_mut().zip(mask).enumerate() {
                let hidden = real == 0 && s != slot;
                *bias = if hidden { f32::NEG_INFINITY } else { 0.0 };
                scratch.masked |= hidden;
            }
            let row_out = &mut out[local * heads * d..][..heads * d];
            for g in 0..kv_heads {
                let keys = &row_keys[g * d * capacity..][..d * capacity];
                let values = &row_values[g * capacity * d..][..slots * d];
                let mut head = g * group;
                while head < (g + 1) * group {
                    let count = ((g + 1) * group - head).min(MAX_HEADS_AT_ONCE);
                    let queries = &queries[head * d..][..count * d];
                    let out = &mut row_out[head * d..][..count * d];
                    match count {
                        4 => heads_attend::<4, FMA>(queries, keys, capacity, values, scratch, out),
                        3 => heads_attend::<3, FMA>(queries, keys, capacity, values, scratch, out),
                        2 => heads_attend::<2, FMA>(queries, keys, capacity, values, scratch, out),
                        _ => heads_attend::<1, FMA>(queries, keys, capacity, values, scratch, out),
                    }
                    head += count;
                }
            }
        }
    }
}

/// Query heads of one kv head attended together, reading its keys and values once.
const MAX_HEADS_AT_ONCE: usize = 4;

/// Working memory of `attend_rows`, reused for every row and head.
struct AttentionScratch {
    /// The filled slots rounded up to whole blocks.
    blocked: usize,
    /// Per slot of the current row: 0, or -inf where the slot is hidden.
    bias: Vec<f32>,
    /// Whether the current row hides any slot (else `bias` is all 0 and is not added).
    masked: bool,
    /// `[heads, blocked]`: the scores, then their exponentials.
    scores: Vec<f32>,
}

/// Attention of `G` query heads (`queries` `[G, d]`, rotated and scaled) of one row over one kv
/// head's keys (`[d, capacity]`) and values (`[slots, d]`); `out` `[G, d]`.
#[inline(always)]
fn heads_attend<const G: usize, const FMA: bool>(
    queries: &[f32],
    keys: &[f32],
    capacity: usize,
    values: &[f32],
    scratch: &mut AttentionScratch,
    out: &mut [f32],
) {
    let d = queries.len() / G;
    let (slots, blocked) = (scratch.bias.len(), scratch.blocked);
    let scores = &mut scratch.scores[..G * blocked];
    cpu_math::head_group_products::<G, FMA>(std::array::from_fn(|h| &queries[h * d..][..d]), keys, capacity, scores);
    let mut inverse_totals = [0f32; G];
    for (head_scores, inverse_total) in scores.chunks_exact_mut(blocked).zip(&mut inverse_totals) {
        let head_scores = &mut head_scores[..slots];
        if scratch.masked {
            for (score, &bias) in head_scores.iter_mut().zip(&scratch.bias) {
                *score += bias;
            }
        }
        let highest = cpu_math::max(head_scores);
        *inverse_total = 1.0 / cpu_math::exp_shifted_in_place(head_scores, highest);
    }
    let weights: [&[f32]; G] = std::array::from_fn(|h| &scores[h * blocked..][..slots]);
    cpu_math::head_group_products::<G, FMA>(weights, values, d, out);
    // The softmax's normalisation, on the outputs rather than on every weight.
    for (out, inverse_total) in out.chunks_exact_mut(d).zip(inverse_totals) {
        for o in out.iter_mut() {
            *o *= inverse_total;
        }
    }
}

/// Rotate-half RoPE of one head `x` (after an optional per-head RMSNorm into `normed`):
/// `x * cos + (x2, x1) * sin` with the sign-folded sin.
#[inline(always)]
pub(super) fn rotate(
    x: &[f32],
    norm: Option<(&[f32], f32)>,
    normed: &mut [f32],
    cos: &[f32],
    sin: &[f32],
    out: &mut [f32],
) {
    let x = match norm {
        Some((weight, eps)) => {
            cpu_math::rms_norm(x, weight, eps, normed);
            &*normed
        }
        None => x,
    };
    let half = x.len() / 2;
    let (x1, x2) = x.split_at(half);
    let (out1, out2) = out.split_at_mut(half);
    for i in 0..half {
        out1[i] = x1[i] * cos[i] + x2[i] * sin[i];
        out2[i] = x2[i] * cos[half + i] + x1[i] * sin[half + i];
    }
}

/// The elements of a contiguous fp32 CPU tensor.
pub(super) fn host(t: &Tensor) -> &[f32] {
    assert!(
        t.kind() == Kind::Float && t.device() == Device::Cpu && t.is_contiguous(),
        "fused decode reads contiguous fp32 CPU tensors"
    );
    if t.numel() == 0 {
        return &[];
    }
    // SAFETY: the tensor is contiguous fp32 on the CPU, so `numel` floats start at `data_ptr`;
    // they live as long as the borrow of `t`.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, t.numel()) }
}

/// A fresh contiguous fp32 `[rows, cols]` CPU tensor, filled by `fill`.
pub(super) fn matrix(rows: usize, cols: usize, fill: impl FnOnce(&mut [f32])) -> Tensor {
    let t = Tensor::empty([rows as i64, cols as i64], (Kind::Float, Device::Cpu));
    // SAFETY: `t` is a fresh contiguous fp32 CPU tensor that nothing else refers to yet.
    fill(unsafe { host_mut(&t) });
    t
}

/// The bytes (0 or 1) of a contiguous bool CPU tensor.
fn host_bools(t: &Tensor) -> &[u8] {
    assert!(t.kind() == Kind::Bool && t.device() == Device::Cpu && t.is_contiguous());
    if t.numel() == 0 {
        return &[];
    }
    // SAFETY: as in `host`, with one byte per bool.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const u8, t.numel()) }
}

/// The elements of a contiguous fp32 CPU tensor, writable.
///
/// # Safety
/// Nothing else may read or write the tensor's memory while the slice lives.
#[allow(clippy::mut_from_ref)]
unsafe fn host_mut(t: &Tensor) -> &mut [f32] {
    let len = host(t).len();
    if len == 0 {
        return &mut [];
    }
    std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attention shared out among threads writes the same cache and outputs, bit for bit, as
    /// one thread: each row is computed alone either way.
    #[test]
    fn attention_on_several_threads_equals_one_thread() {
        let (rows, heads, kv_heads, head_dim, capacity, slot) = (24, 4, 2, 16, 112, 100);
        let shape = AttentionShape { heads, kv_heads, head_dim, capacity, slot };
        let mut state = 7u64;
        let mut random = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
                })
                .collect()
        };
        let qkv = random(rows * (heads + 2 * kv_heads) * head_dim);
        let table = random(128 * head_dim);
        let keys = random(rows * kv_heads * head_dim * capacity);
        let values = random(rows * kv_heads * capacity * head_dim);
        // Row r's first r slots are padding.
        let key_mask: Vec<u8> = (0..rows * capacity).map(|i| u8::from(i % capacity >= i / capacity)).collect();
        let positions: Vec<i64> = (0..rows as i64).map(|r| 100 - r).collect();
        let inputs = AttentionInputs {
            qkv: &qkv,
            positions: &positions,
            cos: &table,
            sin: &table,
            q_norm: None,
            k_norm: None,
            key_mask: &key_mask,
        };
        assert!(rows * heads * (slot + 1) * head_dim >= PARALLEL_ATTENTION_WORK);
        let run = |threads: usize| {
            let (mut keys, mut values, mut out) = (keys.clone(), values.clone(), vec![0f32; rows * heads * head_dim]);
            tch::set_num_threads(threads as i32);
            attend(&shape, inputs, &mut keys, &mut values, &mut out, threads);
            (keys, values, out)
        };
        let one = run(1);
        assert!(one.2.iter().all(|x| x.is_finite()) && one.2.iter().any(|&x| x != 0.0));
        assert!(run(2) == one, "two threads differ from one");
        assert!(run(3) == one, "three threads differ from one");
    }
}
