//! Format checkers: `format` (the R1 template, all or nothing) and `format_tags` (partial credit
//! per tag).

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::checker::{CheckError, Checker, ProblemFields, Verdict};
use crate::registry::ConfigError;

/// The R1-Zero template: optional leading space, `<think>…</think>`, then `<answer>…</answer>`
/// and nothing after it.
pub const R1_PATTERN: &str = r"(?s)^\s*<think>.*?</think>\s*<answer>.*?</answer>\s*$";

/// Options of the `format` checker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FormatOptions {
    /// A regex (Rust `regex` syntax: no backtracking, linear time) the whole completion must
    /// match. Anchor it yourself (`^…$`); `(?s)` makes `.` match newlines.
    pub pattern: String,
}

impl Default for FormatOptions {
    fn default() -> Self {
        FormatOptions { pattern: R1_PATTERN.into() }
    }
}

/// `format`: 1.0 when the completion matches the pattern (default [`R1_PATTERN`]), else 0.0.
#[derive(Debug, Clone)]
pub struct FormatChecker {
    pattern: Regex,
}

impl FormatChecker {
    pub fn new(options: FormatOptions) -> Result<Self, ConfigError> {
        let pattern = Regex::new(&options.pattern).map_err(|e| ConfigError::options("format", e))?;
        Ok(FormatChecker { pattern })
    }
}

impl Default for FormatChecker {
    fn default() -> Self {
        Self::new(FormatOptions::default()).expect("the R1 pattern compiles")
    }
}

impl Checker for FormatChecker {
    fn name(&self) -> &str {
        "format"
    }

    fn check(&self, completion: &str, _fields: &ProblemFields) -> Result<Verdict, CheckError> {
        let matched = self.pattern.is_match(completion);
        Ok(Verdict::reward(if matched { 1.0 } else { 0.0 }, json!({ "matched": matched })))
    }
}

/// Options of the `format_tags` checker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TagCountOptions {
    /// Each tag that occurs exactly once earns `1 / tags.len()`.
    pub tags: Vec<String>,
}

impl Default for TagCountOptions {
    fn default() -> Self {
        TagCountOptions { tags: ["<think>", "</think>", "<answer>", "</answer>"].map(String::from).to_vec() }
    }
}

/// `format_tags`: partial credit in [0, 1], `1/n` for each of the n tags that occurs exactly once.
#[derive(Debug, Clone, Default)]
pub struct TagCountChecker {
    options: TagCountOptions,
}

impl TagCountChecker {
    pub fn new(options: TagCountOptions) -> Self {
        TagCountChecker { options }
    }
}

impl Checker for TagCountChecker {
    fn name(&self) -> &str {
        "format_tags"
    }

    fn check(&self, completion: &str, _fields: &ProblemFields) -> Result<Verdict, CheckError> {
        let tags = &self.options.tags;
        if tags.is_empty() {
            return Ok(Verdict::reward(0.0, json!({ "counts": {} })));
        }
        let mut counts = serde_json::Map::new();
        let mut good = 0usize;
        for tag in tags {
            let n = if tag.is_empty() { 0 } else { completion.matches(tag.as_str()).count() };
            if n == 1 {
                good += 1;
            }
            counts.insert(tag.clone(), json!(n));
        }
        Ok(Verdict::reward(good as f64 / tags.len() as f64, json!({ "counts": counts })))
    }
}
