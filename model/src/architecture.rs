//! The decoder families we run, and what sets each apart. They share one implementation
//! (`decoder.rs`); everything that differs is a flag on `ModelConfig`, set from this table:
//!
//! | model_type | q/k/v bias          | o_proj bias      | MLP bias   | q/k RMSNorm per head | rope            |
//! |------------|---------------------|------------------|------------|----------------------|-----------------|
//! | qwen2      | always              | never            | never      | no                   | default         |
//! | llama      | `attention_bias`    | `attention_bias` | `mlp_bias` | no                   | default, llama3 |
//! | qwen3      | `attention_bias`    | `attention_bias` | never      | yes (before RoPE)    | default         |
//!
//! All three: pre-norm RMSNorm blocks, SwiGLU MLP, rotate-half RoPE, grouped-query attention,
//! optional tied embeddings, explicit `head_dim` where given.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Qwen2,
    Llama,
    Qwen3,
}

impl Architecture {
    /// The `model_type` values of config.json we accept.
    pub const SUPPORTED: [&'static str; 3] = ["qwen2", "llama", "qwen3"];

    pub fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "qwen2" => Some(Self::Qwen2),
            "llama" => Some(Self::Llama),
            "qwen3" => Some(Self::Qwen3),
            _ => None,
        }
    }

    pub fn model_type(self) -> &'static str {
        match self {
            Self::Qwen2 => "qwen2",
            Self::Llama => "llama",
            Self::Qwen3 => "qwen3",
        }
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.model_type())
    }
}
