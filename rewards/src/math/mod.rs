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

use std::borrow::Cow;
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use compare::Compare;
pub use extract::{
    answer_tag, candidates, final_answer, last_boxed, last_boxes, last_math_spans, last_number, Extracted, Source,
};
pub use parse::Expr;

use crate::checker::{field, CheckError, Checker, ProblemFields, Verdict};

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

/// Longest gold answer searched as a worked solution when it does not parse as a whole: longer
/// is no dataset's answer, and the search must stay within a verdict's budget.
const MAX_GOLD_SOLUTION: usize = 64 * 1024;

/// Options of the `math` checker (all optional in a config).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MathOptions {
    /// The problem field holding the gold answer.
    pub answer_field: String,
    /// Where to look for the answer, in order. A tag or a box decides even when it does not parse
    /// (it scores 0 then); a candidate found in prose counts only when it parses, and otherwise
    /// the next one is tried.
    pub sources: Vec<Source>,
    /// Only `answer_tag` and `boxed` count (overrides `sources`).
    pub strict: bool,
    /// Seed of the random points used for expressions with variables.
    pub seed: u64,
    /// Tolerance when a decimal literal is involved, relative to the gold (a gold 0 is matched
    /// only by a value that is 0 up to rounding).
    pub float_tolerance: f64,
    /// A comma between digits is a decimal comma (`2,74` is 2.74), in the completion and the
    /// gold alike; lists then need a space after their commas (`1, 2`). Off by default: `1,000`
    /// is a thousand and `1,2` the list of 1 and 2.
    pub decimal_comma: bool,
    /// A plain number standing alone (the whole gold, a tag's content, the last number in prose)
    /// whose comma cannot separate thousands has a decimal comma, as Math-Verify reads plain
    /// text: `1,22` is 1.22, `0,111` is 0.111, `1,234` stays 1234 (default). Off: such a number is
    /// the list of its two parts. In LaTeX (`$1,2$`, `\boxed{1,2}`) a comma separates items.
    pub plain_decimal_comma: bool,
    /// An answer written as a relation in one quantity matches a gold set or interval
    /// (`-2 \le x \le 7` answers `[-2, 7]`). Off: only a gold relation matches an answer written
    /// as an interval (Math-Verify's `allow_set_relation_comp = false`, its default).
    pub relation_matches_set: bool,
    /// Variables are matched by position, not by name: the answer's variables (sorted) are renamed
    /// to the gold's when there are as many (`f(y)` answers `f(x)`; Math-Verify's `strict =
    /// false`). Off by default: `f(y)` is not `f(x)`.
    pub rename_variables: bool,
}

