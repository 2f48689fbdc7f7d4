//! The `math` checker: extract the final answer, parse it and the gold answer (field `answer`)
//! as LaTeX-ish math, and compare them mathematically.
//!
//! Reward: 1.0 when the extracted answer is equivalent to the gold answer, 0.0 otherwise
//! (including no answer found, or an answer that does not parse). Skip when the gold answer
//! itself does not parse or does not evaluate.

mod compare;
mod eval;
mod extract;
mod lex;
mod parse;

use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use compare::Compare;
pub use extract::{answer_tag, candidates, final_answer, last_boxed, last_number, Extracted, Source};
pub use parse::Expr;

use crate::checker::{field, CheckError, Checker, Sample, Verdict};

/// Why an answer did not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MathError {
    #[error("answer too long ({0} bytes or tokens)")]
    TooLong(usize),
    #[error("answer nested too deeply")]
    TooDeep,
    #[error("{0}")]
    Syntax(String),
}

/// Options of the `math` checker (all optional in a config).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MathOptions {
    /// The sample field holding the gold answer.
    pub answer_field: String,
    /// Where to look for the answer, in order; the first source that finds a candidate decides
    /// (a candidate that does not parse scores 0; later sources are not consulted).
    pub sources: Vec<Source>,
    /// Only `answer_tag` and `boxed` count (overrides `sources`).
    pub strict: bool,
    /// Seed of the random points used for expressions with variables.
    pub seed: u64,
    /// Tolerance when a decimal literal is involved (absolute; relative above 1).
    pub float_tolerance: f64,
}

impl Default for MathOptions {
    fn default() -> Self {
        MathOptions {
            answer_field: "answer".into(),
            sources: vec![Source::AnswerTag, Source::Boxed, Source::FinalAnswer, Source::LastNumber],
            strict: false,
            seed: 0,
            float_tolerance: 1e-6,
        }
    }
}

/// A parsed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A multiple-choice letter, `A`..`J`.
    Choice(char),
    /// A word answer (`Monday`, `\text{odd}`), lower-cased, spaces collapsed.
    Text(String),
    Math(Expr),
}

/// The `math` checker.
#[derive(Debug, Clone, Default)]
pub struct MathChecker {
    options: MathOptions,
    compare: Compare,
}

impl MathChecker {
    pub fn new(options: MathOptions) -> Self {
        let compare = Compare { seed: options.seed, float_tolerance: options.float_tolerance, ..Compare::default() };
        MathChecker { options, compare }
    }

    fn sources(&self) -> Vec<Source> {
        if self.options.strict {
            vec![Source::AnswerTag, Source::Boxed]
        } else {
            self.options.sources.clone()
        }
    }

    /// Judges `completion` against the gold answer text.
    pub fn verdict(&self, completion: &str, gold: &str) -> Verdict {
        let gold_text = last_boxed(gold).unwrap_or(gold);
        let gold_answer = match parse_answer(gold_text) {
            Ok(a) => a,
            Err(e) => {
                return Verdict::skip(
                    format!("gold answer does not parse: {e}"),
                    json!({ "gold": gold, "gold_error": e.to_string() }),
                )
            }
        };
        if let Answer::Math(expr) = &gold_answer {
            if !self.compare.answers(expr, expr) {
                return Verdict::skip(
                    "gold answer does not evaluate to a number",
                    json!({ "gold": gold, "gold_error": "not comparable with itself" }),
                );
            }
        }
        let found = candidates(completion, &self.sources());
        if found.is_empty() {
            return Verdict::reward(0.0, json!({ "gold": gold, "extracted": Value::Null, "why": "no answer found" }));
        }
        // The first source that finds something is the answer: a box that does not parse is a
        // wrong answer, not a reason to go looking for some other number.
        let candidate = &found[0];
        let parsed = match (candidate.source, parse_answer(&candidate.text)) {
            // A sentence in the answer tag: "The largest $n$ is 34." Look inside it.
            (Source::AnswerTag, Err(e)) => inner_answer(&candidate.text).ok_or(e),
            (_, result) => result,
        };
        let error = match parsed {
            Ok(pred) => {
                let correct = answers_match(&self.compare, &gold_answer, &pred, &candidate.text);
                return Verdict::reward(
                    if correct { 1.0 } else { 0.0 },
                    json!({
                        "gold": gold,
                        "extracted": candidate.text,
                        "source": candidate.source,
                        "why": if correct { "equivalent" } else { "not equivalent" },
                    }),
                );
            }
            Err(e) => e,
        };
        // A gold multiple-choice letter can still be matched from an unparsable candidate.
        if let Answer::Choice(letter) = gold_answer {
            let correct = choice_of(&candidate.text) == Some(letter);
            return Verdict::reward(
                if correct { 1.0 } else { 0.0 },
                json!({ "gold": gold, "extracted": candidate.text, "source": candidate.source,
                        "why": if correct { "equivalent" } else { "not equivalent" } }),
            );
        }
        Verdict::reward(
            0.0,
            json!({
                "gold": gold,
                "extracted": candidate.text,
                "source": candidate.source,
                "why": format!("answer does not parse: {error}"),
            }),
        )
    }
}

impl Checker for MathChecker {
    fn name(&self) -> &str {
        "math"
    }

