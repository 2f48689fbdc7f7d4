//! The reading side: read-only connections that never block the writer (WAL).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::schema::sqlite_error;
use crate::TraceError;

pub struct TraceReader {
    path: PathBuf,
    connection: Connection,
}

/// Per-step aggregates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepSummary {
    pub step: u64,
    pub groups: u64,
    pub completions: u64,
    pub reward_mean: Option<f64>,
    pub tokens_mean: f64,
    pub truncated: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompletionRow {
    pub step: u64,
    pub prompt_id: String,
    pub sample_index: u32,
    pub text: String,
    pub tokens: u32,
    pub finish_reason: String,
    pub reward: Option<f64>,
    pub advantage: Option<f64>,
}

impl TraceReader {
    pub fn open(path: &Path) -> Result<Self, TraceError> {
        if !path.is_file() {
            return Err(TraceError::Store { path: path.to_path_buf(), message: "no trace store here".into() });
        }
        let connection = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(sqlite_error(path))?;
        Ok(Self { path: path.to_path_buf(), connection })
    }

    pub fn steps(&self) -> Result<Vec<StepSummary>, TraceError> {
        let error = sqlite_error(&self.path);
        let mut statement = self
            .connection
            .prepare(
                "SELECT step, COUNT(DISTINCT group_id), COUNT(*), AVG(reward), AVG(tokens), \
                 SUM(finish_reason = 'length') FROM completions GROUP BY step ORDER BY step",
            )
            .map_err(&error)?;
        let rows = statement
            .query_map([], |r| {
                Ok(StepSummary {
                    step: r.get::<_, i64>(0)? as u64,
                    groups: r.get::<_, i64>(1)? as u64,
                    completions: r.get::<_, i64>(2)? as u64,
                    reward_mean: r.get(3)?,
                    tokens_mean: r.get(4)?,
                    truncated: r.get::<_, i64>(5)? as u64,
                })
            })
            .map_err(&error)?;
        rows.collect::<Result<_, _>>().map_err(&error)
    }

    /// The completions of one step, in group then sample order.
    pub fn completions(&self, step: u64) -> Result<Vec<CompletionRow>, TraceError> {
        let error = sqlite_error(&self.path);
        let mut statement = self
            .connection
            .prepare(
                "SELECT c.step, g.prompt_id, c.sample_index, c.text, c.tokens, c.finish_reason, c.reward, c.advantage \
                 FROM completions c JOIN groups g ON g.id = c.group_id WHERE c.step = ?1 ORDER BY g.group_index, c.sample_index",
            )
            .map_err(&error)?;
        let rows = statement
            .query_map([step as i64], |r| {
                Ok(CompletionRow {
                    step: r.get::<_, i64>(0)? as u64,
                    prompt_id: r.get(1)?,
                    sample_index: r.get(2)?,
                    text: r.get(3)?,
                    tokens: r.get(4)?,
                    finish_reason: r.get(5)?,
                    reward: r.get(6)?,
                    advantage: r.get(7)?,
                })
            })
            .map_err(&error)?;
        rows.collect::<Result<_, _>>().map_err(&error)
    }
}
