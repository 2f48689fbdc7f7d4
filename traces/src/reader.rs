//! The reading side: read-only connections that never block the writer (WAL).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex::Regex;
use rusqlite::functions::FunctionFlags;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use serde_json::Value;

use crate::schema::{sqlite_error, SCHEMA_VERSION};
use crate::TraceError;

/// The SQL function [`TraceReader::query`] registers for `TraceFilter::text`.
const TEXT_MATCHES: &str = "aha_text_matches";

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
    /// Over the completion text (`is_match`: anywhere in it). SQLite calls this very `Regex`
    /// on each text as it scans, after every other condition, so flags set with a
    /// `RegexBuilder` hold as well as inline ones such as `(?i)`.
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
    /// Tool calls, when some completion of the step made one (`detail.tool_calls`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<ToolStatistics>,
}

/// The tool calls of a step's completions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolStatistics {
    pub calls_per_completion: f64,
    /// The share of completions that made a call.
    pub use_frac: f64,
    /// The share of calls whose status was not `ok`.
    pub error_frac: f64,
    /// Seconds the calls took, summed.
    pub seconds: f64,
}

/// The phrases of self-checking that the R1 paper's "aha moment" is about.
pub const REFLECTION_PHRASES: [&str; 8] =
    ["wait", "let me check", "let me verify", "verify", "re-examine", "recheck", "mistake", "double-check"];

impl TraceReader {
    pub fn open(path: &Path) -> Result<Self, TraceError> {
        if !path.is_file() {
            return Err(TraceError::Store { path: path.to_path_buf(), message: "no trace store here".into() });
        }
        let connection =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(sqlite_error(path))?;
        // A text filter scans every completion (~300 MB for a million): read the pages through a
        // memory map rather than a copy each, and sort the matches in memory. (SQLite caps the map
        // at its compile-time maximum; what is beyond is read as usual.)
        connection
            .execute_batch("PRAGMA mmap_size = 2147483648; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -32768;")
            .map_err(sqlite_error(path))?;
        let version: i64 =
            connection.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sqlite_error(path))?;
        if version != 0 && version != SCHEMA_VERSION {
            return Err(TraceError::Store {
                path: path.to_path_buf(),
                message: format!("schema version {version}; this aha reads version {SCHEMA_VERSION}"),
            });
        }
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