    fn required_fields(&self) -> Vec<String> {
        vec![self.options.answer_field.clone()]
    }

    fn check(&self, completion: &str, sample: &Sample) -> Result<Verdict, CheckError> {
        let name = &self.options.answer_field;
        let gold = match field(sample, name)? {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(CheckError::BadField { field: name.clone(), expected: "a string or a number".into() }),
        };
        Ok(self.verdict(completion, &gold))
    }
}

/// Within an answer tag that does not parse as a whole: the text after "answer is", else the
/// last `$…$` / `\(…\)` span, else the last number; the first that parses.
fn inner_answer(text: &str) -> Option<Answer> {
    if let Some(rest) = final_answer(text) {
        if let Ok(a) = parse_answer(rest) {
            return Some(a);
        }
    }
    if let Some(span) = last_math_span(text) {
        if let Ok(a) = parse_answer(span) {
            return Some(a);
        }
    }
    last_number(text).and_then(|n| parse_answer(n).ok())
}

/// The last `$…$` or `\(…\)` span.
fn last_math_span(text: &str) -> Option<&str> {
    if let Some(end) = text.rfind("\\)") {
        if let Some(start) = text[..end].rfind("\\(") {
            return Some(&text[start + 2..end]);
        }
    }
    let end = text.rfind('$')?;
    let start = text[..end].trim_end_matches('$').rfind('$')?;
    Some(text[start + 1..end].trim_matches('$'))
}

/// Whether `pred` answers `gold` (pred's raw text is used for multiple-choice letters).
pub fn answers_match(compare: &Compare, gold: &Answer, pred: &Answer, pred_text: &str) -> bool {
    match (gold, pred) {
        (Answer::Choice(g), _) => choice_of(pred_text) == Some(*g),
        (Answer::Text(g), Answer::Text(p)) => g == p,
        (Answer::Math(g), Answer::Math(p)) => compare.answers(g, p),
        _ => false,
    }
}

fn choice_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^\s*(?:\\text(?:bf)?\s*\{\s*)?(?:\\textbf\s*\{\s*)?\(?\s*([A-J])\s*\)?\s*\}?\s*(?:[.:)]|\s|$)")
            .unwrap()
    })
}

/// The multiple-choice letter a text starts with: `B`, `(B)`, `\text{(B)}`, `B) 42`.
pub fn choice_of(text: &str) -> Option<char> {
    let text = text.trim().trim_matches('$');
    let caps = choice_regex().captures(text)?;
    caps.get(1)?.as_str().chars().next()
}

fn wrappers_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"\\(?:text|textbf|textit|textrm|mbox|mathrm|mathbf|textnormal)\s*\{").unwrap())
}

const NOT_TEXT: &[&str] = &[
    "sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "sqrt", "pi", "inf", "infty", "infinity", "frac",
    "dfrac", "tfrac", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "or", "and", "cup", "emptyset",
];

/// A word answer, if `text` is one: only letters, spaces, hyphens and apostrophes after removing
/// `\text{}`-like wrappers, with a word of three or more letters that is not math.
fn as_text(text: &str) -> Option<String> {
    let stripped = wrappers_regex().replace_all(text, "");
    if stripped.contains('\\') {
        return None; // a LaTeX command is left: math, not words
    }
    let cleaned: String = stripped.chars().filter(|c| !matches!(c, '{' | '}' | '$' | '\\')).collect();
    let cleaned = cleaned.trim().trim_end_matches('.').trim();
    if cleaned.is_empty() || !cleaned.chars().all(|c| c.is_alphabetic() || matches!(c, ' ' | '-' | '\'' | ',')) {
        return None;
    }
    let words: Vec<String> =
        cleaned.split(|c: char| !c.is_alphabetic()).filter(|w| !w.is_empty()).map(|w| w.to_lowercase()).collect();
    let wordy =
        words.iter().any(|w| w.chars().count() >= 3 && !NOT_TEXT.contains(&w.as_str()) && !lex::is_unit_word(w));
    if !wordy {
        return None;
    }
    let words: Vec<String> = words.into_iter().filter(|w| w != "the" && w != "a" && w != "an").collect();
    Some(words.join(" "))
}

/// Parses an answer: a multiple-choice letter, a word, or math.
pub fn parse_answer(text: &str) -> Result<Answer, MathError> {
    if text.len() > lex::MAX_ANSWER_BYTES {
        return Err(MathError::TooLong(text.len()));
    }
    let trimmed = text.trim().trim_end_matches('.').trim();
    let trimmed = trimmed.strip_prefix('$').and_then(|t| t.strip_suffix('$')).unwrap_or(trimmed).trim();
    if let Some(letter) = choice_of(trimmed) {
        // Exactly a letter (possibly wrapped), nothing else: a choice.
        let bare: String = trimmed.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        let bare = bare.trim_start_matches("textbf").trim_start_matches("text");
        if bare.len() == 1 && bare.starts_with(letter) {
            return Ok(Answer::Choice(letter));
        }
    }
    if let Some(words) = as_text(trimmed) {
        return Ok(Answer::Text(words));
    }
    let tokens = lex::tokenize(trimmed)?;
    Ok(Answer::Math(parse::parse(&tokens)?))
}
