//! The reading side: read-only connections that never block the writer (WAL).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex::Regex;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use serde_json::Value;

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

/// One stored completion with its prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompletionRow {
    pub step: u64,
    pub group_index: u64,
    pub prompt_id: String,
    pub prompt: String,
    /// The problem's fields (JSON).
    pub sample: Value,
    pub sample_index: u32,
    pub text: String,
    pub tokens: u32,
    pub finish_reason: String,
    pub reward: Option<f64>,
    pub rewards: BTreeMap<String, Option<f64>>,
    pub advantage: Option<f64>,
    pub detail: Value,
}

/// Which completions a query returns; every condition that is set must hold.
#[derive(Debug, Clone, Default)]
pub struct TraceFilter {
    pub first_step: Option<u64>,
    pub last_step: Option<u64>,
    pub prompt_id: Option<String>,
    pub min_reward: Option<f64>,
    pub max_reward: Option<f64>,
    /// `stop` or `length`.
    pub finish_reason: Option<String>,
    /// Over the completion text.
    pub text: Option<Regex>,
    /// A checker's label and whether it must have given full marks (reward >= 1) or not.
    pub checker_passed: Option<(String, bool)>,
    /// At most this many rows (after every condition).
    pub limit: Option<usize>,
}

/// Per-step statistics for reading a run: how long, how right, how reflective.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepStatistics {
    pub step: u64,
    pub completions: u64,
    pub tokens_mean: f64,
    pub reward_mean: Option<f64>,
    /// Per checker label: the share of completions it gave full marks (reward >= 1).
    pub accuracy: BTreeMap<String, f64>,
    /// Per phrase: the share of completions containing it (case-insensitive).
    pub phrases: BTreeMap<String, f64>,
}

