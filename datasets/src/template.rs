//! Prompt templates: the text a model continues, made from a [`Problem`].
//!
//! A template is text with `{name}` placeholders: `{question}`, `{id}`, or any field of the
//! problem's sample (`{answer}`, `{target}`, `{numbers}`, ...). Only `{identifier}` is a
//! placeholder: any other brace is literal text (`\boxed{}` needs no escaping), and
//! `{{name}}` writes a literal `{name}`. Strings are inserted as they are, numbers and booleans as
//! JSON, lists as `[a, b, c]`. A placeholder the problem has no field for is an error naming it.
//!
//! Built in:
//! - `r1` ([`R1_ZERO`]): DeepSeek-R1-Zero's template for base models. It ends with
//!   `Assistant:` and not with `<think>`: the completion then carries the whole
//!   `<think>…</think> <answer>…</answer>` structure, which is what the `format` checker
//!   (aha-rewards' R1 pattern) and the `<answer>` extraction of the math and countdown checkers
//!   look for.
//! - `boxed` ([`BOXED`]): the question and Qwen2.5-Math's instruction to put the final answer in
//!   `\boxed{}`; also a good user message for chat models.
//! - `plain` ([`PLAIN`]): the question alone.
//!
//! The tokenizer's chat template (for chat models) lives in aha-model
//! (`aha_model::ChatTemplate`): render the user message with one of these, then wrap it.

use serde_json::Value;

use crate::error::{DatasetError, Result};
use crate::problem::Problem;

/// DeepSeek-R1-Zero's prompt for base models (DeepSeek-R1 paper, table 1).
pub const R1_ZERO: &str = "A conversation between User and Assistant. The user asks a question, and the Assistant \
solves it. The assistant first thinks about the reasoning process in the mind and then provides the user with the \
answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, \
respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>. User: {question}. \
Assistant:";

/// The question and the instruction Qwen2.5-Math is trained with.
pub const BOXED: &str = "{question}\nPlease reason step by step, and put your final answer within \\boxed{}.";

/// The question alone.
pub const PLAIN: &str = "{question}";

/// A parsed template; cheap to render many times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptTemplate {
    source: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Text(String),
    Field(String),
}

impl PromptTemplate {
    /// A template from its text.
    pub fn new(source: &str) -> Self {
        PromptTemplate { source: source.to_string(), segments: parse(source) }
    }

    /// `r1`, `boxed` or `plain`; anything holding a `{placeholder}` is taken as template text.
    pub fn from_name_or_text(spec: &str) -> Result<Self> {
        match spec {
            "r1" | "r1-zero" => Ok(Self::new(R1_ZERO)),
            "boxed" => Ok(Self::new(BOXED)),
            "plain" => Ok(Self::new(PLAIN)),
            _ => {
                let template = Self::new(spec);
                if template.placeholders().next().is_none() {
                    return Err(DatasetError::Template(format!(
                        "unknown template \"{spec}\" (built in: r1, boxed, plain; or text with a {{question}} placeholder)"
                    )));
                }
                Ok(template)
            }
        }
    }

    /// The template text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The names of the placeholders, in order of appearance.
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Field(name) => Some(name.as_str()),
            Segment::Text(_) => None,
        })
    }

    /// The prompt for `problem`.
    pub fn render(&self, problem: &Problem) -> Result<String> {
        self.render_fields(|name| match name {
            "question" => Some(problem.question.clone()),
            "id" => Some(problem.id.clone()),
            _ => problem.fields.get(name).filter(|v| !v.is_null()).map(display_value),
        })
        .map_err(|name| {
            let mut known: Vec<&str> = vec!["question", "id"];
            known.extend(problem.fields.keys().map(String::as_str));
            DatasetError::Template(format!(
                "unknown placeholder {{{name}}} for problem {} (its fields: {})",
                problem.id,
                known.join(", ")
            ))
        })
    }

    /// Renders with `lookup`; `Err(name)` for the first placeholder it has no value for.
    pub(crate) fn render_fields(&self, lookup: impl Fn(&str) -> Option<String>) -> std::result::Result<String, String> {
        let mut out = String::with_capacity(self.source.len());
        for segment in &self.segments {
            match segment {
                Segment::Text(text) => out.push_str(text),
                Segment::Field(name) => out.push_str(&lookup(name).ok_or_else(|| name.clone())?),
            }
        }
        Ok(out)
    }
}

