//! The decoder-only transformer shared by Qwen2, Llama and Qwen3 (see `architecture.rs` for what
//! differs), with layers named after Hugging Face's weights so that loading is a plain mapping.
//!
//! Numerics follow transformers so that fp32 log-probs agree to 1e-4: RMSNorm in fp32, cast back
//! to the input dtype before the weight multiplies; RoPE tables in fp32 from
//! inv_freq = 1/theta^(2i/d), rotate-half layout; attention softmax with scale head_dim^-0.5;
//! grouped-query attention maps query head h to kv head h / (heads / kv_heads). In bf16 (weights
//! or compute dtype) a pass is transformers' model converted to bf16: log-probs agree with it as
//! closely as its eager and SDPA attention agree with each other (tests/tests/model_parity.rs).

use std::path::Path;
use std::sync::{Arc, Mutex};

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::cache::KvCache;
use crate::checkpoint::{torch_dtype_name, write_safetensors, Checkpoint};
use crate::config::{ModelConfig, RopeScaling};
use crate::error::{io_error, ModelError, Result};
use crate::lora::{Adapter, Adapters, Projection};
use crate::mkl_gemm::Packed;

mod fused_decode;
mod fused_train;

pub(crate) use fused_train::CompletionPass;

/// Files copied next to the weights when a model is saved, so that transformers and vLLM load
/// the folder unchanged.
const COMPANION_FILES: [&str; 8] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
];

/// Largest number of fp32 logits materialised at once by `token_logprobs_and_entropy` (64 MiB).
const LOGPROB_CHUNK_ELEMENTS: i64 = 1 << 24;

#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    pub device: Device,
    /// dtype of the weights (Float, BFloat16 or Half), and of forward passes unless `compute`
    /// says otherwise.
    pub kind: Kind,
    /// dtype of forward passes when it differs from `kind`: mixed precision, a pass on casts of
    /// the weights (see [`CausalLM::compute_kind`]). `None` computes in `kind`.
    pub compute: Option<Kind>,
    /// Register the weights as trainable variables (requires_grad).
    pub trainable: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { device: Device::Cpu, kind: Kind::Float, compute: None, trainable: false }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct SaveOptions {
    /// dtype of the written tensors; `None` keeps the model's.
    pub kind: Option<Kind>,
    /// Above this many bytes the weights are split into shards with an index.
    pub max_shard_bytes: u64,
}

impl Default for SaveOptions {
    fn default() -> Self {
        Self { kind: None, max_shard_bytes: 5 << 30 }
    }
}

pub(crate) struct Linear {
    pub(crate) weight: Weight,
    bias: Option<Weight>,
    /// A LoRA adapter on this layer (see `lora.rs`).
    pub(crate) lora: Option<Adapter>,
    /// MKL's packed copy of an fp32 weight for the fused decode step, and the weight's version
    /// when it was packed (see `mkl_gemm`).
    packed: Mutex<Option<(i64, Arc<Packed>)>>,
}

impl Linear {
    fn new(weight: Weight, bias: Option<Weight>) -> Self {
        Self { weight, bias, lora: None, packed: Mutex::new(None) }
    }

    /// `(out, in)`.
    pub(crate) fn weight_shape(&self) -> (i64, i64) {
        self.weight.stored.size2().expect("a linear weight is [out, in]")
    }

    /// The weight packed for MKL's GEMM with `rows`-row inputs, packed anew after any change of
    /// the weight; `None` without MKL. The weight must be fp32.
    fn packed(&self, rows: usize) -> Option<Arc<Packed>> {
        let weight = &self.weight.stored;
        let version = weight.internal_version();
        let mut packed = self.packed.lock().expect("packed weight lock");
        if let Some((made_from, packed)) = &*packed {
            if *made_from == version {
                return Some(packed.clone());
            }
        }
        let (n, k) = weight.size2().expect("a linear weight is [out, in]");
        let fresh = Arc::new(Packed::new(fused_decode::host(weight), n as usize, k as usize, rows)?);
        *packed = Some((version, fresh.clone()));
        Some(fresh)
    }

    fn forward(&self, x: &Tensor, grad_enabled: bool) -> Tensor {
        let bias = self.bias.as_ref().map(|b| b.get(grad_enabled));
        let y = x.linear(&self.weight.get(grad_enabled), bias.as_deref());
        match &self.lora {
            Some(adapter) => adapter.add_to(y, x, grad_enabled),
            None => y,
        }
    }

    fn requires_grad(&self) -> bool {
        self.weight.stored.requires_grad() || self.bias.as_ref().is_some_and(|b| b.stored.requires_grad())
    }
}

/// A weight as stored (the variable that the optimizer updates and `save` writes) and as forward
/// passes use it. Under mixed precision (`LoadOptions::compute`) passes use a cast to the compute
/// dtype: a pass that records gradients casts anew, so that the gradient flows back through the
/// cast to the stored weight; other passes (generation, evaluation, old and reference log-probs)
/// reuse one cast until the weight changes. Any in-place update, the optimizer's included, moves
/// the tensor's version counter, which its views and detached aliases share.
pub(crate) struct Weight {
    pub(crate) stored: Tensor,
    /// The compute dtype and the latest cast, when that dtype differs from the stored one.
    cast: Option<(Kind, Mutex<Option<VersionedCast>>)>,
}

/// A cast of a weight and the version of the weight it was made from.
type VersionedCast = (i64, Tensor);

