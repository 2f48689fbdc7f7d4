//! Tool calls on servers: the servers only generate; aha finds the calls, runs them in its own
//! sandbox and has the completion go on.
//!
//! Each request also stops at the close of every call format (a stop string, kept in the
//! output). Where a completion stopped, aha looks with the engine's rules
//! ([`PythonToolConfig::completed_call`], [`StopStrings`]) at what ended it: a stop token or one of
//! the run's stop strings ends the completion; a call runs on the [`ToolExecutor`]'s workers and
//! its result's tokens ([`PythonToolConfig::result_tokens`]) are appended as context (log-prob 0,
//! recorded in `tool_calls`); a close that closed no call (the ```` ``` ```` that opens a fenced
//! block ends in the same characters as the one that closes it) ends nothing. In the last two
//! cases the completion goes on in a new request of one completion: the prompt followed by the
//! completion so far, with what is left of `max_new_tokens` (the servers' prefix caches keep the
//! repeated prefix cheap). Every such request goes through the same retries as a group's first.
//!
//! The tokens after a call are not the ones aha's engine would draw (its sequence keeps one
//! random stream across the call; a server starts a new one), but they are as reproducible: the
//! seed of each request that goes on is a function of the group's seed, the completion's index and
//! how many requests the completion has made.

use std::sync::Arc;
use std::time::Instant;

use aha_model::Tokenizer;

use super::{Generation, Shared};
use crate::{Completion, FinishReason, GenerationRequest, RolloutError, StopStrings, ToolCall, ToolExecutor};

/// The remote backend's side of the tools.
pub(super) struct RemoteTools {
    tokenizer: Tokenizer,
    executor: Arc<ToolExecutor>,
}

/// What a completion that a server returned needs next.
#[derive(Debug, PartialEq)]
enum Next {
    Done,
    Call(String),
    GoOn,
}

impl RemoteTools {
    pub(super) fn new(tokenizer: Tokenizer, executor: Arc<ToolExecutor>) -> Self {
        Self { tokenizer, executor }
    }

    /// The stop strings of a request whose completion may still call: the run's, then every call
    /// format's close.
    pub(super) fn stop_strings(&self, run: &[String]) -> Vec<String> {
        let mut strings = run.to_vec();
        for format in &self.executor.config().calls {
            if !strings.contains(&format.close) {
                strings.push(format.close.clone());
            }
        }
        strings
    }

    /// What ended `completion`, whose tokens from `scan_from` on came after its last result.
    fn next(
        &self,
        completion: &Completion,
        scan_from: usize,
        stop_token_ids: &[u32],
        stop_strings: &[String],
    ) -> Result<Next, RolloutError> {
        let tokens = &completion.token_ids;
        let Some(last) = tokens.last() else { return Ok(Next::Done) };
        if completion.finish_reason == FinishReason::Length
            || stop_token_ids.contains(last)
            || StopStrings::new(&self.tokenizer, stop_strings.to_vec())?.completed_by_last(tokens)?
        {
            return Ok(Next::Done);
        }
        let config = self.executor.config();
        if completion.tool_calls.len() < config.max_calls {
            if let Some(code) = config.completed_call(&self.tokenizer, &tokens[scan_from..])? {
                return Ok(Next::Call(code));
            }
        }
        Ok(Next::GoOn)
    }
}

/// The seed of the `request`-th request of completion `choice` of a group seeded `seed` (the
/// first request is the group's own). SplitMix64 of the three, kept below 2^63: vLLM takes a
/// signed 64-bit seed.
pub fn go_on_seed(seed: u64, choice: u64, request: u64) -> u64 {
    let mut z = seed ^ choice.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ request.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) >> 1
}

impl Shared {
    /// Runs the calls of completion `choice` of `request` and has it go on after each, until it
    /// ends (see the module documentation).
    pub(super) async fn go_on_after_calls(
        self: &Arc<Self>,
        request: &GenerationRequest,
        choice: u64,
        mut completion: Completion,
    ) -> Result<Completion, RolloutError> {
        let tools = self.tools.as_ref().expect("called with tools only");
        let config = tools.executor.config();
        let max_tokens = self.params.max_new_tokens;
        let mut scan_from = 0;
        let mut requests = 1;
        loop {
            let next = tools.next(&completion, scan_from, &self.params.stop_token_ids, &self.config.stop_strings)?;
            if next != Next::Done && completion.token_ids.len() >= max_tokens {
                // No room left: it ends as the engine's would, by length.
                completion.finish_reason = FinishReason::Length;
                return Ok(completion);
            }
            match next {
                Next::Done => return Ok(completion),
                Next::GoOn => {}
                Next::Call(code) => {
                    let start = Instant::now();
                    let executor = Arc::clone(&tools.executor);
                    let run = code.clone();
                    let result = tokio::task::spawn_blocking(move || executor.run(&run))
                        .await
                        .map_err(|e| RolloutError::Backend(format!("a tool call's task failed: {e}")))?;
                    let (mut tokens, output, truncated) = config.result_tokens(&tools.tokenizer, &result.text)?;
                    tokens.truncate(max_tokens.saturating_sub(completion.token_ids.len()));
                    completion.tool_calls.push(ToolCall {
                        code,
                        status: result.status.as_str().to_string(),
                        output,
                        seconds: start.elapsed().as_secs_f64(),
                        output_start: completion.token_ids.len(),
                        output_tokens: tokens.len(),
                        truncated,
                    });
                    completion.logprobs.extend(std::iter::repeat_n(0.0, tokens.len()));
                    completion.token_ids.extend(tokens);
                    scan_from = completion.token_ids.len();
                    if completion.token_ids.len() >= max_tokens {
                        completion.finish_reason = FinishReason::Length;
                        return Ok(completion);
                    }
                }
            }
            let prompt: Vec<u32> = request.prompt_ids.iter().chain(&completion.token_ids).copied().collect();
            let stop_strings = if completion.tool_calls.len() < config.max_calls {
                tools.stop_strings(&self.config.stop_strings)
            } else {
                self.config.stop_strings.clone()
            };
            let generation = Generation {
                prompt_ids: &prompt,
                n: 1,
                seed: go_on_seed(request.seed, choice, requests),
                params: &self.params,
                max_tokens: max_tokens - completion.token_ids.len(),
                stop_strings: &stop_strings,
            };
            let piece = self.send(&generation).await?.remove(0);
            requests += 1;
            completion.token_ids.extend(piece.token_ids);
            completion.logprobs.extend(piece.logprobs);
            completion.finish_reason = piece.finish_reason;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_on_seeds_differ_and_fit_a_signed_seed() {
        let mut seen = std::collections::HashSet::new();
        for seed in [0, 1, u64::MAX] {
            for choice in 0..4 {
                for request in 1..4 {
                    let s = go_on_seed(seed, choice, request);
                    assert!(s < 1 << 63);
                    assert!(seen.insert(s), "seed {seed} choice {choice} request {request} repeats");
                }
            }
        }
        assert_eq!(go_on_seed(7, 1, 2), go_on_seed(7, 1, 2));
    }
}
