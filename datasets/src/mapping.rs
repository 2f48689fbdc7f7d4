//! Field mapping: which column is the question, where the gold answer comes from and how to read
//! it, which other columns go to the checker and under what names; presets for common datasets.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::DatasetError;
use crate::problem::Problem;
use crate::template::PromptTemplate;

/// How to read a gold answer out of a column.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerFormat {
    /// The column is the answer (a string or a number).
    #[default]
    Verbatim,
    /// GSM8K: the text after the last `####`, commas removed.
    Gsm8k,
    /// MATH: the content of the last `\boxed{...}` (or `\fbox{...}`), nested braces included.
    Boxed,
}

impl AnswerFormat {
    /// The answer in `value`, or why there is none.
    pub fn extract(self, value: &Value) -> Result<Value, String> {
        let text = || value.as_str().ok_or_else(|| format!("must be a string, got {value}"));
        match self {
            AnswerFormat::Verbatim => match value {
                Value::String(s) if s.trim().is_empty() => Err("is empty".into()),
                Value::String(_) | Value::Number(_) => Ok(value.clone()),
                _ => Err(format!("must be a string or a number, got {value}")),
            },
            AnswerFormat::Gsm8k => {
                let text = text()?;
                let (_, answer) = text.rsplit_once("####").ok_or("has no `####` before the final answer")?;
                let answer = answer.trim().replace(',', "");
                if answer.is_empty() {
                    return Err("has nothing after `####`".into());
                }
                Ok(Value::String(answer))
            }
            AnswerFormat::Boxed => {
                let answer = last_boxed(text()?).ok_or("has no complete \\boxed{...}")?;
                Ok(Value::String(answer.trim().to_string()))
            }
        }
    }
}

/// The content of the last `\boxed{...}` / `\fbox{...}`: the math checker's reading, so that a
/// gold answer and a completion are read alike (`\boxed {5}` is 5 in both).
pub use aha_rewards::math::last_boxed;

/// One place the gold answer may come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerSource {
    pub column: String,
    #[serde(default)]
    pub format: AnswerFormat,
}

impl AnswerSource {
    pub fn new(column: &str, format: AnswerFormat) -> Self {
        AnswerSource { column: column.to_string(), format }
    }
}

/// How a row (a JSON object of columns) becomes a [`Problem`].
///
/// The sample gets: `answer` from the first answer source whose column is present; each entry of
/// `fields` (sample name -> candidate columns, first present wins); and, with
/// `keep_other_columns`, every other column except the ones used for the question and answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FieldMapping {
    /// Columns that may hold the question; the first present wins.
    pub question: Vec<String>,
    /// When no question column is present: the question made from the problem's other fields (for
    /// example Countdown's `target` and `numbers`), a [`PromptTemplate`] text.
    pub question_template: Option<String>,
    /// Where the gold answer (problem field `answer`) comes from; the first present column wins.
    pub answer: Vec<AnswerSource>,
    /// Problem fields taken from other columns: field name -> candidate columns.
    pub fields: BTreeMap<String, Vec<String>>,
    /// A column holding the problem's id (default: file name and line or row).
    pub id: Option<String>,
    /// Copy the remaining columns into the sample too (custom checkers may read them).
    pub keep_other_columns: bool,
    /// Problem fields a problem must have, each satisfied by any one of its names: a row without
    /// them is skipped (or, in strict mode, an error).
    pub required: Vec<Vec<String>>,
}

impl Default for FieldMapping {
    /// Your own data: the question in `question`, `problem` or `prompt`; the answer verbatim in
    /// `answer`; every other column kept.
    fn default() -> Self {
        FieldMapping {
            question: strings(&["question", "problem", "prompt"]),
            question_template: None,
            answer: vec![AnswerSource::new("answer", AnswerFormat::Verbatim)],
            fields: BTreeMap::new(),
            id: None,
            keep_other_columns: true,
            required: Vec::new(),
        }
    }
}

/// The shapes of the common datasets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// `question`, and `answer` with the final answer after `####` (openai/gsm8k).
    Gsm8k,
    /// `problem`, and `answer` verbatim if present (MATH-500) else the last `\boxed{}` of
    /// `solution` (hendrycks MATH).
    Math,
    /// `target` and `nums` (or `numbers`), given to the checker as `target` and `numbers`; the
    /// question is TinyZero's, made from them, unless a `question` column exists.
    Countdown,
    /// A question (`question`, `prompt`, `problem` or `text`) and `tests`
    /// (`[{"stdin", "stdout"}]`) and/or `asserts` (or MBPP's `test_list`).
    Code,
}

/// TinyZero's Countdown question.
pub const COUNTDOWN_QUESTION: &str =
    "Using the numbers {numbers}, create an equation that equals {target}. You can use \
basic arithmetic operations (+, -, *, /) and each number can only be used once. Show your work in <think> </think> \
tags. And return the final answer in <answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>.";

