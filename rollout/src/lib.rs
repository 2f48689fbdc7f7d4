//! aha-rollout: turning prompts into completions. Token sampling (temperature, top-k, top-p,
//! min-p, stop tokens, seeded per sequence) and batched generation with a shared-prefill KV cache
//! on an `aha_model::CausalLM`.
//!
//! It does not score completions (that is `aha-rewards`) nor decide what to train on.
//!
//! Main types: [`SamplingParams`], [`GenerationRequest`], [`Completion`], [`generate()`].

pub mod generate;
pub mod sampling;

pub use generate::{generate, Completion, FinishReason, GenerationRequest};
pub use sampling::{sample_token, SampledToken, SamplingParams};

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("invalid sampling parameters: {0}")]
    Params(String),
    #[error(transparent)]
    Model(#[from] aha_model::ModelError),
}
