//! Stop strings: end a completion as soon as its text contains one of them (`</answer>`, say).
//!
//! Tokens do not line up with strings (one token may hold the end of `</answer>` and a newline),
//! so the check decodes the last few tokens with and without the newest one: the newest token
//! completed a stop string when the string occurs in the first text and not in the second. Only a
//! window of tokens is decoded, long enough to hold the longest stop string (every token decodes to
//! at least one byte), so the check costs the same at token 10 and token 10,000. The completion
//! keeps the token that completed the string, like transformers' `StopStringCriteria` and vLLM's
//! `include_stop_str_in_output`: the reward checker sees the closing tag it asked for.

use aha_model::Tokenizer;

use crate::RolloutError;

pub struct StopStrings<'t> {
    tokenizer: &'t Tokenizer,
    strings: Vec<String>,
    /// Tokens decoded per check: the longest string's bytes plus one token of context.
    window: usize,
}

impl<'t> StopStrings<'t> {
    pub fn new(tokenizer: &'t Tokenizer, strings: Vec<String>) -> Result<Self, RolloutError> {
        if strings.iter().any(String::is_empty) {
            return Err(RolloutError::Params("a stop string cannot be empty".into()));
        }
        let window = strings.iter().map(String::len).max().unwrap_or(0) + 1;
        Ok(Self { tokenizer, strings, window })
    }

    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }

    /// True when the last token of `tokens` completed one of the stop strings.
    pub fn completed_by_last(&self, tokens: &[u32]) -> Result<bool, RolloutError> {
        let Some((_, before)) = tokens.split_last() else { return Ok(false) };
        if self.strings.is_empty() {
            return Ok(false);
        }
        let start = tokens.len().saturating_sub(self.window);
        let with_last = self.tokenizer.decode(&tokens[start..], false)?;
        let without_last = self.tokenizer.decode(&before[start.min(before.len())..], false)?;
        Ok(self.strings.iter().any(|s| with_last.contains(s.as_str()) && !without_last.contains(s.as_str())))
    }
}
