//! [`Problem`]: one question and the fields a reward checker judges its completions against.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A problem as every stage after loading sees it.
///
/// `sample` holds the fields the checkers read, under the names they read them: `answer` (math),
/// `target` and `numbers` (countdown), `tests` and/or `asserts` (code), plus whatever other
/// columns the mapping kept (custom checkers receive them too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    pub id: String,
    pub question: String,
    pub sample: Map<String, Value>,
}

impl Problem {
    /// The gold answer as text, when the sample has one (`answer`, a string or a number).
    pub fn answer(&self) -> Option<String> {
        match self.sample.get("answer")? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }
}