impl Weight {
    fn new(stored: Tensor, compute: Kind) -> Self {
        let cast = (compute != stored.kind()).then(|| (compute, Mutex::new(None)));
        Self { stored, cast }
    }

    fn get(&self, grad_enabled: bool) -> WeightRef<'_> {
        let Some((kind, cached)) = &self.cast else { return WeightRef::Stored(&self.stored) };
        if grad_enabled && self.stored.requires_grad() {
            return WeightRef::Cast(self.stored.to_kind(*kind));
        }
        let version = self.stored.internal_version();
        let mut cached = cached.lock().expect("weight cast lock");
        match &*cached {
            Some((made_from, cast)) if *made_from == version => WeightRef::Cast(cast.shallow_clone()),
            _ => {
                let cast = tch::no_grad(|| self.stored.to_kind(*kind));
                *cached = Some((version, cast.shallow_clone()));
                WeightRef::Cast(cast)
            }
        }
    }
}

/// A weight in the compute dtype: the stored tensor itself, or a cast of it.
enum WeightRef<'a> {
    Stored(&'a Tensor),
    Cast(Tensor),
}

impl std::ops::Deref for WeightRef<'_> {
    type Target = Tensor;

    fn deref(&self) -> &Tensor {
        match self {
            WeightRef::Stored(t) => t,
            WeightRef::Cast(t) => t,
        }
    }
}

/// Projections of the same input stored as one matrix. `parts` are the Hugging Face weights (the
/// variables: trainable leaves, optimised and saved by name); each aliases its rows of `fused`,
/// so an in-place update of a part (the optimizer's) is an update of the fused matrix and the
/// two never disagree. Passes that need no gradient run one GEMM for all parts; passes that do
/// run one per part, so that gradients reach the leaves.
struct FusedLinear {
    fused: Linear,
    parts: Vec<Linear>,
}

impl FusedLinear {
    /// Whether this pass must go through the parts: gradients are recorded and some part wants one.
    fn per_part(&self, grad_enabled: bool) -> bool {
        grad_enabled && self.parts.iter().any(Linear::requires_grad)
    }

    /// Whether some part has a LoRA adapter (the fused matrix has none of its own).
    fn adapted(&self) -> bool {
        self.parts.iter().any(|p| p.lora.is_some())
    }

    /// Each part's output (its adapter's included).
    fn forward(&self, x: &Tensor, grad_enabled: bool) -> Vec<Tensor> {
        if self.per_part(grad_enabled) {
            return self.parts.iter().map(|p| p.forward(x, grad_enabled)).collect();
        }
        let y = self.fused.forward(x, grad_enabled);
        let mut start = 0;
        self.parts
            .iter()
            .map(|p| {
                let size = p.weight.stored.size()[0];
                start += size;
                let part = y.narrow(-1, start - size, size);
                match &p.lora {
                    Some(adapter) => adapter.add_to(part, x, grad_enabled),
                    None => part,
                }
            })
            .collect()
    }
}

struct RmsNorm {
    weight: Weight,
    eps: f64,
}

impl RmsNorm {
    fn forward(&self, x: &Tensor, grad_enabled: bool) -> Tensor {
        let weight = self.weight.get(grad_enabled);
        let kind = x.kind();
        // fp32 at least (f64 stays f64, for exactness checks).
        let compute = if kind == Kind::Double { Kind::Double } else { Kind::Float };
        if kind == compute {
            let variance = x.square().mean_dim(-1, true, compute);
            return &*weight * (x * (variance + self.eps).rsqrt());
        }
        let x = x.to_kind(compute);
        let variance = x.square().mean_dim(-1, true, compute);
        let normed = x * (variance + self.eps).rsqrt();
        // Cast back before the weight multiplies, as transformers does.
        &*weight * normed.to_kind(kind)
    }
}

/// cos and sign-folded sin of every token's position, `[batch * len, head_dim]` in the compute
/// dtype. Rotate-half RoPE, `x * cos + rotate_half(x) * sin` with rotate_half(x) = (-x2, x1), is
/// computed as `x * cos + (x2, x1) * (-sin1, sin2)`: the same products (negation is exact).
struct Rope {
    cos: Tensor,
    sin: Tensor,
    batch: i64,
    len: i64,
}

impl Rope {
    /// Rotates `x`, `[batch, len, heads, head_dim]` (`heads_first`: `[batch, heads, len, head_dim]`).
    fn apply(&self, x: &Tensor, heads_first: bool) -> Tensor {
        let d = self.cos.size()[1];
        let shape = if heads_first { [self.batch, 1, self.len, d] } else { [self.batch, self.len, 1, d] };
        let half = d / 2;
        let swapped = Tensor::cat(&[x.narrow(-1, half, half), x.narrow(-1, 0, half)], -1);
        x * self.cos.view(shape) + swapped * self.sin.view(shape)
    }
}

struct Attention {
    /// q_proj, k_proj, v_proj.
    qkv: FusedLinear,
    o_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
}