/// The phrases of self-checking that the R1 paper's "aha moment" is about.
pub const REFLECTION_PHRASES: [&str; 8] =
    ["wait", "let me check", "let me verify", "verify", "re-examine", "recheck", "mistake", "double-check"];

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
        self.query(&TraceFilter { first_step: Some(step), last_step: Some(step), ..Default::default() })
    }

    /// The completions that pass `filter`, by step, group and sample. Step, prompt, reward and
    /// finish reason are filtered by SQLite on its indexes; the text and checker conditions on
    /// the rows that remain.
    pub fn query(&self, filter: &TraceFilter) -> Result<Vec<CompletionRow>, TraceError> {
        let error = sqlite_error(&self.path);
        let mut sql = String::from(
            "SELECT c.step, g.group_index, g.prompt_id, g.prompt, g.sample, c.sample_index, c.text, c.tokens, \
             c.finish_reason, c.reward, c.rewards, c.advantage, c.detail \
             FROM completions c JOIN groups g ON g.id = c.group_id WHERE 1",
        );
        let mut values: Vec<rusqlite::types::Value> = Vec::new();
        let mut condition = |clause: &str, value: rusqlite::types::Value| {
            sql.push_str(clause);
            values.push(value);
        };
        if let Some(step) = filter.first_step {
            condition(" AND c.step >= ?", (step as i64).into());
        }
        if let Some(step) = filter.last_step {
            condition(" AND c.step <= ?", (step as i64).into());
        }
        if let Some(id) = &filter.prompt_id {
            condition(" AND g.prompt_id = ?", id.clone().into());
        }
        if let Some(reward) = filter.min_reward {
            condition(" AND c.reward >= ?", reward.into());
        }
        if let Some(reward) = filter.max_reward {
            condition(" AND c.reward <= ?", reward.into());
        }
        if let Some(reason) = &filter.finish_reason {
            condition(" AND c.finish_reason = ?", reason.clone().into());
        }
        sql.push_str(" ORDER BY c.step, g.group_index, c.sample_index");
        let mut statement = self.connection.prepare(&sql).map_err(&error)?;
        let json = |text: String| serde_json::from_str(&text).unwrap_or(Value::String(text));
        let rows = statement
            .query_map(rusqlite::params_from_iter(values), |r| {
                let rewards: String = r.get(10)?;
                Ok(CompletionRow {
                    step: r.get::<_, i64>(0)? as u64,
                    group_index: r.get::<_, i64>(1)? as u64,
                    prompt_id: r.get(2)?,
                    prompt: r.get(3)?,
                    sample: json(r.get(4)?),
                    sample_index: r.get(5)?,
                    text: r.get(6)?,
                    tokens: r.get(7)?,
                    finish_reason: r.get(8)?,
                    reward: r.get(9)?,
                    rewards: serde_json::from_str(&rewards).unwrap_or_default(),
                    advantage: r.get(11)?,
                    detail: json(r.get(12)?),
                })
            })
            .map_err(&error)?;
        let mut out = Vec::new();
        for row in rows {
            let row = row.map_err(&error)?;
            if filter.text.as_ref().is_some_and(|re| !re.is_match(&row.text)) {
                continue;
            }
            if let Some((label, passed)) = &filter.checker_passed {
                let full_marks = row.rewards.get(label).copied().flatten().is_some_and(|r| r >= 1.0);
                if full_marks != *passed {
                    continue;
                }
            }
            out.push(row);
            if filter.limit.is_some_and(|limit| out.len() >= limit) {
                break;
            }
        }
        Ok(out)
    }

    /// The steps at which `prompt_id` was sampled, in order.
    pub fn prompt_steps(&self, prompt_id: &str) -> Result<Vec<u64>, TraceError> {
        let error = sqlite_error(&self.path);
        let mut statement =
            self.connection.prepare("SELECT DISTINCT step FROM groups WHERE prompt_id = ?1 ORDER BY step").map_err(&error)?;
        let rows = statement.query_map([prompt_id], |r| Ok(r.get::<_, i64>(0)? as u64)).map_err(&error)?;
        rows.collect::<Result<_, _>>().map_err(&error)
    }

    /// Length, accuracy per checker and the frequency of `phrases`, step by step.
    pub fn statistics(&self, phrases: &[String]) -> Result<Vec<StepStatistics>, TraceError> {
        let error = sqlite_error(&self.path);
        let mut statement = self
            .connection
            .prepare("SELECT step, tokens, reward, rewards, text FROM completions ORDER BY step")
            .map_err(&error)?;
        let mut rows = statement.query([]).map_err(&error)?;
        let lowered: Vec<String> = phrases.iter().map(|p| p.to_lowercase()).collect();
        let mut out = Vec::new();
        let mut step: Option<StepTally> = None;
        while let Some(row) = rows.next().map_err(&error)? {
            let number = row.get::<_, i64>(0).map_err(&error)? as u64;
            if step.as_ref().is_none_or(|t| t.step != number) {
                out.extend(step.take().map(|t| t.finish(phrases)));
                step = Some(StepTally::new(number, phrases.len()));
            }
            let tally = step.as_mut().expect("set above");
            tally.completions += 1;
            tally.tokens += row.get::<_, i64>(1).map_err(&error)? as f64;
            if let Some(reward) = row.get::<_, Option<f64>>(2).map_err(&error)? {
                tally.reward += reward;
                tally.judged += 1;
            }
            let rewards: BTreeMap<String, Option<f64>> =
                serde_json::from_str(&row.get::<_, String>(3).map_err(&error)?).unwrap_or_default();
            for (label, reward) in rewards {
                *tally.full_marks.entry(label).or_default() += u64::from(reward.is_some_and(|r| r >= 1.0));
            }
            let text = row.get::<_, String>(4).map_err(&error)?.to_lowercase();
            for (hits, phrase) in tally.phrase_hits.iter_mut().zip(&lowered) {
                *hits += u64::from(text.contains(phrase.as_str()));
            }
        }
        out.extend(step.map(|t| t.finish(phrases)));
        Ok(out)
    }
}

/// Running sums of one step for [`TraceReader::statistics`].
struct StepTally {
    step: u64,
    completions: u64,
    tokens: f64,
    reward: f64,
    judged: u64,
    full_marks: BTreeMap<String, u64>,
    phrase_hits: Vec<u64>,
}

impl StepTally {
    fn new(step: u64, phrases: usize) -> Self {
        Self { step, completions: 0, tokens: 0.0, reward: 0.0, judged: 0, full_marks: BTreeMap::new(), phrase_hits: vec![0; phrases] }
    }

    fn finish(self, phrases: &[String]) -> StepStatistics {
        let n = self.completions.max(1) as f64;
        StepStatistics {
            step: self.step,
            completions: self.completions,
            tokens_mean: self.tokens / n,
            reward_mean: (self.judged > 0).then(|| self.reward / self.judged as f64),
            accuracy: self.full_marks.into_iter().map(|(label, c)| (label, c as f64 / n)).collect(),
            phrases: phrases.iter().cloned().zip(self.phrase_hits.iter().map(|&h| h as f64 / n)).collect(),
        }
    }
}