/// How a field value reads inside a prompt.
pub fn display_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => format!("[{}]", items.iter().map(display_value).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

fn parse(source: &str) -> Vec<Segment> {
    let mut segments = Vec::new();
    let mut text = String::new();
    let mut rest = source;
    while let Some(open) = rest.find('{') {
        text.push_str(&rest[..open]);
        let after = &rest[open..];
        if let Some(name) = escaped_placeholder(after) {
            text.push('{');
            text.push_str(name);
            text.push('}');
            rest = &after[name.len() + 4..];
        } else if let Some(name) = placeholder(after) {
            if !text.is_empty() {
                segments.push(Segment::Text(std::mem::take(&mut text)));
            }
            segments.push(Segment::Field(name.to_string()));
            rest = &after[name.len() + 2..];
        } else {
            text.push('{');
            rest = &after[1..];
        }
    }
    text.push_str(rest);
    if !text.is_empty() {
        segments.push(Segment::Text(text));
    }
    segments
}

/// `{identifier}` at the start of `text`: the identifier.
fn placeholder(text: &str) -> Option<&str> {
    let inner = text.strip_prefix('{')?;
    let end = inner.find('}')?;
    let name = &inner[..end];
    is_identifier(name).then_some(name)
}

/// `{{identifier}}` at the start of `text`: the identifier.
fn escaped_placeholder(text: &str) -> Option<&str> {
    let inner = text.strip_prefix("{{")?;
    let end = inner.find("}}")?;
    let name = &inner[..end];
    is_identifier(name).then_some(name)
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn problem() -> Problem {
        let fields = json!({"answer": 47, "numbers": [3, 5, 7], "target": 22, "note": "x"});
        Problem { id: "p1".into(), question: "What is 12 + 35?".into(), fields: fields.as_object().unwrap().clone() }
    }

    #[test]
    fn r1_template_wraps_the_question_and_ends_with_assistant() {
        let text = PromptTemplate::from_name_or_text("r1").unwrap().render(&problem()).unwrap();
        assert!(text.starts_with("A conversation between User and Assistant."), "{text}");
        assert!(text.ends_with("<answer> answer here </answer>. User: What is 12 + 35?. Assistant:"), "{text}");
    }

    #[test]
    fn boxed_template_keeps_its_literal_braces() {
        let text = PromptTemplate::from_name_or_text("boxed").unwrap().render(&problem()).unwrap();
        assert_eq!(text, "What is 12 + 35?\nPlease reason step by step, and put your final answer within \\boxed{}.");
    }

    #[test]
    fn custom_template_substitutes_sample_fields() {
        let template =
            PromptTemplate::from_name_or_text("Use {numbers} to make {target} ({id}); {{target}} {x").unwrap();
        assert_eq!(template.render(&problem()).unwrap(), "Use [3, 5, 7] to make 22 (p1); {target} {x");
        assert_eq!(template.placeholders().collect::<Vec<_>>(), ["numbers", "target", "id"]);
    }

    #[test]
    fn unknown_placeholder_is_an_error_naming_it() {
        let error = PromptTemplate::new("Q: {question} hint: {hint}").render(&problem()).unwrap_err().to_string();
        assert!(error.contains("{hint}") && error.contains("p1") && error.contains("answer"), "{error}");
    }

    #[test]
    fn unknown_template_name_is_an_error() {
        let error = PromptTemplate::from_name_or_text("r2").unwrap_err().to_string();
        assert!(error.contains("unknown template \"r2\""), "{error}");
    }
}