    /// The completions that pass `filter`, by step, group and sample. Every condition is a
    /// term of one SQL statement, so SQLite filters the rows as it scans them and only the
    /// matching ones are sorted and decoded: step, prompt, reward and finish reason on the
    /// indexes, then the checker verdict (`json_extract` on `rewards`), the text regex last
    /// (a Rust function SQLite calls on the raw text, compiled once per query), then `LIMIT`.
    pub fn query(&self, filter: &TraceFilter) -> Result<Vec<CompletionRow>, TraceError> {
        let error = sqlite_error(&self.path);
        // How SQLite walks `completions` when no step range or prompt narrows it (with one, the
        // planner picks the index). With a limit: the step index, in the order of the result, so
        // that it stops at the limit (left to itself, it reads the whole table to sort it).
        // With a regex and no limit, every text is read whatever the plan: the table in storage
        // order is the cheapest way (an index walk seeks each row), and only the matches are
        // sorted (left to itself, it walks the index to save that sort).
        let narrowed = filter.first_step.is_some() || filter.last_step.is_some() || filter.prompt_id.is_some();
        let scan = match (narrowed, filter.limit, &filter.text) {
            (false, Some(_), _) => "INDEXED BY completions_by_step",
            (false, None, Some(_)) => "NOT INDEXED",
            _ => "",
        };
        let mut sql = format!(
            "SELECT c.step, g.group_index, g.prompt_id, g.prompt, g.sample, c.sample_index, c.text, c.tokens, \
             c.finish_reason, c.reward, c.rewards, c.advantage, c.detail \
             FROM completions c {scan} JOIN groups g ON g.id = c.group_id WHERE 1",
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
        if let Some((label, passed)) = &filter.checker_passed {
            // Full marks: the label's reward is a number >= 1 (a missing label or a null reward is not).
            let full_marks = if label.contains(|c: char| c == '"' || c == '\\' || c.is_control()) {
                // A JSON path cannot quote these (the stored key escapes them): look the key up
                // among the object's entries.
                "EXISTS (SELECT 1 FROM json_each(c.rewards) WHERE key = ? AND value >= 1)"
            } else {
                "COALESCE(json_extract(c.rewards, '$.\"' || ? || '\"') >= 1, 0)"
            };
            condition(&format!(" AND {full_marks} = ?"), label.clone().into());
            values.push(i64::from(*passed).into());
        }
        if let Some(regex) = &filter.text {
            // The caller's own `Regex` (with whatever flags it was built), called by SQLite on
            // the text it is scanning: no row is decoded, no String allocated, to test it.
            let regex = regex.clone();
            self.connection
                .create_scalar_function(
                    TEXT_MATCHES,
                    1,
                    FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
                    move |ctx| {
                        Ok(match ctx.get_raw(0) {
                            ValueRef::Text(bytes) => match std::str::from_utf8(bytes) {
                                Ok(text) => regex.is_match(text),
                                Err(_) => regex.is_match(&String::from_utf8_lossy(bytes)),
                            },
                            _ => false,
                        })
                    },
                )
                .map_err(&error)?;
            sql.push_str(&format!(" AND {TEXT_MATCHES}(c.text)"));
        }
        sql.push_str(" ORDER BY c.step, g.group_index, c.sample_index");
        if let Some(limit) = filter.limit {
            sql.push_str(" LIMIT ?");
            values.push((limit.min(i64::MAX as usize) as i64).into());
        }
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
        rows.collect::<Result<_, _>>().map_err(&error)
    }

    /// One prompt across training: its completions at the first, middle and last of the steps
    /// it was sampled at ([`follow_steps`]), step by step. Empty when it never was.
    pub fn follow(&self, prompt_id: &str) -> Result<Vec<(u64, Vec<CompletionRow>)>, TraceError> {
        let steps = self.prompt_steps(prompt_id)?;
        follow_steps(&steps)
            .into_iter()
            .map(|step| {
                let filter = TraceFilter {
                    first_step: Some(step),
                    last_step: Some(step),
                    prompt_id: Some(prompt_id.to_string()),
                    ..Default::default()
                };
                Ok((step, self.query(&filter)?))
            })
            .collect()
    }

    /// The steps at which `prompt_id` was sampled, in order.
    pub fn prompt_steps(&self, prompt_id: &str) -> Result<Vec<u64>, TraceError> {
        let error = sqlite_error(&self.path);
        let mut statement = self
            .connection
            .prepare("SELECT DISTINCT step FROM groups WHERE prompt_id = ?1 ORDER BY step")
            .map_err(&error)?;
        let rows = statement.query_map([prompt_id], |r| Ok(r.get::<_, i64>(0)? as u64)).map_err(&error)?;
        rows.collect::<Result<_, _>>().map_err(&error)
    }

    /// Length, accuracy per checker and the frequency of `phrases`, step by step.
    pub fn statistics(&self, phrases: &[String]) -> Result<Vec<StepStatistics>, TraceError> {
        let error = sqlite_error(&self.path);
        // Every completion is read once, in storage order (cheaper than walking the step index),
        // borrowing each text and rewards object rather than copying them out.
        let mut statement = self
            .connection
            .prepare("SELECT step, tokens, reward, rewards, text, detail FROM completions NOT INDEXED")
            .map_err(&error)?;
        let mut rows = statement.query([]).map_err(&error)?;
        let lowered: Vec<String> = phrases.iter().map(|p| p.to_lowercase()).collect();
        let mut steps: BTreeMap<u64, StepTally> = BTreeMap::new();
        let mut lower = String::new();
        while let Some(row) = rows.next().map_err(&error)? {
            let number = row.get::<_, i64>(0).map_err(&error)? as u64;
            let tally = steps.entry(number).or_insert_with(|| StepTally::new(number, phrases.len()));
            tally.completions += 1;
            tally.tokens += row.get::<_, i64>(1).map_err(&error)? as f64;
            if let Some(reward) = row.get::<_, Option<f64>>(2).map_err(&error)? {
                tally.reward += reward;
                tally.judged += 1;
            }
            let rewards = row.get_ref(3).map_err(&error)?.as_str().unwrap_or("{}");
            // Labels without escapes borrow from the row; any other object is read whole.
            let mut count = |label: &str, reward: Option<f64>| {
                let hit = u64::from(reward.is_some_and(|r| r >= 1.0));
                match tally.full_marks.get_mut(label) {
                    Some(count) => *count += hit,
                    None => {
                        tally.full_marks.insert(label.to_string(), hit);
                    }
                }
            };
            if let Ok(map) = serde_json::from_str::<BTreeMap<&str, Option<f64>>>(rewards) {
                map.into_iter().for_each(|(label, reward)| count(label, reward));
            } else if let Ok(map) = serde_json::from_str::<BTreeMap<String, Option<f64>>>(rewards) {
                map.into_iter().for_each(|(label, reward)| count(&label, reward));
            }
            let text = row.get_ref(4).map_err(&error)?.as_str().unwrap_or("");
            lower.clear();
            if text.is_ascii() {
                lower.push_str(text);
                lower.make_ascii_lowercase();
            } else {
                lower.push_str(&text.to_lowercase());
            }
            for (hits, phrase) in tally.phrase_hits.iter_mut().zip(&lowered) {
                *hits += u64::from(lower.contains(phrase.as_str()));
            }
            // Only a completion that called a tool has them: the rest are not parsed.
            let detail = row.get_ref(5).map_err(&error)?.as_str().unwrap_or("");
            if detail.contains("\"tool_calls\"") {
                if let Ok(detail) = serde_json::from_str::<serde_json::Value>(detail) {
                    let calls = detail.get("tool_calls").and_then(|c| c.as_array()).map_or(&[][..], |c| c.as_slice());
                    tally.tool_users += u64::from(!calls.is_empty());
                    tally.tool_calls += calls.len() as u64;
                    for call in calls {
                        tally.tool_errors += u64::from(call.get("status").and_then(|s| s.as_str()) != Some("ok"));
                        tally.tool_seconds += call.get("seconds").and_then(|s| s.as_f64()).unwrap_or(0.0);
                    }
                }
            }
        }
        Ok(steps.into_values().map(|t| t.finish(phrases)).collect())
    }
}

/// The first, middle (`steps[len / 2]`) and last of `steps` (sorted), each once: what
/// [`TraceReader::follow`] shows.
pub fn follow_steps(steps: &[u64]) -> Vec<u64> {
    let mut picked: Vec<u64> = match steps {
        [] => return Vec::new(),
        [first, .., last] => vec![*first, steps[steps.len() / 2], *last],
        [only] => vec![*only],
    };
    picked.dedup();
    picked
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
    tool_calls: u64,
    tool_users: u64,
    tool_errors: u64,
    tool_seconds: f64,
}

impl StepTally {
    fn new(step: u64, phrases: usize) -> Self {
        Self {
            step,
            completions: 0,
            tokens: 0.0,
            reward: 0.0,
            judged: 0,
            full_marks: BTreeMap::new(),
            phrase_hits: vec![0; phrases],
            tool_calls: 0,
            tool_users: 0,
            tool_errors: 0,
            tool_seconds: 0.0,
        }
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
            tools: (self.tool_calls > 0).then(|| ToolStatistics {
                calls_per_completion: self.tool_calls as f64 / n,
                use_frac: self.tool_users as f64 / n,
                error_frac: self.tool_errors as f64 / self.tool_calls as f64,
                seconds: self.tool_seconds,
            }),
        }
    }
}
