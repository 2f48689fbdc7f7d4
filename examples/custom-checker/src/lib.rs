//! Example: a reward checker of your own, in Rust, without forking aha.
//!
//! [`KeywordChecker`] rewards a completion for mentioning the problem's `keywords` (the fraction
//! found, case-insensitively). [`registry`] registers it by name next to aha's built-ins, so a
//! reward config can use it like any other checker:
//!
//! ```
//! use aha_example_custom_checker::registry;
//! use aha_rewards::{Checker, RewardConfig};
//! use serde_json::json;
//!
//! let config: RewardConfig = serde_json::from_value(json!({"checkers": [
//!     {"name": "math", "weight": 1.0},
//!     {"name": "keywords", "weight": 0.5, "options": {"min_chars": 3}},
//! ]}))
//! .unwrap();
//! let combined = registry().build_combined(&config).unwrap();
//! let sample = json!({"answer": "4", "keywords": ["check"]}).as_object().unwrap().clone();
//! let verdict = combined.check("Let me check: 2 + 2 = \\boxed{4}", &sample).unwrap();
//! assert_eq!(verdict.reward_value(), Some(1.5));
//! ```

use aha_rewards::{field, parse_options, CheckError, Checker, ProblemFields, Registry, Verdict};
use serde::Deserialize;
use serde_json::{json, Value};

/// Options of [`KeywordChecker`] (from the config's `options`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeywordOptions {
    /// Keywords shorter than this are ignored (a problem made only of those is skipped).
    pub min_chars: usize,
}

/// Reward = the fraction of the problem's `keywords` the completion mentions.
pub struct KeywordChecker {
    options: KeywordOptions,
}

impl KeywordChecker {
    pub fn new(options: KeywordOptions) -> Self {
        KeywordChecker { options }
    }
}

impl Checker for KeywordChecker {
    fn name(&self) -> &str {
        "keywords"
    }

    fn required_fields(&self) -> Vec<String> {
        vec!["keywords".into()]
    }

    fn check(&self, completion: &str, fields: &ProblemFields) -> Result<Verdict, CheckError> {
        let bad = || CheckError::BadField { field: "keywords".into(), expected: "a list of strings".into() };
        let Value::Array(items) = field(fields, "keywords")? else { return Err(bad()) };
        let mut keywords = Vec::new();
        for item in items {
            let word = item.as_str().ok_or_else(bad)?;
            if word.chars().count() >= self.options.min_chars {
                keywords.push(word.to_lowercase());
            }
        }
        if keywords.is_empty() {
            // The problem cannot be judged: never reward it.
            return Ok(Verdict::skip("no usable keywords", json!({ "min_chars": self.options.min_chars })));
        }
        let text = completion.to_lowercase();
        let found: Vec<&String> = keywords.iter().filter(|k| text.contains(k.as_str())).collect();
        Ok(Verdict::reward(found.len() as f64 / keywords.len() as f64, json!({ "found": found, "keywords": keywords })))
    }
}

/// aha's built-in checkers plus `keywords`.
pub fn registry() -> Registry {
    let mut registry = Registry::with_builtins();
    registry.register("keywords", |options| Ok(Box::new(KeywordChecker::new(parse_options("keywords", options)?))));
    registry
}
