//! The two server APIs aha speaks, as plain request bodies and response parsers (no I/O here):
//!
//! - vLLM's OpenAI-compatible `POST /v1/completions`, with the prompt as token ids (no
//!   re-tokenisation), `n` completions from one `seed`, `logprobs: 0` (the sampled token's
//!   log-prob) and `return_token_ids: true` (each choice's completion token ids).
//! - SGLang's native `POST /generate`, with `input_ids` repeated `n` times as a batch, one
//!   `sampling_seed` per completion, and `return_logprob` (`meta_info.output_token_logprobs`).
//!
//! Both return the completion's ids, one log-prob per id and why it ended; anything else (a
//! wrong number of choices, ids and log-probs of different lengths, a missing field) is a
//! [`ProtocolError`], and the group is sent again elsewhere.

use serde_json::{json, Value};

use crate::{Completion, FinishReason, SamplingParams};

/// Which API the servers speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    Vllm,
    Sglang,
}

impl ServerKind {
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Vllm => "vllm",
            ServerKind::Sglang => "sglang",
        }
    }

    /// The path generation requests go to.
    pub fn generate_path(self) -> &'static str {
        match self {
            ServerKind::Vllm => "/v1/completions",
            ServerKind::Sglang => "/generate",
        }
    }
}

/// A response that does not say what aha asked for.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ProtocolError(pub String);

fn bad<T>(message: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(message.into()))
}

/// One generation request: `n` completions of `prompt_ids`, seeded.
#[derive(Debug, Clone, Copy)]
pub struct Generation<'a> {
    pub prompt_ids: &'a [u32],
    pub n: usize,
    pub seed: u64,
    pub params: &'a SamplingParams,
    /// The most tokens to generate (the params' `max_new_tokens`, less what a completion that
    /// goes on after a tool call already has).
    pub max_tokens: usize,
    /// Stop strings (the servers end a completion after the token that completes one).
    pub stop_strings: &'a [String],
}

/// The JSON body of `request` for a server of `kind`; `model` is the served model's name
/// (vLLM's `model` field).
pub fn request_body(kind: ServerKind, model: &str, request: &Generation) -> Value {
    let p = request.params;
    match kind {
        ServerKind::Vllm => {
            let mut body = json!({
                "model": model,
                "prompt": request.prompt_ids,
                "n": request.n,
                "seed": request.seed,
                "temperature": p.temperature,
                "top_p": p.top_p,
                // vLLM: -1 (or 0) keeps every token; aha: 0.
                "top_k": if p.top_k == 0 { -1 } else { p.top_k as i64 },
                "min_p": p.min_p,
                "max_tokens": request.max_tokens,
                // aha's stop ids (the policy's eos ids) and nothing else: vLLM would otherwise also
                // stop at its tokenizer's eos, which a checkpoint may have switched off.
                "stop_token_ids": p.stop_token_ids,
                "ignore_eos": true,
                "logprobs": 0,
                "return_token_ids": true,
                "skip_special_tokens": false,
                "spaces_between_special_tokens": false,
            });
            if !request.stop_strings.is_empty() {
                body["stop"] = json!(request.stop_strings);
                body["include_stop_str_in_output"] = json!(true);
            }
            body
        }
        ServerKind::Sglang => {
            let sampling: Vec<Value> = (0..request.n as u64)
                .map(|j| {
                    let mut s = json!({
                        "temperature": p.temperature,
                        "top_p": p.top_p,
                        "top_k": if p.top_k == 0 { -1 } else { p.top_k as i64 },
                        "min_p": p.min_p,
                        "max_new_tokens": request.max_tokens,
                        "stop_token_ids": p.stop_token_ids,
                        "ignore_eos": true,
                        "skip_special_tokens": false,
                        "sampling_seed": request.seed.wrapping_add(j),
                    });
                    if !request.stop_strings.is_empty() {
                        s["stop"] = json!(request.stop_strings);
                        s["no_stop_trim"] = json!(true);
                    }
                    s
                })
                .collect();
            json!({
                "input_ids": vec![request.prompt_ids; request.n],
                "sampling_params": sampling,
                "return_logprob": true,
                "stream": false,
            })
        }
    }
}

/// The `n` completions in `response`, in sample order.
pub fn parse_response(kind: ServerKind, response: &Value, n: usize) -> Result<Vec<Completion>, ProtocolError> {
    let completions = match kind {
        ServerKind::Vllm => parse_vllm(response)?,
        ServerKind::Sglang => parse_sglang(response)?,
    };
    if completions.len() != n {
        return bad(format!("asked for {n} completions, got {}", completions.len()));
    }
    Ok(completions)
}

