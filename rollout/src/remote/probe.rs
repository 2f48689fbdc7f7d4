//! The weight check: a fixed token sequence scored by teacher forcing on a server (vLLM's
//! `prompt_logprobs`, SGLang's `input_token_logprobs`), to compare with the trainer's own
//! log-probs of the same tokens on the weights the server should have loaded. Raw logits
//! (temperature 1) on both sides: the check is about the weights, not the sampler.

use serde_json::{json, Value};

use super::protocol::{ProtocolError, ServerKind};

/// The probe's request body: score `token_ids` (no completion is wanted: one token is drawn
/// greedily and ignored).
pub fn probe_body(kind: ServerKind, model: &str, token_ids: &[u32]) -> Value {
    match kind {
        ServerKind::Vllm => json!({
            "model": model,
            "prompt": token_ids,
            "max_tokens": 1,
            "temperature": 0.0,
            "prompt_logprobs": 0,
        }),
        ServerKind::Sglang => json!({
            "input_ids": token_ids,
            "sampling_params": {"max_new_tokens": 1, "temperature": 0.0},
            "return_logprob": true,
            "logprob_start_len": 0,
            "stream": false,
        }),
    }
}

/// `log p(token_ids[i] | token_ids[..i])` for i = 1.. (one fewer than tokens), from the probe's
/// response.
pub fn parse_probe(kind: ServerKind, response: &Value, token_ids: &[u32]) -> Result<Vec<f32>, ProtocolError> {
    let fail = |m: &str| Err(ProtocolError(format!("probe: {m}")));
    let mut values = Vec::with_capacity(token_ids.len().saturating_sub(1));
    match kind {
        ServerKind::Vllm => {
            let Some(entries) = response.pointer("/choices/0/prompt_logprobs").and_then(Value::as_array) else {
                return fail("no choices[0].prompt_logprobs in the response");
            };
            if entries.len() != token_ids.len() {
                return fail(&format!("{} prompt log-probs for {} tokens", entries.len(), token_ids.len()));
            }
            // Entry i maps token id (as a string) to {"logprob": .., "rank": ..}; entry 0 is null.
            for (entry, id) in entries.iter().zip(token_ids).skip(1) {
                match entry.get(id.to_string()).and_then(|e| e.get("logprob")).and_then(Value::as_f64) {
                    Some(lp) => values.push(lp as f32),
                    None => return fail(&format!("no log-prob for token {id}")),
                }
            }
        }
        ServerKind::Sglang => {
            let item = response.as_array().and_then(|a| a.first()).unwrap_or(response);
            let Some(entries) = item.pointer("/meta_info/input_token_logprobs").and_then(Value::as_array) else {
                return fail("no meta_info.input_token_logprobs in the response");
            };
            if entries.len() != token_ids.len() {
                return fail(&format!("{} input log-probs for {} tokens", entries.len(), token_ids.len()));
            }
            // Each entry is [logprob, token_id, text]; the first one's log-prob is null.
            for (entry, &id) in entries.iter().zip(token_ids).skip(1) {
                if entry.get(1).and_then(Value::as_u64) != Some(u64::from(id)) {
                    return fail("input_token_logprobs names other tokens than the probe's");
                }
                match entry.get(0).and_then(Value::as_f64) {
                    Some(lp) => values.push(lp as f32),
                    None => return fail(&format!("no log-prob for token {id}")),
                }
            }
        }
    }
    Ok(values)
}

/// The largest |a - b|; infinite when the lengths differ or a value is not finite.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from((x - y).abs()))
        .fold(0.0, |m, d| if d.is_nan() { f64::INFINITY } else { m.max(d) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vllm_prompt_logprobs_parse() {
        let response = json!({"choices": [{"prompt_logprobs": [null,
            {"7": {"logprob": -1.25, "rank": 3}, "9": {"logprob": -0.5, "rank": 1}},
            {"8": {"logprob": -2.0, "rank": 4}}]}]});
        assert_eq!(parse_probe(ServerKind::Vllm, &response, &[5, 7, 8]).unwrap(), vec![-1.25, -2.0]);
        assert!(parse_probe(ServerKind::Vllm, &response, &[5, 7]).is_err());
        assert!(parse_probe(ServerKind::Vllm, &response, &[5, 6, 8]).unwrap_err().0.contains("token 6"));
    }

    #[test]
    fn sglang_input_logprobs_parse() {
        let response = json!({"meta_info": {"input_token_logprobs": [[null, 5, null], [-1.5, 7, null]]}});
        assert_eq!(parse_probe(ServerKind::Sglang, &response, &[5, 7]).unwrap(), vec![-1.5]);
        assert!(parse_probe(ServerKind::Sglang, &response, &[5, 8]).is_err());
    }

    #[test]
    fn differences() {
        assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.5, 1.0]), 1.0);
        assert_eq!(max_abs_diff(&[1.0], &[1.0, 2.0]), f64::INFINITY);
        assert_eq!(max_abs_diff(&[f32::NAN], &[1.0]), f64::INFINITY);
    }
}