impl Attention {
    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        mask: Option<&Tensor>,
        cache: Option<(&mut KvCache, usize)>,
        grad_enabled: bool,
    ) -> Tensor {
        let (b, t, _) = x.size3().expect("hidden states are [batch, len, hidden]");
        let (heads, kv_heads, d) = (self.heads, self.kv_heads, self.head_dim);
        let (q, k, v) = if self.q_norm.is_none() && !self.qkv.per_part(grad_enabled) && !self.qkv.adapted() {
            // One GEMM for q, k and v, and one rotation for the heads of q and k together.
            let qkv = self.qkv.fused.forward(x, grad_enabled).view([b, t, heads + 2 * kv_heads, d]);
            let qk = rope.apply(&qkv.narrow(2, 0, heads + kv_heads), false);
            (
                qk.narrow(2, 0, heads).transpose(1, 2),
                qk.narrow(2, heads, kv_heads).transpose(1, 2),
                qkv.narrow(2, heads + kv_heads, kv_heads).transpose(1, 2),
            )
        } else {
            let mut parts = self.qkv.forward(x, grad_enabled).into_iter();
            let mut project = |norm: &Option<RmsNorm>, heads: i64| {
                let y = parts.next().expect("three projections").view([b, t, heads, d]);
                let y = match norm {
                    Some(norm) => norm.forward(&y, grad_enabled),
                    None => y,
                };
                y.transpose(1, 2)
            };
            let q = rope.apply(&project(&self.q_norm, heads), true);
            let k = rope.apply(&project(&self.k_norm, kv_heads), true);
            (q, k, project(&None, kv_heads))
        };
        let (k, v) = match cache {
            Some((cache, layer)) => {
                let (past, slots) = (cache.len(), cache.len() + t);
                cache.write(layer, &k, &v);
                if past == 0 {
                    // A first step attends only to its own keys and values.
                    (k, v)
                } else {
                    // SDPA's kernels want keys contiguous along head_dim.
                    let keys = cache.keys(layer, slots);
                    let keys = if cache.keys_are_transposed() { keys.contiguous() } else { keys };
                    (keys, cache.values(layer, slots))
                }
            }
            None => (k, v),
        };
        let scale = (d as f64).powf(-0.5);
        let y = if grad_enabled && math_attention_fits(&q, k.size()[2]) {
            math_attention(&q, &k, &v, mask, scale)
        } else {
            Tensor::scaled_dot_product_attention(&q, &k, &v, mask, 0.0, mask.is_none(), Some(scale), heads != kv_heads)
                .transpose(1, 2)
        };
        self.o_proj.forward(&y.reshape([b, t, heads * d]), grad_enabled)
    }
}

/// Largest fp32 score tensor `[batch, heads, queries, keys]` for which a pass that records
/// gradients runs attention as plain products (`math_attention`) rather than through SDPA: on
/// the CPU in bf16 or f16, where the backward pass of SDPA's flash kernel costs several times
/// the products (24.5M bench model, bf16, a 64 x 104-token training pass: 1.5 s against 2.2 s).
/// In fp32 the two cost about the same and SDPA stays. Above the limit the scores that every
/// layer saves for the backward pass would cost more memory than SDPA's recomputation saves.
const MATH_ATTENTION_SCORE_BYTES: i64 = 64 << 20;

fn math_attention_fits(q: &Tensor, keys: i64) -> bool {
    let (b, heads, t, _) = q.size4().expect("queries are [batch, heads, len, head_dim]");
    q.device() == Device::Cpu
        && matches!(q.kind(), Kind::BFloat16 | Kind::Half)
        && b * heads * t * keys * 4 <= MATH_ATTENTION_SCORE_BYTES
}

/// Attention `[batch, len, heads, head_dim]` as products: queries `[b, heads, t, d]`, keys and
/// values `[b, kv_heads, keys, d]`, `allowed` `[b, 1, t, keys]` bool or, if absent, causal. The
/// query heads that share a kv head are the rows of one product with its keys (no repeated
/// keys). Scores are scaled and soft-maxed in fp32, then cast back, as transformers' eager
/// attention does.
fn math_attention(q: &Tensor, k: &Tensor, v: &Tensor, allowed: Option<&Tensor>, scale: f64) -> Tensor {
    let (b, heads, t, d) = q.size4().expect("queries are [batch, heads, len, head_dim]");
    let (kv_heads, keys) = (k.size()[1], k.size()[2]);
    let group = heads / kv_heads;
    let q = q.reshape([b * kv_heads, group * t, d]);
    let scores = q.bmm(&k.reshape([b * kv_heads, keys, d]).transpose(1, 2)).to_kind(Kind::Float) * scale;
    let scores = scores.view([b, kv_heads, group, t, keys]);
    let hidden = match allowed {
        Some(allowed) => allowed.logical_not().view([b, 1, 1, t, keys]),
        None => {
            let (queries, key_index) =
                (Tensor::arange(t, (Kind::Int64, q.device())), Tensor::arange(keys, (Kind::Int64, q.device())));
            key_index.unsqueeze(0).gt_tensor(&(queries + (keys - t)).unsqueeze(1))
        }
    };
    let probs = scores.masked_fill(&hidden, f64::NEG_INFINITY).softmax(-1, Kind::Float).to_kind(v.kind());
    probs
        .view([b * kv_heads, group * t, keys])
        .bmm(&v.reshape([b * kv_heads, keys, d]))
        .view([b, heads, t, d])
        .transpose(1, 2)
}

struct Mlp {
    /// gate_proj, up_proj.
    gate_up: FusedLinear,
    down_proj: Linear,
}

impl Mlp {
    fn forward(&self, x: &Tensor, grad_enabled: bool) -> Tensor {
        let gate_up = self.gate_up.forward(x, grad_enabled);
        self.down_proj.forward(&(gate_up[0].silu() * &gate_up[1]), grad_enabled)
    }
}

