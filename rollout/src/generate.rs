//! What a generation backend takes and gives: requests (a prompt and how many samples), groups of
//! completions, and the [`Backend`] seam between whoever asks for rollouts and whatever produces
//! them.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use aha_model::CausalLM;

use crate::engine::EngineConfig;
use crate::sampling::SamplingParams;
use crate::sharded::ShardedEngine;
use crate::tools::ToolCall;
use crate::RolloutError;

/// Identifies a submitted request within one backend.
pub type RequestId = u64;

/// One prompt and how many completions to draw from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationRequest {
    pub prompt_ids: Vec<u32>,
    pub n: usize,
    /// Completion j draws from ChaCha8(seed) on stream j: the same request gives the same
    /// completions whatever else is in the batch.
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// Produced one of the stop tokens (which ends `token_ids`), or the token that completed a
    /// stop string.
    Stop,
    /// Reached `max_new_tokens`.
    Length,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub token_ids: Vec<u32>,
    /// log_softmax(logits / T) of each sampled token, fp32 (see `sampling`); 0.0 for the tokens
    /// of a tool's result, which were not sampled.
    pub logprobs: Vec<f32>,
    pub finish_reason: FinishReason,
    /// The tool calls the completion made and where their results' tokens are (`tools`); empty
    /// without tools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

impl Completion {
    /// A completion without tool calls.
    pub fn new(token_ids: Vec<u32>, logprobs: Vec<f32>, finish_reason: FinishReason) -> Self {
        Self { token_ids, logprobs, finish_reason, tool_calls: Vec::new() }
    }
}

/// The completions of one request, in sample order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupOutput {
    pub id: RequestId,
    pub completions: Vec<Completion>,
}

/// Something that turns requests into completions: the local [`Engine`](crate::Engine), or vLLM
/// or SGLang servers ([`RemoteBackend`](crate::RemoteBackend)). Hence the
/// plain-data types: token ids in, token ids and fp32 log-probs out, nothing that assumes a local
/// model or a tensor. The sampling parameters belong to the backend (set when it is built). A
/// remote backend ([`RemoteBackend`](crate::RemoteBackend)) also receives the policy's new weights
/// after each optimizer step ([`Backend::weight_sync`]); the local one shares the trainer's
/// tensors and sees every update at once.
pub trait Backend {
    /// Queues a request; its completions come back from [`Backend::poll`].
    fn submit(&mut self, request: GenerationRequest) -> Result<RequestId, RolloutError>;

    /// Works until at least one queued request is complete and returns the complete ones;
    /// returns an empty list only when nothing is queued.
    fn poll(&mut self) -> Result<Vec<GroupOutput>, RolloutError>;

    /// Requests submitted and not yet returned.
    fn in_flight(&self) -> usize;

    /// How to hand this backend the policy's new weights, for one that serves its own copy (a
    /// remote server); `None` for one that shares the trainer's tensors.
    fn weight_sync(&mut self) -> Option<&mut dyn crate::remote::WeightSync> {
        None
    }
}

impl<B: Backend + ?Sized> Backend for Box<B> {
    fn submit(&mut self, request: GenerationRequest) -> Result<RequestId, RolloutError> {
        (**self).submit(request)
    }

    fn poll(&mut self) -> Result<Vec<GroupOutput>, RolloutError> {
        (**self).poll()
    }

    fn in_flight(&self) -> usize {
        (**self).in_flight()
    }

    fn weight_sync(&mut self) -> Option<&mut dyn crate::remote::WeightSync> {
        (**self).weight_sync()
    }
}

/// Generates `request.n` completions for every request; the result follows the requests' order.
/// A convenience over [`ShardedEngine`] with the default limits.
pub fn generate(
    model: &CausalLM,
    requests: &[GenerationRequest],
    params: &SamplingParams,
) -> Result<Vec<Vec<Completion>>, RolloutError> {
    let mut engine = ShardedEngine::new(model, params.clone(), EngineConfig::default())?;
    generate_all(&mut engine, requests)
}

/// Runs `requests` to completion on any backend; the result follows the requests' order.
pub fn generate_all(
    backend: &mut dyn Backend,
    requests: &[GenerationRequest],
) -> Result<Vec<Vec<Completion>>, RolloutError> {
    let ids = requests.iter().map(|r| backend.submit(r.clone())).collect::<Result<Vec<_>, _>>()?;
    let mut done: HashMap<RequestId, Vec<Completion>> = HashMap::new();
    while done.len() < ids.len() {
        let finished = backend.poll()?;
        if finished.is_empty() {
            return Err(RolloutError::Backend("the backend stopped before every request finished".into()));
        }
        done.extend(finished.into_iter().map(|g| (g.id, g.completions)));
    }
    Ok(ids.iter().map(|id| done.remove(id).expect("every request finished")).collect())
}
