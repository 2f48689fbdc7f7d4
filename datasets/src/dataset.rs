//! Loading problem sets from local files (JSONL, JSON arrays, Parquet), and the deterministic
//! things done with them: shuffling, train/eval splits, epochs.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value};

use crate::error::{DatasetError, Result, Row, RowLocation};
use crate::mapping::FieldMapping;
use crate::problem::Problem;

/// How to load a file.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub mapping: FieldMapping,
    /// A row that cannot become a problem is an error instead of a skipped row.
    pub strict: bool,
    /// Stop after this many problems.
    pub limit: Option<usize>,
}

/// A row that was left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub location: RowLocation,
    pub reason: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} (skipped)", self.location, self.reason)
    }
}

/// Problems, in file order unless shuffled, and the rows that were skipped while loading.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dataset {
    pub problems: Vec<Problem>,
    pub skipped: Vec<Skipped>,
}

/// The file formats, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line (`.jsonl`, `.ndjson`); blank lines are ignored.
    JsonLines,
    /// One JSON array of objects (`.json`).
    JsonArray,
    /// Apache Parquet (`.parquet`), read row by row; columns become JSON values (lists become
    /// arrays, structs objects).
    Parquet,
}

impl Format {
    pub fn of(path: &Path) -> Result<Self> {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("jsonl" | "ndjson") => Ok(Format::JsonLines),
            Some("json") => Ok(Format::JsonArray),
            Some("parquet") => Ok(Format::Parquet),
            _ => Err(DatasetError::File {
                path: path.to_path_buf(),
                message: "unknown file type (expected .jsonl, .json or .parquet)".into(),
            }),
        }
    }
}

/// How much of a dataset goes to evaluation in [`Dataset::split`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SplitSize {
    /// A fraction in [0, 1] of the problems (rounded to the nearest count).
    Fraction(f64),
    Count(usize),
}

impl Dataset {
    pub fn from_problems(problems: Vec<Problem>) -> Self {
        Dataset { problems, skipped: Vec::new() }
    }

    /// Why a dataset has no problems, for the error that says so: no rows at all, or how many
    /// were skipped and the first few reasons.
    pub fn why_empty(&self) -> String {
        const SHOWN: usize = 3;
        if self.skipped.is_empty() {
            return "no rows".into();
        }
        let first: Vec<String> =
            self.skipped.iter().take(SHOWN).map(|s| format!("{}: {}", s.location, s.reason)).collect();
        format!("all {} rows were skipped; first: {}", self.skipped.len(), first.join("; "))
    }