struct DecoderLayer {
    self_attn: Attention,
    mlp: Mlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

/// A causal language model: embeddings, decoder layers, final norm and LM head.
pub struct CausalLM {
    config: ModelConfig,
    /// The `COMPANION_FILES` of the folder the model came from, read when it is built: every
    /// save writes them, even once that folder is gone (a resumed run loads a checkpoint that
    /// checkpoint rotation deletes later).
    companion_files: Vec<(&'static str, Vec<u8>)>,
    vars: VarStore,
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    /// The embedding matrix itself when embeddings are tied.
    lm_head: Weight,
    /// `[head_dim / 2]` fp32 rotary frequencies, scaling applied.
    inv_freq: Tensor,
    /// cos and sign-folded sin (see `Rope`) of positions 0.., `[positions, head_dim]` in the
    /// compute dtype, on the CPU: a pass looks its positions up instead of computing them. Grows
    /// on demand.
    rope_table: Mutex<(Tensor, Tensor)>,
    kind: Kind,
    compute: Kind,
    /// Whether the fused decode step multiplies by MKL-packed copies of the weights: only for
    /// models of up to `PACKED_WEIGHTS_UP_TO_BYTES` of fp32 weights, since the copies double
    /// the memory the layers take.
    packs_weights: bool,
    /// Whether training passes may run fused (`CausalLM::trains_fused`).
    fused_training: bool,
    /// LoRA adapters, when the model has them (see `lora.rs`).
    pub(crate) adapters: Option<Adapters>,
    /// The folder the model was built from (for an adapter's `base_model_name_or_path`).
    source_dir: std::path::PathBuf,
}

/// Largest fp32 model whose fused decode step keeps packed copies of its weights (2 GiB:
/// Qwen2.5-0.5B).
const PACKED_WEIGHTS_UP_TO_BYTES: i64 = 2 << 30;

/// A decoder layer's seven linear layers with their names, in the order q, k, v, o, gate, up,
/// down: `[(Projection, &Linear); 7]`, or `&mut Linear` with `mut`. The one place that lists them.
macro_rules! layer_linears {
    ($layer:expr $(, $mut:tt)?) => {{
        let layer = $layer;
        let [q, k, v] = & $($mut)? layer.self_attn.qkv.parts[..] else { unreachable!("q, k and v") };
        let [gate, up] = & $($mut)? layer.mlp.gate_up.parts[..] else { unreachable!("gate and up") };
        [
            (Projection::Q, q),
            (Projection::K, k),
            (Projection::V, v),
            (Projection::O, & $($mut)? layer.self_attn.o_proj),
            (Projection::Gate, gate),
            (Projection::Up, up),
            (Projection::Down, & $($mut)? layer.mlp.down_proj),
        ]
    }};
}

impl CausalLM {
    /// Loads `DIR/config.json` and the safetensors weights in `DIR`.
    pub fn load(dir: &Path, options: LoadOptions) -> Result<Self> {
        let config = ModelConfig::from_dir(dir)?;
        let checkpoint = Checkpoint::open(dir)?;
        Self::build(dir, config, options, |name, shape, kind, device| checkpoint.tensor(name, shape, kind, device))
    }

    /// A new model with the architecture of `DIR/config.json` and fresh weights, for training
    /// from scratch: as transformers' `_init_weights` for these models, linear and embedding
    /// weights are drawn from N(0, `initializer_range`^2) (default 0.02), norm weights are 1 and
    /// biases 0. The same `seed` gives the same weights. `DIR` needs no weights; its tokenizer
    /// files are copied when the model is saved.
    pub fn init_random(dir: &Path, options: LoadOptions, seed: u64) -> Result<Self> {
        let config = ModelConfig::from_dir(dir)?;
        let std = config.raw.get("initializer_range").and_then(serde_json::Value::as_f64).unwrap_or(0.02);
        crate::lora::seeded(seed, || {
            Self::build(dir, config, options, |name, shape, kind, device| {
                let is_norm = name.ends_with("norm.weight");
                let options = (Kind::Float, Device::Cpu);
                let t = if name.ends_with(".bias") {
                    Tensor::zeros(shape, options)
                } else if is_norm {
                    Tensor::ones(shape, options)
                } else {
                    Tensor::randn(shape, options) * std
                };
                Ok(t.to_kind(kind).to_device(device))
            })
        })
    }

