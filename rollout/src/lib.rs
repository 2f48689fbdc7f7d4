//! aha-rollout: turning prompts into scored groups of completions.
//!
//! What it does:
//! - [`sampling`]: choose a token from logits (temperature, top-k, top-p, min-p, stop tokens),
//!   seeded per sequence, recording its fp32 log-prob.
//! - [`Engine`]: the local generation backend. Continuous batching over one KV cache: each prompt
//!   is prefilled once for its whole group, finished sequences leave the batch and waiting ones
//!   join it, the cache is planned against a memory budget. Stop strings via [`StopStrings`].
//! - [`ShardedEngine`]: several engines side by side on a CPU's threads, each running its own
//!   requests without waiting for the others at every step.
//! - [`tools`]: tool-integrated reasoning: a completion's Python code blocks run in the sandbox
//!   mid-generation (the sequence pauses, its KV cache kept, and resumes with the result).
//! - [`Backend`]: what turns requests into completions; [`RemoteBackend`] is the one that sends
//!   them to vLLM or SGLang servers (with the weight sync after each update, [`WeightSync`]).
//! - [`RolloutPool`]: prompts in, [`ScoredGroup`]s out; reward checkers run on worker threads
//!   while the model thread keeps generating.
//!
//! What it does not do: decide what to train on (that is `aha-grpo`), or define rewards
//! (`aha-rewards`).

pub mod engine;
pub mod generate;
pub mod pool;
pub mod remote;
pub mod sampling;
pub mod sharded;
pub mod stop;
pub mod tools;

pub use engine::{Engine, EngineConfig, EngineStats};
pub use generate::{
    generate, generate_all, Backend, Completion, FinishReason, GenerationRequest, GroupOutput, RequestId,
};
pub use pool::{
    checker_fields, PoolConfig, PoolStats, RolloutPool, RolloutPrompt, ScoredCompletion, ScoredGroup, ROLLOUT_FIELDS,
};
pub use remote::nccl::{SyncMethod, WeightsInMemory};
pub use remote::protocol::ServerKind;
pub use remote::{RemoteBackend, RemoteConfig, SyncReport, WeightSync, WeightsOnDisk};
pub use sampling::{sample_token, SampledToken, SamplingParams};
pub use sharded::ShardedEngine;
pub use stop::StopStrings;
pub use tools::{tool_output_mask, CallFormat, PythonToolConfig, ToolCall, ToolExecutor, ToolResult, ToolsConfig};

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("invalid sampling parameters: {0}")]
    Params(String),
    #[error("generation backend: {0}")]
    Backend(String),
    #[error("no usable prompt: all {distinct} are empty or longer than max_prompt_tokens ({limit})")]
    NoUsablePrompt { distinct: usize, limit: usize },
    #[error("reward for prompt `{prompt}`: {message}")]
    Reward { prompt: String, message: String },
    #[error(transparent)]
    Model(#[from] aha_model::ModelError),
}
