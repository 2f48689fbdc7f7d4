//! [`Problem`]: one question and the fields a reward checker judges its completions against.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A problem as every stage after loading sees it.
///
/// `fields` holds the fields the checkers read, under the names they read them: `answer` (math),
/// `target` and `numbers` (countdown), `tests` and/or `asserts` (code), plus whatever other
/// columns the mapping kept (custom checkers receive them too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    pub id: String,
    pub question: String,
    /// (Serialized as `sample`, the name the trace store and the `python` plug-in give it.)
    #[serde(rename = "sample")]
    pub fields: Map<String, Value>,
}

impl Problem {
    /// The gold answer as text, when the fields have one (`answer`, a string or a number).
    pub fn answer(&self) -> Option<String> {
        match self.fields.get("answer")? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }
}