    /// The model of `config` (read from `dir`) with each weight from
    /// `weight(name, shape, kind, device)`.
    pub(crate) fn build(
        dir: &Path,
        config: ModelConfig,
        options: LoadOptions,
        weight: impl Fn(&str, &[i64], Kind, Device) -> Result<Tensor>,
    ) -> Result<Self> {
        let LoadOptions { device, kind, compute, trainable } = options;
        let compute = compute.unwrap_or(kind);
        crate::check_device(device)?;
        let vars = VarStore::new(device);
        let root = vars.root();
        let c = &config;
        let tensor = |path: &tch::nn::Path, name: &str, shape: &[i64]| -> Result<Tensor> {
            let t = weight(&path.path(name), shape, kind, device)?;
            Ok(path.add(name, t, trainable))
        };
        let cast = |t: Tensor| Weight::new(t, compute);
        let linear = |path: &tch::nn::Path, out: i64, inp: i64, bias: bool| -> Result<Linear> {
            let weight = cast(tensor(path, "weight", &[out, inp])?);
            let bias = if bias { Some(cast(tensor(path, "bias", &[out])?)) } else { None };
            Ok(Linear::new(weight, bias))
        };
        // The parts are registered as leaves that alias rows of the fused tensors (see FusedLinear).
        let fused_linear = |parts: &[(tch::nn::Path, i64)], inp: i64, bias: bool| -> Result<FusedLinear> {
            let total: i64 = parts.iter().map(|(_, out)| out).sum();
            let fused_weight = Tensor::empty([total, inp], (kind, device));
            let fused_bias = bias.then(|| Tensor::empty([total], (kind, device)));
            let part = |path: &tch::nn::Path, name: &str, fused: &Tensor, row: i64, shape: &[i64]| -> Result<Tensor> {
                let mut rows = fused.narrow(0, row, shape[0]);
                rows.copy_(&weight(&path.path(name), shape, kind, device)?);
                Ok(path.add(name, rows.detach(), trainable))
            };
            let mut linears = Vec::with_capacity(parts.len());
            let mut row = 0;
            for (path, out) in parts {
                let weight = cast(part(path, "weight", &fused_weight, row, &[*out, inp])?);
                let bias = match &fused_bias {
                    Some(b) => Some(cast(part(path, "bias", b, row, &[*out])?)),
                    None => None,
                };
                linears.push(Linear::new(weight, bias));
                row += out;
            }
            let fused = Linear::new(cast(fused_weight), fused_bias.map(cast));
            Ok(FusedLinear { fused, parts: linears })
        };
        let rms_norm = |path: &tch::nn::Path, size: i64| -> Result<RmsNorm> {
            Ok(RmsNorm { weight: cast(tensor(path, "weight", &[size])?), eps: c.rms_norm_eps })
        };

        let model = root.sub("model");
        let embed_tokens = tensor(&model.sub("embed_tokens"), "weight", &[c.vocab_size, c.hidden_size])?;
        let (h, q_dim, kv_dim) =
            (c.hidden_size, c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim);
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let layer = model.sub("layers").sub(i);
            let attn = layer.sub("self_attn");
            let mlp = layer.sub("mlp");
            let qkv = [(attn.sub("q_proj"), q_dim), (attn.sub("k_proj"), kv_dim), (attn.sub("v_proj"), kv_dim)];
            let gate_up = [(mlp.sub("gate_proj"), c.intermediate_size), (mlp.sub("up_proj"), c.intermediate_size)];
            layers.push(DecoderLayer {
                self_attn: Attention {
                    qkv: fused_linear(&qkv, h, c.qkv_bias)?,
                    o_proj: linear(&attn.sub("o_proj"), h, q_dim, c.o_bias)?,
                    q_norm: if c.qk_norm { Some(rms_norm(&attn.sub("q_norm"), c.head_dim)?) } else { None },
                    k_norm: if c.qk_norm { Some(rms_norm(&attn.sub("k_norm"), c.head_dim)?) } else { None },
                    heads: c.num_attention_heads,
                    kv_heads: c.num_key_value_heads,
                    head_dim: c.head_dim,
                },
                mlp: Mlp {
                    gate_up: fused_linear(&gate_up, h, c.mlp_bias)?,
                    down_proj: linear(&mlp.sub("down_proj"), h, c.intermediate_size, c.mlp_bias)?,
                },
                input_layernorm: rms_norm(&layer.sub("input_layernorm"), h)?,
                post_attention_layernorm: rms_norm(&layer.sub("post_attention_layernorm"), h)?,
            });
        }
        let norm = rms_norm(&model.sub("norm"), h)?;
        let lm_head = cast(if c.tie_word_embeddings {
            embed_tokens.shallow_clone()
        } else {
            tensor(&root.sub("lm_head"), "weight", &[c.vocab_size, h])?
        });
        let inv_freq = rope_inv_freq(c);
        let rope_table = Mutex::new(rope_cos_sin(&Tensor::zeros([0], (Kind::Int64, Device::Cpu)), &inv_freq, compute));
        let inv_freq = inv_freq.to_device(device);
        let weight_bytes: i64 = vars.variables().values().map(|t| t.numel() as i64 * 4).sum();
        let mut companion_files = Vec::new();
        for name in COMPANION_FILES {
            let path = dir.join(name);
            if path.is_file() {
                companion_files.push((name, std::fs::read(&path).map_err(io_error(&path))?));
            }
        }
        Ok(Self {
            config,
            companion_files,
            vars,
            embed_tokens,
            layers,
            norm,
            lm_head,
            inv_freq,
            rope_table,
            kind,
            compute,
            packs_weights: weight_bytes <= PACKED_WEIGHTS_UP_TO_BYTES,
            fused_training: true,
            adapters: None,
            source_dir: dir.to_path_buf(),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn device(&self) -> Device {
        self.vars.device()
    }

    /// dtype of the weights.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// dtype of forward passes and of the KV cache. When it differs from the weights' (mixed
    /// precision, `LoadOptions::compute`: say bf16 over fp32 weights), a pass runs exactly as
    /// the model converted to that dtype would, on casts of the weights, as FSDP's mixed precision
    /// (veRL's default) does: training keeps fp32 weights and optimizer state and gets fp32
    /// gradients, while the products, which dominate the time, use the bf16 units of the CPU
    /// (AMX or AVX512-BF16 where present) or GPU. RMSNorm statistics, logits and everything
    /// after them (log-softmax, sampling) stay fp32, as with any bf16 model here.
    pub fn compute_kind(&self) -> Kind {
        self.compute
    }

    /// The base weights, under their Hugging Face names (for saving).
    pub fn var_store(&self) -> &VarStore {
        &self.vars
    }

    /// The base weights as a checkpoint holds them, sorted by name: Hugging Face's names, the
    /// tied LM head once (as transformers saves it). What [`Self::save`] writes and what a weight
    /// sync over NCCL sends to vLLM servers.
    pub fn hf_weights(&self) -> Vec<(String, Tensor)> {
        let mut weights: Vec<(String, Tensor)> = self.vars.variables().into_iter().collect();
        weights.sort_by(|a, b| a.0.cmp(&b.0));
        weights
    }

    /// Every parameter under its name, sorted by name: the base weights (Hugging Face's names)
    /// and the LoRA adapters (PEFT's), trainable or not. Optimisers take the trainable ones.
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut all: Vec<(String, Tensor)> = self.vars.variables().into_iter().collect();
        if let Some(adapters) = &self.adapters {
            all.extend(adapters.vars.variables());
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The parameters that train (`requires_grad`): the adapters when the base is frozen.
    pub fn trainable_parameters(&self) -> Vec<Tensor> {
        self.parameters().into_iter().map(|(_, t)| t).filter(Tensor::requires_grad).collect()
    }

    /// The folder the model was loaded (or its architecture read) from.
    pub(crate) fn source_dir(&self) -> &Path {
        &self.source_dir
    }

    /// Every linear layer of the decoder layers, in order, with its layer index.
    pub(crate) fn linears(&self) -> Vec<(usize, Projection, &Linear)> {
        let layers = self.layers.iter().enumerate();
        layers.flat_map(|(i, layer)| layer_linears!(layer).map(|(p, linear)| (i, p, linear))).collect()
    }

    /// Calls `f` on every linear layer of the decoder layers, in order, with its layer index
    /// (the order of [`CausalLM::linears`]).
    pub(crate) fn for_each_linear(
        &mut self,
        mut f: impl FnMut(usize, Projection, &mut Linear) -> Result<()>,
    ) -> Result<()> {
        for (i, layer) in self.layers.iter_mut().enumerate() {
            for (p, linear) in layer_linears!(layer, mut) {
                f(i, p, linear)?;
            }
        }
        Ok(())
    }

    /// An empty KV cache for `batch` sequences of up to `capacity` tokens.
    pub fn new_cache(&self, batch: i64, capacity: i64) -> KvCache {
        KvCache::new(&self.config, batch, capacity, self.compute, self.device())
    }

    /// Final hidden states `[batch, len, hidden]` of `input_ids` `[batch, len]`.
    ///
    /// `positions` (`[batch, len]` int64) are each token's position in its own sequence.
    /// `attention_mask` (`[batch, len]` bool, true = real token) hides left padding; `None` means
    /// every token is real. With a cache the new tokens attend to everything cached before them,
    /// and are appended to it. Gradients flow through the cache too (the trainer runs a shared
    /// prompt once that way); generation uses it under `tch::no_grad`.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        attention_mask: Option<&Tensor>,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor {
        let (_, t) = input_ids.size2().expect("input_ids are [batch, len]");
        let grad_enabled = grad_enabled();
        if let Some(cache) = cache.as_deref_mut() {
            if self.decodes_fused(t, cache, grad_enabled) {
                return self.forward_fused_decode(input_ids, positions, attention_mask, cache, false);
            }
        }
        // Casting the rows looked up is casting the table (exactly), for a fraction of the work.
        let mut x = Tensor::embedding(&self.embed_tokens, input_ids, -1, false, false).to_kind(self.compute);
        let rope = self.rope(positions);
        let mask = match cache.as_deref_mut() {
            Some(cache) => {
                let past = cache.len();
                let keys = cache.begin_step(attention_mask, t);
                // A first step without padding is plain causal attention.
                (past > 0 || attention_mask.is_some()).then(|| attention_mask_4d(&keys, past, t))
            }
            None => attention_mask.map(|m| attention_mask_4d(m, 0, t)),
        };
        for (i, layer) in self.layers.iter().enumerate() {
            let attn_in = layer.input_layernorm.forward(&x, grad_enabled);
            let cache = cache.as_deref_mut().map(|c| (c, i));
            x = x + layer.self_attn.forward(&attn_in, &rope, mask.as_ref(), cache, grad_enabled);
            let mlp = layer.mlp.forward(&layer.post_attention_layernorm.forward(&x, grad_enabled), grad_enabled);
            x = x + mlp;
        }
        if let Some(cache) = cache {
            cache.end_step(t);
        }
        self.norm.forward(&x, grad_enabled)
    }

    /// One step of generation: `forward` of one token per row (`input_ids`, `positions`
    /// `[rows, 1]`, `step_mask` as `forward`'s mask) through `cache`, and the fp32 logits
    /// `[rows, vocab]` of the token after it. The fused decode computes them with the rows.
    pub fn next_token_logits(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        step_mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Tensor {
        let (_, t) = input_ids.size2().expect("input_ids are [batch, len]");
        assert_eq!(t, 1, "next_token_logits takes one token per row");
        if self.decodes_fused(t, cache, grad_enabled()) {
            return self.forward_fused_decode(input_ids, positions, step_mask, cache, true);
        }
        self.logits(&self.forward(input_ids, positions, step_mask, Some(cache)).select(1, 0))
    }

    /// fp32 logits `[..., vocab]` of hidden states `[..., hidden]`. The product runs in the
    /// compute dtype and is then widened; sampling and training both come through here, so the
    /// two sides agree on every logit.
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        hidden.matmul(&self.lm_head.get(grad_enabled()).tr()).to_kind(Kind::Float)
    }

    /// log p(target | position) for every position: `hidden` `[batch, len, hidden]`, `targets`
    /// `[batch, len]` -> `[batch, len]` fp32, with logits divided by `temperature` before the
    /// log-softmax. Processed in chunks of rows, so no `[batch x len x vocab]` tensor exists.
    pub fn token_logprobs(&self, hidden: &Tensor, targets: &Tensor, temperature: f64) -> Tensor {
        self.token_logprobs_and_entropy(hidden, targets, temperature, false).0
    }

    /// [`Self::token_logprobs`] and, with `with_entropy`, the entropy of the tempered distribution
    /// at each position `[batch, len]` (without gradient). The log-probs keep their autograd graph
    /// when gradients are on; per chunk of rows at most 64 MiB of logits exist at once outside
    /// what autograd keeps for the backward pass.
    pub fn token_logprobs_and_entropy(
        &self,
        hidden: &Tensor,
        targets: &Tensor,
        temperature: f64,
        with_entropy: bool,
    ) -> (Tensor, Option<Tensor>) {
        assert!(temperature > 0.0, "temperature must be positive for log-probs, got {temperature}");
        let (b, t, h) = hidden.size3().expect("hidden states are [batch, len, hidden]");
        if b * t == 0 {
            let empty = Tensor::zeros([b, t], (Kind::Float, hidden.device()));
            return (empty.shallow_clone(), with_entropy.then_some(empty));
        }
        let flat = hidden.reshape([b * t, h]);
        let targets = targets.reshape([b * t, 1]).to_kind(Kind::Int64);
        let rows = (LOGPROB_CHUNK_ELEMENTS / self.config.vocab_size).max(1);
        let (logprobs, entropies): (Vec<Tensor>, Vec<Option<Tensor>>) = (0..b * t)
            .step_by(rows as usize)
            .map(|start| {
                let len = rows.min(b * t - start);
                let mut logits = self.logits(&flat.narrow(0, start, len));
                if temperature != 1.0 {
                    logits = logits / temperature;
                }
                let logprobs = logits.gather(1, &targets.narrow(0, start, len), false).squeeze_dim(1)
                    - logits.logsumexp([1], false);
                let entropy = with_entropy.then(|| {
                    tch::no_grad(|| {
                        let log_p = logits.detach().log_softmax(1, Kind::Float);
                        -(log_p.exp() * &log_p).sum_dim_intlist(1, false, Kind::Float)
                    })
                });
                (logprobs, entropy)
            })
            .unzip();
        let entropies: Option<Vec<Tensor>> = entropies.into_iter().collect();
        (Tensor::cat(&logprobs, 0).view([b, t]), entropies.map(|e| Tensor::cat(&e, 0).view([b, t])))
    }

    /// For each sequence, `logprobs[i-1] = log p(tokens[i] | tokens[..i])` at `temperature`
    /// (one fewer value than tokens). Sequences are scored together in a left-padded batch.
    pub fn sequence_logprobs(&self, sequences: &[Vec<u32>], temperature: f64) -> Result<Vec<Vec<f32>>> {
        self.check_token_ids(sequences)?;
        let batch = crate::PaddedBatch::left_padded(sequences, 0, self.device())?;
        let width = batch.input_ids.size()[1];
        let logprobs = tch::no_grad(|| {
            let hidden = self.forward(&batch.input_ids, &batch.positions, batch.padding_mask(), None);
            let predicted = hidden.narrow(1, 0, width - 1);
            let targets = batch.input_ids.narrow(1, 1, width - 1);
            self.token_logprobs(&predicted, &targets, temperature).to_device(Device::Cpu)
        });
        Ok(batch
            .lengths
            .iter()
            .enumerate()
            .map(|(row, &len)| {
                let row = logprobs.get(row as i64).narrow(0, width - len, len - 1);
                Vec::<f32>::try_from(&row).expect("fp32 row")
            })
            .collect())
    }

    /// Fails with a clear message if any id is outside the vocabulary.
    pub fn check_token_ids(&self, sequences: &[Vec<u32>]) -> Result<()> {
        let vocab = self.config.vocab_size;
        match sequences.iter().flatten().find(|&&id| i64::from(id) >= vocab) {
            Some(id) => Err(ModelError::Input(format!("token id {id} is outside the vocabulary of {vocab}"))),
            None => Ok(()),
        }
    }

    /// Number of parameters (a tied LM head counted once).
    pub fn num_parameters(&self) -> i64 {
        self.vars.variables().values().map(|t| t.numel() as i64).sum()
    }

    /// Writes the model in Hugging Face format into `dir`: safetensors weights (the tied LM head
    /// omitted, as transformers does), config.json with its dtype updated, and the tokenizer and
    /// generation files of the folder the model was loaded from (as they were when it loaded).
    pub fn save(&self, dir: &Path, options: SaveOptions) -> Result<()> {
        let kind = options.kind.unwrap_or(self.kind);
        write_safetensors(dir, &self.hf_weights(), kind, options.max_shard_bytes)?;

        let mut config = self.config.raw.clone();
        if let Some(fields) = config.as_object_mut() {
            // transformers 5 writes "dtype", 4.x "torch_dtype": update whichever the file had.
            let key = if fields.contains_key("dtype") { "dtype" } else { "torch_dtype" };
            fields.insert(key.to_string(), torch_dtype_name(kind).into());
        }
        let config_path = dir.join("config.json");
        std::fs::write(&config_path, serde_json::to_string_pretty(&config).expect("json") + "\n")
            .map_err(io_error(&config_path))?;

        self.write_companion_files(dir)
    }

    /// Writes the tokenizer and generation files the model came with into `dir`.
    pub(crate) fn write_companion_files(&self, dir: &Path) -> Result<()> {
        for (name, bytes) in &self.companion_files {
            let path = dir.join(name);
            std::fs::write(&path, bytes).map_err(io_error(&path))?;
        }
        Ok(())
    }

    /// RoPE of each token's position, `positions` `[batch, len]`: looked up in the table on the
    /// CPU (grown when a position is past its end; the same values as computing them, which the
    /// tests check bit for bit), computed elsewhere (where reading the largest position would
    /// wait for the device) and for negative positions.
    fn rope(&self, positions: &Tensor) -> Rope {
        let (batch, len) = positions.size2().expect("positions are [batch, len]");
        let flat = positions.reshape([-1]);
        let range = (positions.device() == Device::Cpu && flat.numel() > 0).then(|| {
            let (low, high) = flat.aminmax(None, false);
            (low.int64_value(&[]), high.int64_value(&[]))
        });
        let (cos, sin) = match range {
            Some((low, high)) if low >= 0 => {
                let (cos, sin) = self.rope_table_to(high);
                (cos.index_select(0, &flat), sin.index_select(0, &flat))
            }
            _ => rope_cos_sin(&flat, &self.inv_freq, self.compute),
        };
        Rope { cos, sin, batch, len }
    }

    /// The cos and sin tables on the CPU (see `rope_table`), grown to cover position `high`.
    fn rope_table_to(&self, high: i64) -> (Tensor, Tensor) {
        let mut table = self.rope_table.lock().expect("rope table lock");
        if high >= table.0.size()[0] {
            let size = (high as u64 + 1).next_power_of_two().max(256) as i64;
            let all = Tensor::arange(size, (Kind::Int64, Device::Cpu));
            *table = rope_cos_sin(&all, &self.inv_freq.to_device(Device::Cpu), self.compute);
        }
        (table.0.shallow_clone(), table.1.shallow_clone())
    }
}

/// cos and sign-folded sin (`Rope`) `[n, head_dim]` of `positions` `[n]` (int64): angles in fp32,
/// `position * inv_freq` as transformers computes them, then cast to `kind`.
fn rope_cos_sin(positions: &Tensor, inv_freq: &Tensor, kind: Kind) -> (Tensor, Tensor) {
    let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * inv_freq;
    let (cos, sin) = (freqs.cos(), freqs.sin());
    (Tensor::cat(&[&cos, &cos], -1).to_kind(kind), Tensor::cat(&[&(-&sin), &sin], -1).to_kind(kind))
}

/// Whether this thread records gradients (torch's grad mode).
fn grad_enabled() -> bool {
    // SAFETY: reads this thread's grad mode by setting it and setting it back at once.
    unsafe {
        let enabled = torch_sys::at_grad_set_enabled(0);
        torch_sys::at_grad_set_enabled(enabled);
        enabled != 0
    }
}

/// inv_freq = 1/theta^(2i/d) in fp32, as transformers computes it, then rescaled for Llama 3.
fn rope_inv_freq(config: &ModelConfig) -> Tensor {
    let d = config.head_dim;
    let exponents = Tensor::arange_start_step(0, d, 2, (Kind::Int64, Device::Cpu)).to_kind(Kind::Float) / (d as f64);
    let inv_freq = Tensor::pow_scalar(config.rope.theta, &exponents).reciprocal();
    match config.rope.scaling {
        RopeScaling::Default => inv_freq,
        RopeScaling::Linear { factor } => inv_freq / factor,
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: context,
        } => {
            let low_freq_wavelen = context / low_freq_factor;
            let high_freq_wavelen = context / high_freq_factor;
            let wavelen: Tensor = inv_freq.reciprocal() * (2.0 * std::f64::consts::PI);
            // Long wavelengths (low frequencies) are divided by `factor`, short ones kept.
            let scaled = (&inv_freq / factor).where_self(&wavelen.gt(low_freq_wavelen), &inv_freq);
            let smooth: Tensor =
                (wavelen.reciprocal() * context - low_freq_factor) / (high_freq_factor - low_freq_factor);
            let smoothed: Tensor = (1.0 - &smooth) * &scaled / factor + &smooth * &scaled;
            let medium = wavelen.ge(high_freq_wavelen).logical_and(&wavelen.le(low_freq_wavelen));
            smoothed.where_self(&medium, &scaled)
        }
    }
}

/// `[batch, 1, queries, keys]` bool: query i (absolute slot `past + i`) may attend key j when j
/// is a real token and j <= past + i. Each query may always attend its own slot, so that rows of
/// padding never have an empty softmax (their outputs are never used).
fn attention_mask_4d(key_is_real: &Tensor, past: i64, queries: i64) -> Tensor {
    let device = key_is_real.device();
    let keys = key_is_real.size()[1];
    let key_index = Tensor::arange(keys, (Kind::Int64, device)).unsqueeze(0);
    let query_index = (Tensor::arange(queries, (Kind::Int64, device)) + past).unsqueeze(1);
    let causal = key_index.le_tensor(&query_index).unsqueeze(0);
    let own_slot = key_index.eq_tensor(&query_index).unsqueeze(0);
    causal.logical_and(&key_is_real.unsqueeze(1)).logical_or(&own_slot).unsqueeze(1)
}
