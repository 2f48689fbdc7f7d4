//! Where a run's problems come from and how each becomes the text the model continues: the one
//! place `aha train` and `aha eval` both read `[data]`-style settings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aha_model::{ChatTemplate, Message};

use crate::dataset::{Dataset, LoadOptions};
use crate::error::{DatasetError, Result};
use crate::mapping::{AnswerSource, Preset};
use crate::problem::Problem;
use crate::synthetic::BuiltinSpec;
use crate::template::PromptTemplate;

/// A problem file or a built-in task, with how to read it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProblemSource {
    /// A .jsonl / .json / .parquet file, or `builtin:NAME[:key=value,...]`.
    pub source: String,
    /// The file's shape (`gsm8k`, `math`, `countdown`, `code`); files only.
    pub preset: Option<String>,
    /// Column overrides, problem field -> column: `question`, `answer`, `id`, or any problem field.
    pub fields: BTreeMap<String, String>,
    /// A row that cannot be a problem is an error instead of a skipped row.
    pub strict: bool,
    /// At most this many problems.
    pub limit: Option<usize>,
}

impl ProblemSource {
    /// True for a built-in task.
    pub fn is_builtin(&self) -> bool {
        BuiltinSpec::matches(&self.source)
    }

    /// The checker that judges these problems unless told otherwise: the built-in task's or the
    /// preset's.
    pub fn default_checker(&self) -> Result<Option<&'static str>> {
        if self.is_builtin() {
            return Ok(Some(self.source.parse::<BuiltinSpec>()?.task.checker()));
        }
        Ok(self.preset.as_deref().map(str::parse::<Preset>).transpose()?.map(Preset::checker))
    }

    /// The problems. Rows lacking one of `required_fields` (what the checkers read) are skipped
    /// and listed in `Dataset::skipped` (or are errors, when strict). A built-in task without its
    /// own `seed=` is generated from `default_seed`.
    pub fn load(&self, required_fields: &[String], default_seed: u64) -> Result<Dataset> {
        if self.is_builtin() {
            if self.preset.is_some() || !self.fields.is_empty() {
                return Err(DatasetError::Invalid(format!(
                    "{}: a preset and field overrides apply to files, not to built-in tasks",
                    self.source
                )));
            }
            let spec: BuiltinSpec = self.source.parse()?;
            let mut problems = spec.generate(default_seed)?;
            if let Some(limit) = self.limit {
                problems.truncate(limit);
            }
            return Ok(Dataset::from_problems(problems));
        }
        let preset = self.preset.as_deref().map(str::parse::<Preset>).transpose()?;
        let mut mapping = preset.map(Preset::mapping).unwrap_or_default();
        for (field, column) in &self.fields {
            match field.as_str() {
                "question" => mapping.question = vec![column.clone()],
                "answer" => {
                    let format = mapping.answer.first().map(|a| a.format).unwrap_or_default();
                    mapping.answer = vec![AnswerSource::new(column, format)];
                }
                "id" => mapping.id = Some(column.clone()),
                _ => {
                    mapping.fields.insert(field.clone(), vec![column.clone()]);
                }
            }
        }
        mapping.require(required_fields);
        let path = PathBuf::from(&self.source);
        Dataset::load(&path, &LoadOptions { mapping, strict: self.strict, limit: self.limit })
    }
}

/// A prompt template, optionally wrapped in the model's chat template.
pub struct Prompter {
    template: PromptTemplate,
    chat: Option<ChatTemplate>,
}

impl Prompter {
    /// `spec`: `r1`, `boxed`, `plain`, template text with `{question}` (and other `{field}`s),
    /// `@FILE` for a template file, or `chat` / `chat:NAME`: the chat template of the model in
    /// `model_dir` (with the generation prompt) around the `boxed` (or NAME) prompt as the user
    /// message.
    pub fn new(spec: &str, model_dir: &Path) -> Result<Self> {
        let (inner, chat) = match spec.strip_prefix("chat") {
            Some("") => ("boxed", true),
            Some(rest) if rest.starts_with(':') => (&rest[1..], true),
            _ => (spec, false),
        };
        let template = match inner.strip_prefix('@') {
            Some(path) => PromptTemplate::new(
                &std::fs::read_to_string(path).map_err(|error| DatasetError::Io { path: path.into(), error })?,
            ),
            None => PromptTemplate::from_name_or_text(inner)?,
        };
        let chat = if chat {
            Some(ChatTemplate::from_dir(model_dir).map_err(|e| DatasetError::Template(e.to_string()))?)
        } else {
            None
        };
        Ok(Prompter { template, chat })
    }

    pub fn render(&self, problem: &Problem) -> Result<String> {
        let text = self.template.render(problem)?;
        Ok(match &self.chat {
            Some(chat) => {
                chat.render(&[Message::user(text)], true).map_err(|e| DatasetError::Template(e.to_string()))?
            }
            None => text,
        })
    }
}
