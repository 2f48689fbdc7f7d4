//! `aha reward`: score JSON lines with a checker (or a weighted combination), in parallel, in order.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{Map, Value};

use aha_rewards::{Checker, Registry, RewardConfig, Score};

#[derive(Args)]
pub struct RewardArgs {
    /// The checker: math, countdown, format, format_tags, length, code, python or wasi (the last
    /// two need options: use --config). With --config, the entry of that name (or label) in the
    /// file supplies its options.
    #[arg(long)]
    checker: Option<String>,
    /// A reward config, JSON or TOML (by extension): {"checkers": [{"name", "weight", "options",
    /// "label"}]}. Without --checker, the weighted combination of all its entries is scored.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    jobs: Option<usize>,
}

/// Lines scored together; each batch is written, in order, before the next is read.
const BATCH: usize = 512;

pub fn run(args: RewardArgs) -> Result<()> {
    let checker = build_checker(&args)?;
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).max(1);
    let stdin = std::io::stdin().lock();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut batch: Vec<(usize, String)> = Vec::with_capacity(BATCH);
    for (index, line) in stdin.lines().enumerate() {
        let line = match line {
            Ok(line) => line,
            Err(error) => {
                // As for any other bad line: every line before it is written first.
                score_batch(&*checker, &batch, jobs, &mut out)?;
                out.flush()?;
                let what =
                    if error.kind() == std::io::ErrorKind::InvalidData { "not UTF-8 text" } else { "unreadable" };
                bail!("stdin line {}: {what} ({error})", index + 1);
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        batch.push((index + 1, line));
        if batch.len() == BATCH {
            score_batch(&*checker, &batch, jobs, &mut out)?;
            batch.clear();
        }
    }
    score_batch(&*checker, &batch, jobs, &mut out)?;
    out.flush()?;
    Ok(())
}

fn build_checker(args: &RewardArgs) -> Result<Box<dyn Checker>> {
    let registry = Registry::with_builtins();
    let config = match &args.config {
        Some(path) => Some(read_config(path)?),
        None => None,
    };
    Ok(match (&args.checker, config) {
        (Some(name), None) => registry.build(name, &Value::Null)?,
        (Some(name), Some(config)) => {
            let spec = config
                .checkers
                .iter()
                .find(|s| s.label.as_deref() == Some(name.as_str()) || &s.name == name)
                .with_context(|| format!("{}: no checker `{name}` in the config", path_of(args)))?;
            registry.build(&spec.name, &spec.options).with_context(|| path_of(args))?
        }
        (None, Some(config)) => Box::new(registry.build_combined(&config).with_context(|| path_of(args))?),
        (None, None) => bail!("give --checker NAME (one of: {}) or --config FILE", registry.names().join(", ")),
    })
}

fn path_of(args: &RewardArgs) -> String {
    args.config.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
}

fn read_config(path: &PathBuf) -> Result<RewardConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "toml") {
        toml::from_str(&text).with_context(|| format!("{}: not a reward config", path.display()))
    } else {
        serde_json::from_str(&text).with_context(|| format!("{}: not a reward config", path.display()))
    }
}

/// Scores `batch` on `jobs` threads and writes the results in input order. On the first bad
/// line, every line before it is written and the error names that line (and the field).
fn score_batch(checker: &dyn Checker, batch: &[(usize, String)], jobs: usize, out: &mut impl Write) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let chunk = batch.len().div_ceil(jobs);
    let results: Vec<Result<String, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = batch
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || part.iter().map(|(n, line)| score_line(checker, *n, line)).collect::<Vec<_>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a reward worker panicked")).collect()
    });
    for result in results {
        match result {
            Ok(line) => writeln!(out, "{line}")?,
            Err(message) => {
                out.flush()?;
                bail!(message);
            }
        }
    }
    Ok(())
}

fn score_line(checker: &dyn Checker, number: usize, line: &str) -> Result<String, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("stdin line {number}: not JSON ({e})"))?;
    let Value::Object(mut object) = value else {
        return Err(format!("stdin line {number}: not a JSON object"));
    };
    let completion = match object.get("completion") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(format!("stdin line {number}: field `completion` must be a string")),
        None => return Err(format!("stdin line {number}: missing field `completion`")),
    };
    let verdict = checker.check(&completion, &object).map_err(|e| format!("stdin line {number}: {e}"))?;
    add_verdict(&mut object, verdict.score, verdict.detail);
    Ok(Value::Object(object).to_string())
}

fn add_verdict(object: &mut Map<String, Value>, score: Score, detail: Value) {
    match score {
        Score::Reward { reward } => {
            object.insert("reward".into(), Value::from(reward));
        }
        Score::Skip { reason } => {
            object.insert("reward".into(), Value::Null);
            object.insert("skipped".into(), Value::String(reason));
        }
    }
    object.insert("detail".into(), detail);
}
