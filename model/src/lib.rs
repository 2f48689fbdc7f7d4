//! aha-model: the policy model. Qwen2, Llama (3) and Qwen3 decoders on tch (libtorch), read from a
//! Hugging Face folder (`config.json`, safetensors weights single or sharded, `tokenizer.json`) and
//! written back in the same format.
//!
//! It runs forward passes (batched, left-padded, with a preallocated KV cache; in the weights'
//! dtype or, mixed precision, in bf16 over fp32 weights) and computes per-token log-probs in fp32
//! without ever materialising a `[batch x len x vocab]` tensor. Single-token decode steps of fp32
//! models on the CPU run fused: libtorch for the GEMMs, Rust ([`cpu_math`]) for the rest. So do
//! the training passes of small fp32 models on the CPU, behind the one training-pass interface
//! that GRPO and SFT use ([`CompletionBatch`], [`TrainPass`]): the model
//! gives completion log-probs and takes their gradient back into the weights' `.grad`.
//! [`intra_op`] runs those kernels' parallel loops on libtorch's own threads, and lends them to
//! the other crates (the rollout's shards and sampler, the optimizer).
//! LoRA adapters ([`lora`]) live inside its linear layers, read and written in PEFT's format; a
//! pass can switch them off to run the frozen base.
//! It does not sample (that is `aha-rollout`), nor hold a loss or an optimizer (that is
//! `aha-grpo`): it gives both the same logits.
//!
//! Main types: [`CausalLM`] (load, forward, logits, log-probs, save; adapters), [`CompletionBatch`]
//! and [`TrainPass`] (scoring completions for training),
//! [`ModelConfig`], [`LoraConfig`],
//! [`KvCache`], [`PaddedBatch`], [`Tokenizer`], [`ChatTemplate`] (the tokenizer's chat template, rendered as
//! transformers renders it), [`ModelError`].

pub mod architecture;
pub mod batch;
pub mod cache;
pub mod chat_template;
pub mod checkpoint;
pub mod completions;
pub mod config;
mod cpu_math;
pub mod decoder;
pub mod error;
pub mod intra_op;
pub mod lora;
mod mkl_gemm;
pub mod tokenizer;

/// The sampler's fp32 kernels (`aha-rollout` draws tokens with them); the crate's other CPU
/// loops stay inside it.
pub mod sampler_kernels {
    pub use crate::cpu_math::{chunk_sums, softmax_weights};
}

pub use architecture::Architecture;
pub use batch::{positions_from_mask, PaddedBatch};
pub use cache::KvCache;
pub use chat_template::{ChatTemplate, ChatTemplateError, Message};
pub use completions::{CompletionBatch, TrainPass};
pub use config::{ModelConfig, RopeConfig, RopeScaling};
pub use decoder::{CausalLM, LoadOptions, SaveOptions};
pub use error::{ModelError, Result};
pub use lora::{LoraConfig, Projection, TargetModules};
pub use tokenizer::{train_byte_level_bpe, Tokenizer};

/// Parses a device name: `cpu`, `cuda`, `cuda:N`, or `auto` (CUDA when available). Whether the
/// device is usable here is [`check_device`]'s business (a config written for a GPU machine still
/// parses on a laptop).
pub fn parse_device(name: &str) -> Result<tch::Device> {
    DeviceName::parse(name).map(DeviceName::device)
}

/// A CUDA device this process cannot use is an error here, before any tensor goes to it (instead
/// of a libtorch dispatch failure later).
pub fn check_device(device: tch::Device) -> Result<()> {
    let tch::Device::Cuda(index) = device else { return Ok(()) };
    if !tch::Cuda::is_available() {
        return Err(ModelError::Input(format!(
            "device cuda:{index}: CUDA is not available here (no GPU, or libtorch set up for CPU only: \
             AHA_TORCH=cuda scripts/setup.sh)"
        )));
    }
    let count = tch::Cuda::device_count();
    if index as i64 >= count {
        return Err(ModelError::Input(format!("device cuda:{index}: only {count} CUDA device(s) here")));
    }
    Ok(())
}

/// Parses a dtype name: `f32`/`float32`, `bf16`/`bfloat16`, `f16`/`float16`.
pub fn parse_kind(name: &str) -> Result<tch::Kind> {
    match name {
        "f32" | "float32" => Ok(tch::Kind::Float),
        "bf16" | "bfloat16" => Ok(tch::Kind::BFloat16),
        "f16" | "float16" => Ok(tch::Kind::Half),
        _ => Err(ModelError::Input(format!("unknown dtype \"{name}\" (expected f32, bf16 or f16)"))),
    }
}

/// A dtype as a configuration file names it (`f32`, `bf16`, `f16`, or `float32`, `bfloat16`,
/// `float16`): parsed when the file is read, written back by its short name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DTypeName(tch::Kind);

impl DTypeName {
    pub const F32: DTypeName = DTypeName(tch::Kind::Float);

    pub fn kind(self) -> tch::Kind {
        self.0
    }
}

impl TryFrom<String> for DTypeName {
    type Error = String;
    fn try_from(name: String) -> std::result::Result<Self, String> {
        parse_kind(&name).map(DTypeName).map_err(name_error)
    }
}

/// What a configuration file says about a name it got wrong: the parser's message alone.
fn name_error(error: ModelError) -> String {
    match error {
        ModelError::Input(message) => message,
        other => other.to_string(),
    }
}

impl From<DTypeName> for String {
    fn from(dtype: DTypeName) -> String {
        match dtype.0 {
            tch::Kind::BFloat16 => "bf16",
            tch::Kind::Half => "f16",
            _ => "f32",
        }
        .into()
    }
}

/// A device as a configuration file names it (`cpu`, `cuda`, `cuda:N`, `auto`): parsed when the
/// file is read; `auto` is resolved when the model is loaded (CUDA when available).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceName {
    Auto,
    Cpu,
    Cuda(usize),
}

impl DeviceName {
    /// Parses `cpu`, `cuda` (= `cuda:0`), `cuda:N` or `auto`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "cpu" => Ok(DeviceName::Cpu),
            "auto" => Ok(DeviceName::Auto),
            "cuda" => Ok(DeviceName::Cuda(0)),
            _ => name.strip_prefix("cuda:").and_then(|n| n.parse().ok()).map(DeviceName::Cuda).ok_or_else(|| {
                ModelError::Input(format!("unknown device \"{name}\" (expected cpu, cuda, cuda:N or auto)"))
            }),
        }
    }

    pub fn device(self) -> tch::Device {
        match self {
            DeviceName::Auto => tch::Device::cuda_if_available(),
            DeviceName::Cpu => tch::Device::Cpu,
            DeviceName::Cuda(index) => tch::Device::Cuda(index),
        }
    }
}

impl TryFrom<String> for DeviceName {
    type Error = String;
    fn try_from(name: String) -> std::result::Result<Self, String> {
        DeviceName::parse(&name).map_err(name_error)
    }
}

impl From<DeviceName> for String {
    fn from(device: DeviceName) -> String {
        match device {
            DeviceName::Auto => "auto".into(),
            DeviceName::Cpu => "cpu".into(),
            DeviceName::Cuda(index) => format!("cuda:{index}"),
        }
    }
}