    /// Reads `path` (format by extension) and maps each row to a problem. Rows that cannot be
    /// problems (not JSON, not an object, a missing or malformed field) are skipped and listed
    /// in `skipped`, or, with `options.strict`, are an error naming the row.
    pub fn load(path: &Path, options: &LoadOptions) -> Result<Self> {
        let mut dataset = Dataset::default();
        let mut add = |location: RowLocation, row: std::result::Result<Map<String, Value>, String>| -> Result<bool> {
            let problem = row.and_then(|row| options.mapping.apply(&row, location.id()));
            match problem {
                Ok(problem) => dataset.problems.push(problem),
                Err(message) if options.strict => return Err(DatasetError::Row { location, message }),
                Err(reason) => dataset.skipped.push(Skipped { location, reason }),
            }
            Ok(options.limit.is_none_or(|limit| dataset.problems.len() < limit))
        };
        let at = |row: Row| RowLocation { path: path.to_path_buf(), row };
        let io_error = |error| DatasetError::Io { path: path.to_path_buf(), error };
        match Format::of(path)? {
            Format::JsonLines => {
                let reader = BufReader::new(File::open(path).map_err(io_error)?);
                for (index, line) in reader.lines().enumerate() {
                    let line = line.map_err(io_error)?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    let row = serde_json::from_str::<Value>(&line)
                        .map_err(|e| format!("not JSON ({e})"))
                        .and_then(into_object);
                    if !add(at(Row::Line(index + 1)), row)? {
                        break;
                    }
                }
            }
            Format::JsonArray => {
                let text = std::fs::read_to_string(path).map_err(io_error)?;
                let rows = match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Array(rows)) => rows,
                    Ok(_) => return Err(file_error(path, "expected a JSON array of objects")),
                    Err(e) => return Err(file_error(path, &format!("not JSON ({e})"))),
                };
                for (index, row) in rows.into_iter().enumerate() {
                    if !add(at(Row::Index(index)), into_object(row))? {
                        break;
                    }
                }
            }
            Format::Parquet => {
                use parquet::file::reader::{FileReader, SerializedFileReader};
                let file = File::open(path).map_err(io_error)?;
                let reader =
                    SerializedFileReader::new(file).map_err(|e| file_error(path, &format!("not Parquet ({e})")))?;
                let rows = reader.get_row_iter(None).map_err(|e| file_error(path, &e.to_string()))?;
                for (index, row) in rows.enumerate() {
                    let row = row.map_err(|e| file_error(path, &format!("row {index}: {e}")))?;
                    if !add(at(Row::Index(index)), into_object(row.to_json_value()))? {
                        break;
                    }
                }
            }
        }
        Ok(dataset)
    }

    pub fn len(&self) -> usize {
        self.problems.len()
    }

    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    /// The problems whose question is not also one of `held_out`'s, and how many were left out:
    /// an evaluation set is never trained on (random built-in tasks can draw a problem twice).
    pub fn without_questions_of(self, held_out: &Dataset) -> (Dataset, usize) {
        let questions: std::collections::HashSet<&str> =
            held_out.problems.iter().map(|p| p.question.as_str()).collect();
        let before = self.problems.len();
        let problems: Vec<Problem> =
            self.problems.into_iter().filter(|p| !questions.contains(p.question.as_str())).collect();
        let left_out = before - problems.len();
        (Dataset { problems, skipped: self.skipped }, left_out)
    }

    /// Shuffles the problems in place, the same way for the same seed (ChaCha8).
    pub fn shuffle(&mut self, seed: u64) {
        self.problems.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    }

    /// Splits into (train, eval): `eval` problems drawn at random from the seed, both parts kept
    /// in their original order. The same seed and size give the same split whatever the
    /// shuffling done later.
    pub fn split(self, eval: SplitSize, seed: u64) -> Result<(Dataset, Dataset)> {
        let n = self.problems.len();
        let eval_count = match eval {
            SplitSize::Fraction(f) if (0.0..=1.0).contains(&f) => (f * n as f64).round() as usize,
            SplitSize::Fraction(f) => {
                return Err(DatasetError::Invalid(format!("eval fraction must be in [0, 1], got {f}")))
            }
            SplitSize::Count(c) if c <= n => c,
            SplitSize::Count(c) => {
                return Err(DatasetError::Invalid(format!("eval size {c} is larger than the dataset ({n} problems)")))
            }
        };
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let mut in_eval = vec![false; n];
        for &i in &order[..eval_count] {
            in_eval[i] = true;
        }
        let (mut train, mut test) = (Vec::with_capacity(n - eval_count), Vec::with_capacity(eval_count));
        for (problem, is_eval) in self.problems.into_iter().zip(in_eval) {
            if is_eval { &mut test } else { &mut train }.push(problem);
        }
        Ok((Dataset { problems: train, skipped: self.skipped }, Dataset::from_problems(test)))
    }

    /// Endless passes over the problems, each epoch in a new order drawn from (seed, epoch).
    /// Empty when the dataset is.
    pub fn epochs(&self, seed: u64) -> Epochs<'_> {
        Epochs { problems: &self.problems, seed, epoch: 0, order: Vec::new(), position: 0 }
    }
}

/// The iterator of [`Dataset::epochs`]: yields `(epoch, problem)`, epoch 0 first.
#[derive(Debug, Clone)]
pub struct Epochs<'a> {
    problems: &'a [Problem],
    seed: u64,
    epoch: u64,
    order: Vec<usize>,
    position: usize,
}

impl Epochs<'_> {
    /// The epoch the next problem belongs to.
    pub fn epoch(&self) -> u64 {
        if self.position < self.order.len() || self.order.is_empty() {
            self.epoch
        } else {
            self.epoch + 1
        }
    }
}

impl<'a> Iterator for Epochs<'a> {
    type Item = (u64, &'a Problem);

    fn next(&mut self) -> Option<Self::Item> {
        if self.problems.is_empty() {
            return None;
        }
        if self.order.is_empty() || self.position == self.order.len() {
            if !self.order.is_empty() {
                self.epoch += 1;
            }
            self.order = epoch_order(self.problems.len(), self.seed, self.epoch);
            self.position = 0;
        }
        let problem = &self.problems[self.order[self.position]];
        self.position += 1;
        Some((self.epoch, problem))
    }
}

/// The order in which [`Dataset::epochs`] visits `len` items in epoch `epoch` (0-based): a
/// permutation drawn from (seed, epoch), for other item lists (`aha sft`'s examples) that should
/// be visited the same way, and can jump straight to any epoch.
pub fn epoch_order(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch);
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut rng);
    order
}

fn into_object(value: Value) -> std::result::Result<Map<String, Value>, String> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(format!("not a JSON object (got {})", kind(&other))),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn file_error(path: &Path, message: &str) -> DatasetError {
    DatasetError::File { path: PathBuf::from(path), message: message.to_string() }
}