fn token_ids(value: &Value, what: &str) -> Result<Vec<u32>, ProtocolError> {
    let Some(items) = value.as_array() else { return bad(format!("{what} is not a list")) };
    items
        .iter()
        .map(|v| v.as_u64().and_then(|id| u32::try_from(id).ok()))
        .collect::<Option<Vec<_>>>()
        .map_or_else(|| bad(format!("{what} holds something other than token ids")), Ok)
}

fn logprob(value: &Value, what: &str) -> Result<f32, ProtocolError> {
    match value.as_f64() {
        Some(x) => Ok(x as f32),
        // A token the server could not score (JSON has no -inf: vLLM writes null or a string).
        None if value.is_null() || value.is_string() => Ok(f32::NEG_INFINITY),
        None => bad(format!("{what} is not a number")),
    }
}

fn finish_reason(reason: Option<&str>) -> Result<FinishReason, ProtocolError> {
    match reason {
        Some("stop") => Ok(FinishReason::Stop),
        Some("length") => Ok(FinishReason::Length),
        other => bad(format!("finish reason {other:?} (the request was aborted or failed)")),
    }
}

fn checked(token_ids: Vec<u32>, logprobs: Vec<f32>, finish_reason: FinishReason) -> Result<Completion, ProtocolError> {
    if token_ids.len() != logprobs.len() {
        return bad(format!("{} completion tokens but {} log-probs", token_ids.len(), logprobs.len()));
    }
    Ok(Completion::new(token_ids, logprobs, finish_reason))
}

fn parse_vllm(response: &Value) -> Result<Vec<Completion>, ProtocolError> {
    if let Some(error) = response.get("error").filter(|e| !e.is_null()) {
        return bad(format!("server error: {}", error.get("message").unwrap_or(error)));
    }
    let Some(choices) = response.get("choices").and_then(Value::as_array) else {
        return bad("no `choices` in the response");
    };
    let mut indexed = Vec::with_capacity(choices.len());
    for (position, choice) in choices.iter().enumerate() {
        let index = choice.get("index").and_then(Value::as_u64).unwrap_or(position as u64);
        let ids = token_ids(choice.get("token_ids").unwrap_or(&Value::Null), "choices[].token_ids")
            .map_err(|e| ProtocolError(format!("{e} (does the server support return_token_ids?)")))?;
        let Some(values) = choice.pointer("/logprobs/token_logprobs").and_then(Value::as_array) else {
            return bad("no choices[].logprobs.token_logprobs in the response");
        };
        let logprobs =
            values.iter().map(|v| logprob(v, "choices[].logprobs.token_logprobs[]")).collect::<Result<Vec<_>, _>>()?;
        let reason = finish_reason(choice.get("finish_reason").and_then(Value::as_str))?;
        indexed.push((index, checked(ids, logprobs, reason)?));
    }
    indexed.sort_by_key(|(index, _)| *index);
    if indexed.iter().enumerate().any(|(i, (index, _))| *index != i as u64) {
        return bad("the choices' indices are not 0..n");
    }
    Ok(indexed.into_iter().map(|(_, c)| c).collect())
}