impl Preset {
    pub const ALL: [Preset; 4] = [Preset::Gsm8k, Preset::Math, Preset::Countdown, Preset::Code];

    pub fn name(self) -> &'static str {
        match self {
            Preset::Gsm8k => "gsm8k",
            Preset::Math => "math",
            Preset::Countdown => "countdown",
            Preset::Code => "code",
        }
    }

    /// The aha-rewards checker that judges this kind of problem.
    pub fn checker(self) -> &'static str {
        match self {
            Preset::Gsm8k | Preset::Math => "math",
            Preset::Countdown => "countdown",
            Preset::Code => "code",
        }
    }

    pub fn mapping(self) -> FieldMapping {
        let answer_required = vec![strings(&["answer"])];
        match self {
            Preset::Gsm8k => FieldMapping {
                question: strings(&["question"]),
                answer: vec![AnswerSource::new("answer", AnswerFormat::Gsm8k)],
                required: answer_required,
                ..FieldMapping::default()
            },
            Preset::Math => FieldMapping {
                question: strings(&["problem", "question"]),
                answer: vec![
                    AnswerSource::new("answer", AnswerFormat::Verbatim),
                    AnswerSource::new("solution", AnswerFormat::Boxed),
                ],
                required: answer_required,
                ..FieldMapping::default()
            },
            Preset::Countdown => FieldMapping {
                question: strings(&["question"]),
                question_template: Some(COUNTDOWN_QUESTION.to_string()),
                answer: Vec::new(),
                fields: BTreeMap::from([
                    ("target".to_string(), strings(&["target"])),
                    ("numbers".to_string(), strings(&["nums", "numbers"])),
                ]),
                required: vec![strings(&["target"]), strings(&["numbers"])],
                ..FieldMapping::default()
            },
            Preset::Code => FieldMapping {
                question: strings(&["question", "prompt", "problem", "text"]),
                answer: Vec::new(),
                fields: BTreeMap::from([
                    ("tests".to_string(), strings(&["tests"])),
                    ("asserts".to_string(), strings(&["asserts", "test_list"])),
                ]),
                required: vec![strings(&["tests", "asserts"])],
                ..FieldMapping::default()
            },
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = DatasetError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Preset::ALL.into_iter().find(|p| p.name() == name.to_ascii_lowercase()).ok_or_else(|| {
            let names: Vec<_> = Preset::ALL.iter().map(|p| p.name()).collect();
            DatasetError::Invalid(format!("unknown preset \"{name}\" (one of: {})", names.join(", ")))
        })
    }
}

impl FieldMapping {
    /// Adds the fields a checker reads (`aha_rewards::Checker::required_fields`) to `required`.
    pub fn require(&mut self, fields: &[String]) {
        for field in fields {
            if !self.required.iter().any(|names| names.contains(field)) {
                self.required.push(vec![field.clone()]);
            }
        }
    }

    /// The problem in `row`, or why the row cannot be one. `default_id` names it when no id
    /// column is mapped or present.
    pub fn apply(&self, row: &Map<String, Value>, default_id: String) -> Result<Problem, String> {
        let present = |column: &str| row.get(column).filter(|v| !v.is_null());
        let mut used: Vec<&str> = Vec::new();
        let mut fields = Map::new();

        for source in &self.answer {
            if let Some(value) = present(&source.column) {
                let answer = source.format.extract(value).map_err(|why| format!("field `{}` {why}", source.column))?;
                fields.insert("answer".to_string(), answer);
                used.push(&source.column);
                break;
            }
        }
        for (field, columns) in &self.fields {
            if let Some((column, value)) = columns.iter().find_map(|c| present(c).map(|v| (c, v))) {
                fields.insert(field.clone(), value.clone());
                used.push(column);
            }
        }
        let question_column = self.question.iter().find(|c| present(c).is_some());
        if let Some(column) = question_column {
            used.push(column);
        }
        if let Some(column) = self.id.as_deref().filter(|c| present(c).is_some()) {
            used.push(column);
        }
        let id = match self.id.as_deref().and_then(present) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => default_id,
        };
        if self.keep_other_columns {
            for (column, value) in row {
                if !used.contains(&column.as_str()) && !fields.contains_key(column) && !value.is_null() {
                    fields.insert(column.clone(), value.clone());
                }
            }
        }
        for names in &self.required {
            if !names.iter().any(|n| fields.get(n).is_some_and(|v| !v.is_null())) {
                return Err(match names.as_slice() {
                    [one] => format!("missing field `{one}`"),
                    many => format!("missing field `{}` (any of them)", many.join("` or `")),
                });
            }
        }

