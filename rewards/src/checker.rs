//! The [`Checker`] trait and the [`Verdict`] it returns.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A problem's fields (for example `answer`, `target`, `numbers`), as one JSON object: what a
/// checker judges a completion against. (The `python` plug-in receives them as `sample`, and the
/// trace store keeps them in the column `sample`; in aha's Rust code "sample" means drawing.)
///
/// The completion itself is passed separately; the fields may include any extra ones (the CLI passes
/// the whole input line, `completion` included, and checkers ignore what they do not read).
pub type ProblemFields = Map<String, Value>;

/// What a checker concluded about one completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Score {
    /// The completion was judged. The range is the checker's own (documented on each checker):
    /// `[0, 1]` for math, countdown and format, `[-1, 0]` for length.
    Reward { reward: f64 },
    /// The *problem* cannot be judged (a gold answer that does not parse, a malformed target).
    /// A skipped sample must carry no learning signal; it is never scored as correct.
    Skip { reason: String },
}

/// A score plus a structured, serialisable account of how it was reached (what was extracted,
/// how it parsed, why it failed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    #[serde(flatten)]
    pub score: Score,
    pub detail: Value,
}

impl Verdict {
    pub fn reward(reward: f64, detail: Value) -> Self {
        Verdict { score: Score::Reward { reward }, detail }
    }

    pub fn skip(reason: impl Into<String>, detail: Value) -> Self {
        Verdict { score: Score::Skip { reason: reason.into() }, detail }
    }

    /// The reward, or `None` when the sample was skipped.
    pub fn reward_value(&self) -> Option<f64> {
        match self.score {
            Score::Reward { reward } => Some(reward),
            Score::Skip { .. } => None,
        }
    }

    pub fn is_skip(&self) -> bool {
        matches!(self.score, Score::Skip { .. })
    }
}

/// The input itself is unusable: a field the checker needs is missing or has the wrong JSON type.
///
/// This is different from [`Score::Skip`]: a skip is a *problem* that cannot be judged (its gold
/// answer does not parse), an error is a *caller* mistake (the field is not there at all) and the
/// CLI reports it with the line number.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CheckError {
    #[error("missing field `{field}`")]
    MissingField { field: String },
    #[error("field `{field}` must be {expected}")]
    BadField { field: String, expected: String },
}

impl CheckError {
    /// The field the error is about.
    pub fn field(&self) -> &str {
        match self {
            CheckError::MissingField { field } | CheckError::BadField { field, .. } => field,
        }
    }
}

/// A verifiable reward: judge one completion against its problem's fields.
///
/// Implementations must be cheap to call from many threads at once (`Send + Sync`, `&self`), must
/// never panic whatever the completion contains, and must take bounded time on any input.
pub trait Checker: Send + Sync {
    /// The name it is registered under (`math`, `countdown`, ...).
    fn name(&self) -> &str;

    /// The problem fields it reads; a missing one is a [`CheckError::MissingField`].
    fn required_fields(&self) -> Vec<String> {
        Vec::new()
    }

    fn check(&self, completion: &str, fields: &ProblemFields) -> Result<Verdict, CheckError>;
}

/// The field `name`, or a [`CheckError::MissingField`].
pub fn field<'a>(fields: &'a ProblemFields, name: &str) -> Result<&'a Value, CheckError> {
    match fields.get(name) {
        Some(Value::Null) | None => Err(CheckError::MissingField { field: name.to_string() }),
        Some(value) => Ok(value),
    }
}
