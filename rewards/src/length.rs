//! The `length` checker: DAPO's soft overlong penalty.
//!
//! With `L_max = max_tokens`, `L_cache = cache_tokens` and `len` the completion's length in
//! tokens (the problem field `completion_tokens` by default — the rollout knows it, text does not):
//!
//! ```text
//! reward = 0                                   if len <= L_max - L_cache
//!        = ((L_max - L_cache) - len) / L_cache if L_max - L_cache < len <= L_max
//!        = -1                                  if len > L_max
//! ```
//! Range [-1, 0]: add it to a correctness reward with weight 1, as DAPO does.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::checker::{field, CheckError, Checker, ProblemFields, Verdict};
use crate::registry::ConfigError;

/// Options of the `length` checker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LengthOptions {
    /// `L_max`: the length limit, in tokens.
    pub max_tokens: u64,
    /// `L_cache`: the ramp's width, in tokens (0 < cache_tokens <= max_tokens).
    pub cache_tokens: u64,
    /// The problem field holding the completion's length in tokens.
    pub tokens_field: String,
}

impl Default for LengthOptions {
    fn default() -> Self {
        // DAPO: 16,384 tokens expected, 4,096 more as the soft punishment cache (L_max = 20,480).
        LengthOptions { max_tokens: 20_480, cache_tokens: 4_096, tokens_field: "completion_tokens".into() }
    }
}

/// DAPO's soft overlong penalty, in [-1, 0].
#[derive(Debug, Clone)]
pub struct LengthChecker {
    options: LengthOptions,
}

impl LengthChecker {
    pub fn new(options: LengthOptions) -> Result<Self, ConfigError> {
        if options.cache_tokens == 0 || options.cache_tokens > options.max_tokens {
            return Err(ConfigError::options("length", "need 0 < cache_tokens <= max_tokens"));
        }
        Ok(LengthChecker { options })
    }

    /// The penalty for a completion of `len` tokens.
    pub fn penalty(&self, len: u64) -> f64 {
        soft_overlong_penalty(len, self.options.max_tokens, self.options.cache_tokens)
    }
}

/// DAPO's soft overlong penalty (arXiv:2503.14476, eq. 13), in [-1, 0]: 0 up to
/// `max_tokens - cache_tokens` tokens, then a linear ramp down to -1 at `max_tokens`, and -1
/// beyond (with `cache_tokens = 0`, a step from 0 to -1 past `max_tokens`). The `length` checker
/// scores it; GRPO's `overlong_penalty` setting adds it to the reward before the advantages.
pub fn soft_overlong_penalty(completion_tokens: u64, max_tokens: u64, cache_tokens: u64) -> f64 {
    let free = max_tokens.saturating_sub(cache_tokens);
    if completion_tokens <= free {
        0.0
    } else if completion_tokens <= max_tokens && cache_tokens > 0 {
        (free as f64 - completion_tokens as f64) / cache_tokens as f64
    } else {
        -1.0
    }
}

#[cfg(test)]
mod tests {
    use super::soft_overlong_penalty;

    #[test]
    fn soft_overlong_penalty_ramp() {
        // max 100, cache 20: free up to 80, -0.5 at 90, -1 at 100 and beyond.
        assert_eq!(soft_overlong_penalty(80, 100, 20), 0.0);
        assert_eq!(soft_overlong_penalty(90, 100, 20), -0.5);
        assert_eq!(soft_overlong_penalty(100, 100, 20), -1.0);
        assert_eq!(soft_overlong_penalty(130, 100, 20), -1.0);
        assert_eq!(soft_overlong_penalty(100, 100, 0), 0.0);
        assert_eq!(soft_overlong_penalty(101, 100, 0), -1.0);
    }
}

impl Checker for LengthChecker {
    fn name(&self) -> &str {
        "length"
    }

    fn required_fields(&self) -> Vec<String> {
        vec![self.options.tokens_field.clone()]
    }

    fn check(&self, _completion: &str, fields: &ProblemFields) -> Result<Verdict, CheckError> {
        let name = &self.options.tokens_field;
        let len = match field(fields, name)? {
            Value::Number(n) => n.as_u64(),
            _ => None,
        }
        .ok_or_else(|| CheckError::BadField { field: name.clone(), expected: "a non-negative integer".into() })?;
        Ok(Verdict::reward(
            self.penalty(len),
            json!({ "tokens": len, "max_tokens": self.options.max_tokens, "cache_tokens": self.options.cache_tokens }),
        ))
    }
}