impl Default for MathOptions {
    fn default() -> Self {
        MathOptions {
            answer_field: "answer".into(),
            sources: vec![Source::AnswerTag, Source::Boxed, Source::FinalAnswer, Source::LatexMath, Source::LastNumber],
            strict: false,
            seed: 0,
            float_tolerance: 1e-6,
            decimal_comma: false,
            plain_decimal_comma: true,
            relation_matches_set: true,
            rename_variables: false,
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
        let compare = Compare {
            seed: options.seed,
            float_tolerance: options.float_tolerance,
            relation_matches_set: options.relation_matches_set,
            rename_variables: options.rename_variables,
            ..Compare::default()
        };
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
        if self.options.decimal_comma {
            return self.read_verdict(&with_decimal_points(completion), &with_decimal_points(gold));
        }
        self.read_verdict(completion, gold)
    }

    fn read_verdict(&self, completion: &str, gold: &str) -> Verdict {
        // The gold is read as a completion is: its boxes, else the whole text, else (a worked
        // solution) the answer its prose gives.
        // A plain number alone reads a comma that cannot be thousands as a decimal comma (`1,22`).
        let gold_text = match last_boxes(gold) {
            Some(boxes) => boxes,
            None if self.options.plain_decimal_comma => {
                extract::plain_decimal_comma(gold).map_or(Cow::Borrowed(gold), Cow::Owned)
            }
            None => Cow::Borrowed(gold),
        };
        let gold_answer = match parse_answer(&gold_text).or_else(|e| {
            let solution = gold.len() <= MAX_GOLD_SOLUTION;
            solution.then(|| answer_in_prose(gold, self.options.plain_decimal_comma)).flatten().ok_or(e)
        }) {
            Ok(a) => a,
            Err(e) => {
                return self.identical_or_skip(
                    completion,
                    &gold_text,
                    format!("gold answer does not parse: {e}"),
                    json!({ "gold": gold, "gold_error": e.to_string() }),
                )
            }
        };
        if let Answer::Math(expr) = &gold_answer {
            if !self.compare.answers(expr, expr) {
                return self.identical_or_skip(
                    completion,
                    &gold_text,
                    "gold answer does not evaluate to a number".into(),
                    json!({ "gold": gold, "gold_error": "not comparable with itself" }),
                );
            }
        }
        let found = candidates(completion, &self.sources());
        let Some(first) = found.first() else {
            return Verdict::reward(0.0, json!({ "gold": gold, "extracted": Value::Null, "why": "no answer found" }));
        };
        let mut first_error = None;
        for candidate in &found {
            // A plain number in prose or in a tag (not in a box) may have a decimal comma.
            let plain = match candidate.source {
                Source::LastNumber => true,
                Source::AnswerTag => answer_tag(completion).is_some_and(|tag| last_boxed(tag).is_none()),
                _ => false,
            };
            let reading = read_candidate(candidate, &gold_answer, plain && self.options.plain_decimal_comma);
            match reading {
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
                // A tag or a box is the answer the writer chose: one that does not parse is a
                // wrong answer, not a reason to go looking for some other number.
                Err(e) if candidate.source.is_marked() => return unparsable(gold, candidate, &e),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let error = first_error.unwrap_or_else(|| MathError::Syntax("no candidate parses".into()));
        unparsable(gold, first, &error)
    }
}

impl MathChecker {
    /// A gold we cannot judge by value (it does not parse, or has no value: `12:00`): reward 1
    /// when the answer is written exactly as the gold is (spacing and `$` aside), else a skip.
    fn identical_or_skip(&self, completion: &str, gold_text: &str, reason: String, detail: Value) -> Verdict {
        let squeeze = |s: &str| s.chars().filter(|c| !c.is_whitespace() && *c != '$').collect::<String>();
        let gold_squeezed = squeeze(gold_text);
        if let Some(first) = candidates(completion, &self.sources()).first() {
            if !gold_squeezed.is_empty() && squeeze(&first.text) == gold_squeezed {
                return Verdict::reward(
                    1.0,
                    json!({ "gold": gold_text, "extracted": first.text, "source": first.source, "why": "written as the gold" }),
                );
            }
        }
        Verdict::skip(reason, detail)
    }
}

/// `2,74` -> `2.74`: every comma with a digit on both sides becomes a decimal point.
fn with_decimal_points(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let decimal = |i: usize| {
        bytes[i] == b',' && i > 0 && bytes[i - 1].is_ascii_digit() && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)
    };
    if !(0..bytes.len()).any(decimal) {
        return Cow::Borrowed(text);
    }
    // Commas and digits are ASCII: replacing one byte by another keeps the text UTF-8.
    let replaced: Vec<u8> = (0..bytes.len()).map(|i| if decimal(i) { b'.' } else { bytes[i] }).collect();
    Cow::Owned(String::from_utf8(replaced).expect("ASCII replaced by ASCII"))
}

/// Reward 0 for an answer that does not parse.
fn unparsable(gold: &str, candidate: &Extracted, error: &MathError) -> Verdict {
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

/// A candidate as an answer. A sentence in an answer tag ("The largest $n$ is 34.") is searched
/// as a completion would be; a gold multiple-choice letter is matched by the letter a candidate
/// starts with (`B) 42`) even when the rest does not parse.
fn read_candidate(candidate: &Extracted, gold: &Answer, decimal_comma: bool) -> Result<Answer, MathError> {
    // A tag's content or a number in prose that is one plain number with a decimal comma.
    let decimal = match candidate.source {
        _ if !decimal_comma => None,
        Source::AnswerTag => extract::plain_text_decimal_commas(&candidate.text),
        _ => extract::plain_decimal_comma(&candidate.text),
    };
    let text = decimal.as_deref().unwrap_or(&candidate.text);
    let parsed = if candidate.source.is_marked() { parse_answer(text) } else { parse_prose(text) };
    let parsed = match (candidate.source, parsed) {
        (Source::AnswerTag, Err(e)) => answer_in_prose(&candidate.text, decimal_comma).ok_or(e),
        (_, parsed) => parsed,
    };
    match (parsed, gold) {
        (Err(e), Answer::Choice(_)) => choice_of(&candidate.text).map(Answer::Choice).ok_or(e),
        (parsed, _) => parsed,
    }
}

impl Checker for MathChecker {
    fn name(&self) -> &str {
        "math"
    }

    fn required_fields(&self) -> Vec<String> {
        vec![self.options.answer_field.clone()]
    }

    fn check(&self, completion: &str, fields: &ProblemFields) -> Result<Verdict, CheckError> {
        let name = &self.options.answer_field;
        let gold = match field(fields, name)? {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(CheckError::BadField { field: name.clone(), expected: "a string or a number".into() }),
        };
        Ok(self.verdict(completion, &gold))
    }
}

/// In text that does not parse as a whole (a sentence in an answer tag, a worked solution as
/// the gold): the first candidate of the prose sources that parses.
fn answer_in_prose(text: &str, decimal_comma: bool) -> Option<Answer> {
    candidates(text, &[Source::FinalAnswer, Source::LatexMath, Source::LastNumber]).iter().find_map(|c| {
        let decimal =
            (decimal_comma && c.source == Source::LastNumber).then(|| extract::plain_decimal_comma(&c.text)).flatten();
        parse_prose(decimal.as_deref().unwrap_or(&c.text)).ok()
    })
}

/// A candidate found in prose: words with a number among them ("we need 42 of them") would
/// parse, words dropped, so a sentence is refused first.
fn parse_prose(text: &str) -> Result<Answer, MathError> {
    if extract::is_prose(text) {
        return Err(MathError::Syntax("a sentence, not an answer".into()));
    }
    parse_answer(text)
}

/// Whether `pred` answers `gold` (pred's raw text is used for multiple-choice letters).
pub fn answers_match(compare: &Compare, gold: &Answer, pred: &Answer, pred_text: &str) -> bool {
    match (gold, pred) {
        // A letter read from inside a sentence ("so the answer is (A)") is that letter.
        (Answer::Choice(g), Answer::Choice(p)) => g == p,
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
/// `\text{}`-like wrappers, with a word of three or more letters that is not math, or any word
/// of two letters or more inside such a wrapper.
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
    // `\text{no}`: a short word is text when the writer said so.
    let declared_text = wrappers_regex().is_match(text) && words.iter().any(|w| w.chars().count() >= 2);
    if !wordy && !declared_text {
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
    let parsed = lex::tokenize(trimmed).and_then(|tokens| parse::parse(&tokens));
    match parsed {
        Ok(expr) => Ok(Answer::Math(expr)),
        // `1 = \zzz = x = 0`: a chain that does not parse as a whole is its last side, as
        // Math-Verify reads it.
        Err(e) => match last_side(trimmed) {
            Some(side) => lex::tokenize(side).and_then(|tokens| parse::parse(&tokens)).map(Answer::Math).map_err(|_| e),
            None => Err(e),
        },
    }
}

/// What follows the last `=` outside braces and brackets, when something does.
fn last_side(text: &str) -> Option<&str> {
    let mut depth = 0i32;
    let mut last = None;
    for (at, c) in text.char_indices() {
        match c {
            '{' | '(' | '[' => depth += 1,
            '}' | ')' | ']' => depth -= 1,
            '=' if depth == 0 && !text[..at].ends_with(['<', '>', '!', '\\']) => last = Some(at),
            _ => {}
        }
    }
    let side = text[last? + 1..].trim();
    (!side.is_empty()).then_some(side)
}