fn parse_sglang(response: &Value) -> Result<Vec<Completion>, ProtocolError> {
    if let Some(error) = response.get("error").filter(|e| !e.is_null()) {
        return bad(format!("server error: {}", error.get("message").unwrap_or(error)));
    }
    let Some(items) = response.as_array() else { return bad("the response is not a list (one item per input)") };
    items
        .iter()
        .map(|item| {
            let ids = token_ids(item.get("output_ids").unwrap_or(&Value::Null), "output_ids")?;
            let Some(entries) = item.pointer("/meta_info/output_token_logprobs").and_then(Value::as_array) else {
                return bad("no meta_info.output_token_logprobs in the response");
            };
            // Each entry is [logprob, token_id, token_text].
            let mut logprobs = Vec::with_capacity(entries.len());
            for (entry, &id) in entries.iter().zip(&ids) {
                let lp = logprob(entry.get(0).unwrap_or(&Value::Null), "output_token_logprobs[][0]")?;
                if entry.get(1).and_then(Value::as_u64) != Some(u64::from(id)) {
                    return bad("output_token_logprobs names other tokens than output_ids");
                }
                logprobs.push(lp);
            }
            if entries.len() != ids.len() {
                return bad(format!("{} output_ids but {} output_token_logprobs", ids.len(), entries.len()));
            }
            let reason = finish_reason(item.pointer("/meta_info/finish_reason/type").and_then(Value::as_str))?;
            checked(ids, logprobs, reason)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> SamplingParams {
        SamplingParams {
            temperature: 0.7,
            top_p: 0.9,
            top_k: 0,
            min_p: 0.0,
            max_new_tokens: 16,
            stop_token_ids: vec![2],
        }
    }

    #[test]
    fn vllm_request_asks_for_ids_and_logprobs() {
        let p = params();
        let body = request_body(
            ServerKind::Vllm,
            "m",
            &Generation { prompt_ids: &[5, 6], n: 3, seed: 9, params: &p, max_tokens: 16, stop_strings: &[] },
        );
        assert_eq!(body["prompt"], json!([5, 6]));
        assert_eq!(body["n"], 3);
        assert_eq!(body["seed"], 9);
        assert_eq!(body["top_k"], -1);
        assert_eq!(body["max_tokens"], 16);
        assert_eq!(body["logprobs"], 0);
        assert_eq!(body["return_token_ids"], true);
        assert_eq!(body["stop_token_ids"], json!([2]));
        assert!(body.get("stop").is_none());
    }

    #[test]
    fn sglang_request_repeats_the_prompt_with_one_seed_each() {
        let p = params();
        let stops = vec!["</answer>".to_string()];
        let body = request_body(
            ServerKind::Sglang,
            "m",
            &Generation { prompt_ids: &[5, 6], n: 2, seed: 9, params: &p, max_tokens: 16, stop_strings: &stops },
        );
        assert_eq!(body["input_ids"], json!([[5, 6], [5, 6]]));
        assert_eq!(body["sampling_params"][0]["sampling_seed"], 9);
        assert_eq!(body["sampling_params"][1]["sampling_seed"], 10);
        assert_eq!(body["sampling_params"][1]["stop"], json!(["</answer>"]));
        assert_eq!(body["return_logprob"], true);
    }

    #[test]
    fn vllm_choices_come_back_in_index_order() {
        let response = json!({"choices": [
            {"index": 1, "token_ids": [7], "logprobs": {"token_logprobs": [-0.5]}, "finish_reason": "length"},
            {"index": 0, "token_ids": [8, 2], "logprobs": {"token_logprobs": [-0.1, -0.2]}, "finish_reason": "stop"},
        ]});
        let out = parse_response(ServerKind::Vllm, &response, 2).unwrap();
        assert_eq!(out[0].token_ids, vec![8, 2]);
        assert_eq!(out[0].finish_reason, FinishReason::Stop);
        assert_eq!(out[1].logprobs, vec![-0.5]);
    }

    #[test]
    fn malformed_responses_are_errors() {
        let vllm = |v: Value, n| parse_response(ServerKind::Vllm, &v, n).unwrap_err().0;
        assert!(vllm(json!({"choices": []}), 1).contains("asked for 1"));
        assert!(vllm(json!({"object": "x"}), 1).contains("choices"));
        assert!(vllm(json!({"error": {"message": "boom"}}), 1).contains("boom"));
        let mismatch = json!({"choices": [{"index": 0, "token_ids": [1, 2], "logprobs": {"token_logprobs": [-1.0]},
            "finish_reason": "stop"}]});
        assert!(vllm(mismatch, 1).contains("2 completion tokens but 1"));
        let aborted = json!({"choices": [{"index": 0, "token_ids": [], "logprobs": {"token_logprobs": []},
            "finish_reason": "abort"}]});
        assert!(vllm(aborted, 1).contains("abort"));
        let sglang = |v: Value| parse_response(ServerKind::Sglang, &v, 1).unwrap_err().0;
        assert!(sglang(json!({"text": "x"})).contains("not a list"));
        let wrong_ids = json!([{"output_ids": [3], "meta_info": {"output_token_logprobs": [[-1.0, 4, null]],
            "finish_reason": {"type": "stop"}}}]);
        assert!(sglang(wrong_ids).contains("other tokens"));
    }

    #[test]
    fn sglang_items_parse() {
        let response = json!([{"text": "", "output_ids": [3, 2], "meta_info": {
            "output_token_logprobs": [[-1.5, 3, null], [-0.25, 2, null]],
            "finish_reason": {"type": "stop", "matched": 2}}}]);
        let out = parse_response(ServerKind::Sglang, &response, 1).unwrap();
        assert_eq!(out[0].token_ids, vec![3, 2]);
        assert_eq!(out[0].logprobs, vec![-1.5, -0.25]);
    }
}