        let question = match (question_column, &self.question_template) {
            (Some(column), _) => match &row[column.as_str()] {
                Value::String(s) if !s.trim().is_empty() => s.clone(),
                Value::String(_) => return Err(format!("field `{column}` is empty")),
                other => return Err(format!("field `{column}` must be a string, got {other}")),
            },
            (None, Some(template)) => PromptTemplate::new(template)
                .render_fields(|name| fields.get(name).filter(|v| !v.is_null()).map(crate::template::display_value))
                .map_err(|name| format!("missing field `{name}` for the question"))?,
            (None, None) => return Err(format!("missing field `{}`", self.question.join("` or `"))),
        };
        Ok(Problem { id, question, fields })
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn row(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn gsm8k_answer_is_after_the_hashes_without_commas() {
        let answer =
            AnswerFormat::Gsm8k.extract(&json!("She sells 3 * 400 = <<3*400=1200>>1,200.\n#### 1,200")).unwrap();
        assert_eq!(answer, json!("1200"));
        assert!(AnswerFormat::Gsm8k.extract(&json!("no marker 12")).is_err());
        assert!(AnswerFormat::Gsm8k.extract(&json!("#### ")).is_err());
    }

    #[test]
    fn last_boxed_handles_nesting_escapes_and_fbox() {
        assert_eq!(last_boxed("a \\boxed{1} then \\boxed{\\frac{1}{2}}."), Some("\\frac{1}{2}"));
        assert_eq!(last_boxed("\\boxed{\\{1, 2\\}}"), Some("\\{1, 2\\}"));
        assert_eq!(last_boxed("so $\\boxed 5$."), Some("5"));
        assert_eq!(last_boxed("\\fbox{x^{2}}"), Some("x^{2}"));
        assert_eq!(last_boxed("\\boxed{unclosed"), None);
        // The math checker's reading: a space before the brace is allowed.
        assert_eq!(last_boxed("\\boxed {5}"), Some("5"));
        assert_eq!(last_boxed("no box"), None);
    }

    #[test]
    fn math_prefers_the_answer_column_then_the_boxed_solution() {
        let mapping = Preset::Math.mapping();
        let p = mapping
            .apply(&row(json!({"problem": "P", "solution": "so \\boxed{\\frac12}", "level": "Level 2"})), "m#0".into())
            .unwrap();
        assert_eq!(p.fields, row(json!({"answer": "\\frac12", "level": "Level 2"})));
        let p = mapping.apply(&row(json!({"problem": "P", "solution": "x", "answer": "7"})), "m#1".into()).unwrap();
        assert_eq!(p.fields["answer"], json!("7"));
    }

    #[test]
    fn countdown_renames_nums_and_builds_the_question() {
        let p =
            Preset::Countdown.mapping().apply(&row(json!({"target": 24, "nums": [2, 3, 4]})), "c#0".into()).unwrap();
        assert_eq!(p.fields, row(json!({"target": 24, "numbers": [2, 3, 4]})));
        assert!(
            p.question.starts_with("Using the numbers [2, 3, 4], create an equation that equals 24."),
            "{}",
            p.question
        );
    }

    #[test]
    fn code_needs_tests_or_asserts() {
        let mapping = Preset::Code.mapping();
        let p =
            mapping.apply(&row(json!({"text": "Write f", "test_list": ["assert f() == 1"]})), "c#0".into()).unwrap();
        assert_eq!(p.fields["asserts"], json!(["assert f() == 1"]));
        let error = mapping.apply(&row(json!({"text": "Write f"})), "c#1".into()).unwrap_err();
        assert_eq!(error, "missing field `tests` or `asserts` (any of them)");
    }

    #[test]
    fn id_column_and_required_fields() {
        let mut mapping = FieldMapping { id: Some("uid".into()), ..FieldMapping::default() };
        mapping.require(&["answer".to_string()]);
        let p = mapping.apply(&row(json!({"uid": 9, "question": "Q", "answer": 3, "x": 1})), "f:1".into()).unwrap();
        assert_eq!((p.id.as_str(), p.fields.clone()), ("9", row(json!({"answer": 3, "x": 1}))));
        assert_eq!(mapping.apply(&row(json!({"question": "Q"})), "f:2".into()).unwrap_err(), "missing field `answer`");
        assert_eq!(
            mapping.apply(&row(json!({"prompt": 5, "answer": 1})), "f:3".into()).unwrap_err(),
            "field `prompt` must be a string, got 5"
        );
    }

    #[test]
    fn presets_parse_by_name() {
        assert_eq!("GSM8K".parse::<Preset>().unwrap(), Preset::Gsm8k);
        assert!("gsm9k".parse::<Preset>().unwrap_err().to_string().contains("one of: gsm8k, math, countdown, code"));
    }
}
