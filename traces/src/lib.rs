//! aha-traces: the trace store of a training run.
//!
//! Every group a run samples is kept: the prompt, each completion's text, length, finish reason,
//! total and per-checker rewards, the checkers' details and the advantage it was trained with,
//! keyed by step. It lives in one SQLite file (`traces.sqlite` in the run directory) in WAL mode,
//! so readers (`aha traces`, `aha report`) query it while the trainer writes.
//!
//! What it does: [`render_report`] (the self-contained HTML report of `aha report`),
//! [`TraceWriter`] (a thread that owns the write connection and takes whole steps
//! through a channel, so the model thread never waits on disk), [`TraceReader`] (read-only
//! queries), [`layout`] (wrapping and columns for a terminal), and the plain records
//! [`TraceGroup`] / [`TraceCompletion`].
//! What it does not: know about tensors, models or checkers; it stores what it is given.

pub mod layout;
mod reader;
mod report;
mod schema;
mod writer;

pub use reader::{
    follow_steps, CompletionRow, StepStatistics, StepSummary, ToolStatistics, TraceFilter, TraceReader,
    REFLECTION_PHRASES,
};
pub use report::render_report;
pub use schema::SCHEMA_VERSION;
pub use writer::TraceWriter;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The file name of the store inside a run directory.
pub const TRACE_FILE: &str = "traces.sqlite";

/// One prompt of one step and its completions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceGroup {
    pub step: u64,
    /// The group's position in the run's sampling history.
    pub index: u64,
    pub prompt_id: String,
    pub prompt: String,
    /// The problem's fields (answer, tests, ...), as the checkers saw them.
    pub sample: Value,
    pub completions: Vec<TraceCompletion>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceCompletion {
    pub text: String,
    pub tokens: u32,
    /// `stop` or `length`.
    pub finish_reason: String,
    /// The weighted total; `None` when a checker could not judge the problem.
    pub reward: Option<f64>,
    pub rewards: BTreeMap<String, Option<f64>>,
    /// The advantage the trainer used; `None` when the group was not trained on.
    pub advantage: Option<f64>,
    pub detail: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("trace store {path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("trace store {path}: {message}")]
    Store { path: PathBuf, message: String },
}
