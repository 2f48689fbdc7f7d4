//! What the demos share around their own statistics: measuring a model's held-out completions,
//! the training curve (metrics.jsonl joined with per-step statistics of the traces) and the
//! printed summary (the before/after table, the curve table, the example, where the run is).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde_json::{json, Map, Value};

use aha_grpo::{EvalReport, HeldOut};
use aha_traces::{TraceFilter, TraceReader, TRACE_FILE};

/// What a demo counts in completions, each read against its problem's gold answer (self-checks,
/// tool calls).
pub trait CompletionStats: Default + Copy {
    fn add(&mut self, completion: &str, gold: &str);
    /// The shares (null where their whole is zero) and counts, by name.
    fn to_json(self) -> Value;
}

/// `part / whole`, or null when `whole` is zero.
pub fn share(part: usize, whole: usize) -> Value {
    if whole == 0 {
        Value::Null
    } else {
        json!(part as f64 / whole as f64)
    }
}

/// The gold answer of held-out problem `problem` ("" when it has none).
pub fn gold(held_out: &HeldOut, problem: usize) -> &str {
    held_out.problem(problem).and_then(|p| p.fields.get("answer")).and_then(Value::as_str).unwrap_or("")
}

/// One evaluation of a model: its greedy and sampled completions of the held-out problems, and
/// the demo's statistics of each set.
pub struct Measured<S> {
    pub greedy: EvalReport,
    pub sampled: EvalReport,
    pub greedy_stats: S,
    pub sampled_stats: S,
}

impl<S: CompletionStats> Measured<S> {
    pub fn new(held_out: &HeldOut, greedy: EvalReport, sampled: EvalReport) -> Self {
        let stats = |report: &EvalReport| {
            let mut stats = S::default();
            for c in &report.completions {
                stats.add(&c.text, gold(held_out, c.problem));
            }
            stats
        };
        Measured { greedy_stats: stats(&greedy), sampled_stats: stats(&sampled), greedy, sampled }
    }

    /// Accuracy and length of both sets; the statistics under "t1" (sampled) and "greedy".
    pub fn to_json(&self) -> Value {
        json!({
            "pass_at_1_t1": self.sampled.accuracy,
            "greedy_accuracy": self.greedy.accuracy,
            "length_mean_t1": self.sampled.length_mean,
            "length_mean_greedy": self.greedy.length_mean,
            "t1": self.sampled_stats.to_json(),
            "greedy": self.greedy_stats.to_json(),
            "problems": self.sampled.problems,
            "samples": self.sampled.completions.len(),
        })
    }
}

/// Per step of a run: reward, accuracy, mean length and time (metrics.jsonl), with the fields
/// `extra` gives for that step.
pub fn training_curve(run_dir: &Path, extra: impl Fn(u64) -> Map<String, Value>) -> Result<Vec<Value>> {
    let metrics = std::fs::read_to_string(run_dir.join(aha_grpo::run_dir::METRICS_FILE))?;
    metrics
        .lines()
        .map(|line| {
            let m: Value = serde_json::from_str(line)?;
            let step = m["step"].as_u64().unwrap_or(0);
            let mut point = extra(step);
            for (key, metric) in [
                ("step", "step"),
                ("reward", "reward_mean"),
                ("accuracy", "accuracy"),
                ("length", "completion_length_mean"),
                ("elapsed_s", "elapsed_s"),
            ] {
                point.insert(key.into(), m[metric].clone());
            }
            Ok(Value::Object(point))
        })
        .collect()
}

/// [`training_curve`] with the `keys` of the demo's statistics of each step's sampled training
/// completions (traces.sqlite, against each problem's gold answer).
pub fn stats_curve<S: CompletionStats>(run_dir: &Path, keys: &[&str]) -> Result<Vec<Value>> {
    let reader = TraceReader::open(&run_dir.join(TRACE_FILE))?;
    let mut per_step: BTreeMap<u64, S> = BTreeMap::new();
    for row in reader.query(&TraceFilter::default())? {
        let gold = row.sample.get("answer").and_then(Value::as_str).unwrap_or("");
        per_step.entry(row.step).or_default().add(&row.text, gold);
    }
    training_curve(run_dir, |step| {
        let stats = per_step.get(&step).copied().unwrap_or_default().to_json();
        keys.iter().map(|&key| (key.to_string(), stats[key].clone())).collect()
    })
}

/// How a value is printed: a share as a percentage, or a number with one decimal.
#[derive(Clone, Copy)]
pub enum Format {
    Percent,
    Number,
}

