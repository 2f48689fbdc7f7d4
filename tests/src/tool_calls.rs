//! Tool calls on a model that never writes a code block: call delimiters taken from its output.

use aha_model::Tokenizer;
use aha_rollout::{CallFormat, PythonToolConfig};

/// Two tokens of `tokens` as a call format whose call the completion completes at
/// the second: a random model writes no ```` ```python ```` block, so the call delimiters are
/// taken from what it does write.
pub fn call_format_in(tokenizer: &Tokenizer, tokens: &[u32]) -> Option<(CallFormat, usize)> {
    let text = |ids: &[u32]| tokenizer.decode(ids, false).unwrap();
    for open in 0..tokens.len().min(8) {
        for close in open + 2..tokens.len().min(open + 10) {
            let format = CallFormat { open: text(&tokens[open..=open]), close: text(&tokens[close..=close]) };
            if [&format.open, &format.close].iter().any(|s| s.trim().is_empty() || s.contains('\u{FFFD}')) {
                continue;
            }
            let config = PythonToolConfig { calls: vec![format.clone()], ..Default::default() };
            // The close appears nowhere before (the server would stop there first).
            let first_close = (1..=close + 1).find(|&end| text(&tokens[..end]).contains(&format.close));
            if first_close == Some(close + 1) && config.find_call(&text(&tokens[..=close])).is_some() {
                return Some((format, close));
            }
        }
    }
    None
}
