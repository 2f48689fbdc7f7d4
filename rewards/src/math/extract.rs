//! Finding the answer in a completion: the last `<answer>…</answer>`, the last `\boxed{}` /
//! `\fbox{}` (brace-matched), "the final answer is …", the last number. Every search is linear
//! in the completion's length.

use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// Where an answer may come from, in the order they are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The content of the last `<answer>…</answer>` (a `\boxed{}` inside it wins).
    AnswerTag,
    /// The last `\boxed{…}` or `\fbox{…}`.
    Boxed,
    /// The text after the last "answer is" / "answer:" up to the end of its line.
    FinalAnswer,
    /// The last number (integer, decimal or `a/b`).
    LastNumber,
}

/// What was extracted and from where.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Extracted {
    pub source: Source,
    pub text: String,
}

/// Candidates longer than this are cut (they cannot parse anyway; see the lexer's bound).
const MAX_CANDIDATE: usize = 4096;

fn clip(s: &str) -> String {
    if s.len() <= MAX_CANDIDATE {
        return s.trim().to_string();
    }
    let mut end = MAX_CANDIDATE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].trim().to_string()
}

/// One candidate per source that finds something, in `sources` order.
pub fn candidates(completion: &str, sources: &[Source]) -> Vec<Extracted> {
    let mut out = Vec::new();
    for &source in sources {
        let found = match source {
            Source::AnswerTag => answer_tag(completion).map(|inner| last_boxed(inner).unwrap_or(inner)),
            Source::Boxed => last_boxed(completion),
            Source::FinalAnswer => final_answer(completion),
            Source::LastNumber => last_number(completion),
        };
        if let Some(text) = found {
            let text = clip(text);
            if !text.is_empty() {
                out.push(Extracted { source, text });
            }
        }
    }
    out
}

/// The content of the last `<answer>` … `</answer>` (to the end if unclosed).
pub fn answer_tag(text: &str) -> Option<&str> {
    let start = text.rfind("<answer>")? + "<answer>".len();
    let rest = &text[start..];
    Some(match rest.find("</answer>") {
        Some(end) => &rest[..end],
        None => rest,
    })
}

/// The content of the last `\boxed{…}` / `\fbox{…}` (or `\boxed 5`).
pub fn last_boxed(text: &str) -> Option<&str> {
    let boxed = text.rfind("\\boxed");
    let fbox = text.rfind("\\fbox");
    let (at, len) = match (boxed, fbox) {
        (Some(b), Some(f)) if f > b => (f, 5),
        (Some(b), _) => (b, 6),
        (None, Some(f)) => (f, 5),
        (None, None) => return None,
    };
    let rest = &text[at + len..];
    let trimmed = rest.trim_start();
    if let Some(inner) = trimmed.strip_prefix('{') {
        let mut depth = 1usize;
        let mut escaped = false;
        for (i, c) in inner.char_indices() {
            if escaped {
                escaped = false;
                continue;
            }
            match c {
                '\\' => escaped = true,
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(&inner[..i]);
                    }
                }
                _ => {}
            }
        }
        return None; // unbalanced: no answer
    }
    if rest.len() == trimmed.len() {
        return None; // `\boxedfoo`
    }
    // `\boxed 5`: up to the next space or `$`.
    let end = trimmed.find(|c: char| c.is_whitespace() || c == '$').unwrap_or(trimmed.len());
    Some(&trimmed[..end])
}

fn final_answer_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"(?i)answer\s*(?:is|:)\s*:?").unwrap())
}

fn number_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?").unwrap())
}

/// The text after the last "answer is" / "answer:", to the end of its line, `$…$` unwrapped and
/// a final period dropped.
pub fn final_answer(text: &str) -> Option<&str> {
    let m = final_answer_regex().find_iter(text).last()?;
    let rest = &text[m.end()..];
    let line = rest.trim_start().lines().next().unwrap_or("").trim();
    let line = line.strip_suffix('.').unwrap_or(line).trim();
    // `$\frac12$` or `\( … \)`
    let unwrapped = if let Some(inner) = line.strip_prefix("$$").and_then(|l| l.find("$$").map(|e| &l[..e])) {
        inner
    } else if let Some(inner) = line.strip_prefix('$').and_then(|l| l.find('$').map(|e| &l[..e])) {
        inner
    } else if let Some(inner) = line.strip_prefix("\\(").and_then(|l| l.find("\\)").map(|e| &l[..e])) {
        inner
    } else {
        line
    };
    let unwrapped = unwrapped.trim();
    (!unwrapped.is_empty()).then_some(unwrapped)
}

/// The last number in the text.
pub fn last_number(text: &str) -> Option<&str> {
    number_regex().find_iter(text).last().map(|m| m.as_str())
}