impl Format {
    /// Seven characters wide; "-" where there is no value.
    fn show(self, value: &Value) -> String {
        match (self, value.as_f64()) {
            (_, None) => format!("{:>7}", "-"),
            (Format::Percent, Some(x)) => format!("{:>6.1}%", 100.0 * x),
            (Format::Number, Some(x)) => format!("{x:>7.1}"),
        }
    }
}

/// The demo's printed summary, built in order.
pub struct Summary<'a> {
    summary: &'a Value,
    text: String,
}

impl<'a> Summary<'a> {
    /// Starts with "held-out: N problems, K samples each at T=1".
    pub fn new(summary: &'a Value) -> Self {
        let before = &summary["before"];
        let per_problem = before["samples"].as_u64().unwrap_or(0) / before["problems"].as_u64().unwrap_or(1).max(1);
        let text = format!("\nheld-out: {} problems, {per_problem} samples each at T=1\n", before["problems"]);
        Summary { summary, text }
    }

    /// One row per `(label, where in a measurement (a JSON pointer), format)`: before and after.
    pub fn before_and_after(&mut self, rows: &[(&str, &str, Format)]) {
        let width = rows.iter().map(|(label, ..)| label.len()).max().unwrap_or(0);
        let _ = writeln!(self.text, "{:width$}  before    after", "");
        for &(label, pointer, format) in rows {
            let value = |when: &str| self.summary[when].pointer(pointer).unwrap_or(&Value::Null);
            let _ = writeln!(
                self.text,
                "{label:<width$} {}  {}",
                format.show(value("before")),
                format.show(value("after"))
            );
        }
    }

    /// "training: N GRPO steps in S s (whole demo W s)", then the curve at about ten steps: one
    /// column per `(header, key of a curve point, format)`, and `note` under it.
    pub fn training(&mut self, columns: &[(&str, &str, Format)], note: &str) {
        let s = self.summary;
        let _ = writeln!(
            self.text,
            "\ntraining: {} GRPO steps in {:.0} s (whole demo {:.0} s)",
            s["steps"],
            s["train_seconds"].as_f64().unwrap_or(0.0),
            s["wall_seconds"].as_f64().unwrap_or(0.0)
        );
        let widths: Vec<usize> = columns.iter().map(|(header, ..)| header.len().max(7)).collect();
        let mut header = " step".to_string();
        for ((name, ..), width) in columns.iter().zip(&widths) {
            let _ = write!(header, "  {name:>width$}");
        }
        let _ = writeln!(self.text, "{header}");
        let curve = s["curve"].as_array().map(Vec::as_slice).unwrap_or_default();
        let every = (curve.len() / 10).max(1);
        for (i, point) in curve.iter().enumerate() {
            if i % every == every - 1 || i + 1 == curve.len() {
                let mut line = format!("{:>5}", point["step"].as_u64().unwrap_or(0));
                for ((_, key, format), width) in columns.iter().zip(&widths) {
                    let _ = write!(line, "  {:>width$}", format.show(&point[*key]));
                }
                let _ = writeln!(self.text, "{line}");
            }
        }
        if !note.is_empty() {
            let _ = writeln!(self.text, "{note}");
        }
    }

    /// The example (if any): `title` with its question (and gold answer when known), then its
    /// greedy answers before and after training, each with its verdict.
    pub fn example(&mut self, title: &str) {
        let Some(example) = self.summary["example"].as_object() else { return };
        let question = example["question"].as_str().unwrap_or("");
        let _ = match example.get("answer").and_then(Value::as_str) {
            Some(answer) => writeln!(self.text, "\n{title}: {question} (answer {answer})"),
            None => writeln!(self.text, "\n{title}: {question}"),
        };
        let verdict = |right: &Value| if right.as_bool() == Some(true) { "right" } else { "wrong" };
        for (when, key) in [("before", "before"), ("after ", "after")] {
            let right = &example[&format!("{key}_correct")];
            let _ = writeln!(self.text, "  {when} ({}):{}", verdict(right), example[key].as_str().unwrap_or(""));
        }
    }

    /// Ends with where the run directory, its traces (with `aha traces` arguments to try), the
    /// report and the trained model are.
    pub fn finish(mut self, run_dir: &Path, traces_arguments: &str) -> String {
        let root = run_dir.display();
        let _ = writeln!(self.text, "\nrun directory: {root}");
        let _ = writeln!(self.text, "  traces: {root}/{TRACE_FILE}  (aha traces {root} {traces_arguments})");
        let _ = writeln!(self.text, "  report: {root}/report.html");
        let _ = writeln!(self.text, "  trained model: {}", self.summary["checkpoint"].as_str().unwrap_or(""));
        self.text
    }
}
