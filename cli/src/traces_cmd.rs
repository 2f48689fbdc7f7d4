//! `aha traces RUN_DIR [show|follow|stats|export|rescore]`: read what a run sampled, while it runs
//! or after (the store is read-only here and never blocks the trainer).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use aha_rewards::Registry;
use aha_traces::{CompletionRow, TraceFilter, TraceReader, REFLECTION_PHRASES, TRACE_FILE};

#[derive(Args)]
pub struct TracesArgs {
    /// A run directory (or its traces.sqlite).
    run: PathBuf,
    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(Subcommand)]
enum Action {
    /// Each step's groups, completions, mean reward, mean length and truncations (the default).
    Steps {
        #[arg(long)]
        json: bool,
    },
    /// The completions that match the filters, with their prompts and rewards.
    Show {
        #[command(flatten)]
        filter: FilterArgs,
        /// One JSON object per completion instead of text.
        #[arg(long)]
        json: bool,
    },
    /// One prompt across training: its completions at the first, middle and last steps it was
    /// sampled, side by side on a terminal at least 120 columns wide, one after the other otherwise.
    Follow {
        prompt_id: String,
        /// Lay the steps out in columns for this many terminal columns (below 120: one after the
        /// other). Default: the terminal's width, or one after the other when not a terminal.
        #[arg(long)]
        width: Option<usize>,
    },
    /// Per step: mean length, accuracy per checker, and how often reflection phrases appear.
    Stats {
        /// Comma-separated phrases (default: wait, let me check, let me verify, verify, ...).
        #[arg(long, value_delimiter = ',')]
        phrases: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// The matching completions as JSON lines {"prompt", "completion", "reward", ...}: a
    /// prompt->completion set (for example the correct ones) for supervised fine-tuning.
    Export {
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Judge the matching stored completions again with a checker (to audit a verifier change):
    /// JSON lines with the stored and the new reward, then a summary of the disagreements.
    Rescore {
        #[command(flatten)]
        filter: FilterArgs,
        /// The checker to apply.
        #[arg(long)]
        checker: String,
        /// Its options, as JSON.
        #[arg(long)]
        options: Option<String>,
    },
}

#[derive(Args)]
struct FilterArgs {
    /// One step, or a range: 10, 10..20, 10.., ..20.
    #[arg(long)]
    step: Option<String>,
    #[arg(long)]
    prompt: Option<String>,
    #[arg(long)]
    min_reward: Option<f64>,
    #[arg(long)]
    max_reward: Option<f64>,
    /// stop or length.
    #[arg(long)]
    finish: Option<String>,
    /// A regular expression over the completion text (prefix (?i) to ignore case).
    #[arg(long)]
    grep: Option<String>,
    /// Only completions this checker (by label) gave full marks (LABEL) or not (!LABEL).
    #[arg(long)]
    passed: Option<String>,
    #[arg(long)]
    limit: Option<usize>,
}

impl FilterArgs {
    fn filter(&self) -> Result<TraceFilter> {
        let (first_step, last_step) = match &self.step {
            None => (None, None),
            Some(text) => {
                let number = |s: &str| -> Result<Option<u64>> {
                    if s.is_empty() {
                        Ok(None)
                    } else {
                        Ok(Some(s.parse().with_context(|| format!("--step {text}: expected N, A..B, A.. or ..B"))?))
                    }
                };
                match text.split_once("..") {
                    Some((a, b)) => (number(a)?, number(b)?),
                    None => (number(text)?, number(text)?),
                }
            }
        };
        if let Some(finish) = &self.finish {
            anyhow::ensure!(finish == "stop" || finish == "length", "--finish must be stop or length, got {finish}");
        }
        let text = self.grep.as_deref().map(regex::Regex::new).transpose().context("--grep")?;
        let checker_passed = self.passed.as_ref().map(|label| match label.strip_prefix('!') {
            Some(label) => (label.to_string(), false),
            None => (label.clone(), true),
        });
        Ok(TraceFilter {
            first_step,
            last_step,
            prompt_id: self.prompt.clone(),
            min_reward: self.min_reward,
            max_reward: self.max_reward,
            finish_reason: self.finish.clone(),
            text,
            checker_passed,
            limit: self.limit,
        })
    }
}

pub fn run(args: TracesArgs) -> Result<()> {
    let path = if args.run.is_dir() { args.run.join(TRACE_FILE) } else { args.run.clone() };
    let reader = TraceReader::open(&path)?;
    let mut out = std::io::stdout().lock();
    let colour = std::io::stdout().is_terminal();
    match args.action.unwrap_or(Action::Steps { json: false }) {
        Action::Steps { json } => {
            let steps = reader.steps()?;
            if json {
                for step in steps {
                    writeln!(out, "{}", serde_json::to_string(&step)?)?;
                }
            } else {
                writeln!(
                    out,
                    "{:>6} {:>6} {:>11} {:>11} {:>11} {:>9}",
                    "step", "groups", "completions", "reward", "length", "truncated"
                )?;
                for s in steps {
                    let reward = s.reward_mean.map_or("-".into(), |r| format!("{r:.3}"));
                    writeln!(
                        out,
                        "{:>6} {:>6} {:>11} {:>11} {:>11.1} {:>9}",
                        s.step, s.groups, s.completions, reward, s.tokens_mean, s.truncated
                    )?;
                }
            }
        }
        Action::Show { filter, json } => {
            for row in reader.query(&filter.filter()?)? {
                if json {
                    writeln!(out, "{}", serde_json::to_string(&row)?)?;
                } else {
                    print_row(&mut out, &row, colour)?;
                }
            }
        }
        Action::Follow { prompt_id, width } => {
            let followed = reader.follow(&prompt_id)?;
            if followed.is_empty() {
                bail!("{}: prompt `{prompt_id}` was never sampled", path.display());
            }
            let width = width.or_else(|| if colour { terminal_width() } else { None });
            match width.filter(|&w| w >= SIDE_BY_SIDE_WIDTH && followed.len() > 1) {
                Some(width) => {
                    for line in follow_columns(&followed, width, colour) {
                        writeln!(out, "{line}")?;
                    }
                }
                None => {
                    for row in followed.iter().flat_map(|(_, rows)| rows) {
                        print_row(&mut out, row, colour)?;
                    }
                }
            }
        }
        Action::Stats { phrases, json } => {
            let phrases: Vec<String> =
                if phrases.is_empty() { REFLECTION_PHRASES.iter().map(|p| p.to_string()).collect() } else { phrases };
            let stats = reader.statistics(&phrases)?;
            if json {
                for step in stats {
                    writeln!(out, "{}", serde_json::to_string(&step)?)?;
                }
            } else {
                let labels: Vec<String> = stats
                    .iter()
                    .flat_map(|s| s.accuracy.keys().cloned())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                write!(out, "{:>6} {:>8} {:>8}", "step", "length", "reward")?;
                for label in &labels {
                    write!(out, " {:>10}", format!("acc:{label}"))?;
                }
                // Each phrase's column is as wide as the phrase (at least 10): headers whole.
                let widths: Vec<usize> = phrases.iter().map(|p| p.chars().count().max(10)).collect();
                for phrase in &phrases {
                    write!(out, " {:>10}", phrase)?;
                }
                let tools = stats.iter().any(|s| s.tools.is_some());
                if tools {
                    write!(out, " {:>8} {:>8} {:>8} {:>8}", "calls/c", "tool%", "toolerr%", "tool_s")?;
                }
                writeln!(out)?;
                for s in &stats {
                    write!(
                        out,
                        "{:>6} {:>8.1} {:>8}",
                        s.step,
                        s.tokens_mean,
                        s.reward_mean.map_or("-".into(), |r| format!("{r:.3}"))
                    )?;
                    for label in &labels {
                        write!(out, " {:>10.3}", s.accuracy.get(label).copied().unwrap_or(0.0))?;
                    }
                    for (phrase, width) in phrases.iter().zip(&widths) {
                        write!(out, " {:>width$.3}", s.phrases[phrase])?;
                    }
                    if tools {
                        let t = s.tools.as_ref();
                        let (calls, used, errors, seconds) = t.map_or((0.0, 0.0, 0.0, 0.0), |t| {
                            (t.calls_per_completion, t.use_frac, t.error_frac, t.seconds)
                        });
                        write!(out, " {calls:>8.2} {:>8.1} {:>8.1} {seconds:>8.2}", used * 100.0, errors * 100.0)?;
                    }
                    writeln!(out)?;
                }
            }
        }
        Action::Export { filter } => {
            for row in reader.query(&filter.filter()?)? {
                let line = json!({
                    "prompt": row.prompt,
                    "completion": row.text,
                    "reward": row.reward,
                    "rewards": row.rewards,
                    "step": row.step,
                    "prompt_id": row.prompt_id,
                    "sample": row.sample,
                });
                writeln!(out, "{line}")?;
            }
        }
        Action::Rescore { filter, checker, options } => {
            let options: Value = match options {
                Some(text) => serde_json::from_str(&text).context("--options is not JSON")?,
                None => Value::Null,
            };
            let checker = Registry::with_builtins().build(&checker, &options)?;
            let (mut judged, mut changed) = (0usize, 0usize);
            for row in reader.query(&filter.filter()?)? {
                let problem = row.sample.as_object().cloned().unwrap_or_default();
                let sample = aha_rollout::checker_fields(&problem, row.tokens as usize, &row.finish_reason);
                let verdict = checker.check(&row.text, &sample).with_context(|| format!("prompt {}", row.prompt_id))?;
                let stored = row.rewards.get(checker.name()).copied().flatten();
                let new = verdict.reward_value();
                judged += 1;
                changed += usize::from(stored != new);
                let line = json!({"step": row.step, "prompt_id": row.prompt_id, "sample_index": row.sample_index,
                    "stored": stored, "reward": new, "detail": verdict.detail});
                writeln!(out, "{line}")?;
            }
            eprintln!("{judged} completions re-scored; {changed} differ from the stored reward of that checker");
        }
    }
    Ok(())
}

/// The narrowest terminal `follow` lays out in columns: three of about 38 characters.
const SIDE_BY_SIDE_WIDTH: usize = 120;

/// The terminal's width in columns: `COLUMNS` if set, else what `stty size` says of the
/// controlling terminal; `None` when neither tells.
fn terminal_width() -> Option<usize> {
    if let Some(columns) = std::env::var("COLUMNS").ok().and_then(|c| c.trim().parse().ok()) {
        return Some(columns);
    }
    let tty = std::fs::File::open("/dev/tty").ok()?;
    let output =
        std::process::Command::new("stty").arg("size").stdin(tty).stderr(std::process::Stdio::null()).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    text.split_whitespace().nth(1)?.parse().ok().filter(|&w| w > 0)
}

/// `follow` side by side: the prompt across the top, then one column per step: its header, then
/// each completion (reward line and wrapped text), completion j of every step on the same line.
fn follow_columns(followed: &[(u64, Vec<CompletionRow>)], width: usize, colour: bool) -> Vec<String> {
    use aha_traces::layout::{align_blocks, column_width, side_by_side, wrap};
    let (bold, dim, green, red, reset) =
        if colour { ("\x1b[1m", "\x1b[2m", "\x1b[32m", "\x1b[31m", "\x1b[0m") } else { ("", "", "", "", "") };
    let gap = " │ ";
    let column = column_width(width, followed.len(), gap);
    let styled = |text: &str, style: &str| -> Vec<String> {
        wrap(text, column)
            .into_iter()
            .map(|l| if style.is_empty() { l } else { format!("{style}{l}{reset}") })
            .collect()
    };
    // The prompt, from any of its rows (a group always has some).
    let Some(first) = followed.iter().flat_map(|(_, rows)| rows).next() else { return Vec::new() };
    let mut lines = vec![format!("{bold}prompt {}{reset}", first.prompt_id)];
    lines.extend(wrap(&first.prompt, width).into_iter().map(|l| if colour { format!("{dim}{l}{reset}") } else { l }));
    lines.push(String::new());
    let columns: Vec<Vec<Vec<String>>> = followed
        .iter()
        .map(|(step, rows)| {
            let judged: Vec<f64> = rows.iter().filter_map(|r| r.reward).collect();
            let mean = if judged.is_empty() {
                "-".to_string()
            } else {
                format!("{:.3}", judged.iter().sum::<f64>() / judged.len() as f64)
            };
            let mut header = styled(&format!("step {step} · mean reward {mean}"), bold);
            header.push("─".repeat(column));
            let mut blocks = vec![header];
            for row in rows {
                let reward_colour = if row.reward.is_some_and(|r| r > 0.0) { green } else { red };
                let reward = row.reward.map_or("unjudged".into(), |r| format!("reward {r:.3}"));
                let mut block = styled(
                    &format!("#{} {reward} · {} tokens, {}", row.sample_index, row.tokens, row.finish_reason),
                    reward_colour,
                );
                block.extend(wrap(&row.text, column));
                block.push(String::new());
                blocks.push(block);
            }
            blocks
        })
        .collect();
    lines.extend(side_by_side(&align_blocks(&columns), column, gap));
    lines
}

fn print_row(out: &mut impl Write, row: &CompletionRow, colour: bool) -> Result<()> {
    let (bold, dim, green, red, reset) =
        if colour { ("\x1b[1m", "\x1b[2m", "\x1b[32m", "\x1b[31m", "\x1b[0m") } else { ("", "", "", "", "") };
    let reward_colour = match row.reward {
        Some(r) if r > 0.0 => green,
        _ => red,
    };
    let reward = row.reward.map_or("unjudged".into(), |r| format!("{r:.3}"));
    let advantage = row.advantage.map_or(String::new(), |a| format!(", advantage {a:+.3}"));
    writeln!(
        out,
        "{bold}step {} · prompt {} · sample {}{reset} · {reward_colour}reward {reward}{reset}{advantage} · {} tokens, {}",
        row.step, row.prompt_id, row.sample_index, row.tokens, row.finish_reason
    )?;
    writeln!(out, "{dim}{}{reset}", row.prompt)?;
    writeln!(out, "{}", row.text)?;
    // The text shows each tool result inline (`<output>…</output>`); under it, each call's verdict.
    let calls = row.detail.get("tool_calls").and_then(|c| c.as_array()).map_or(&[][..], |c| c.as_slice());
    for (i, call) in calls.iter().enumerate() {
        let status = call.get("status").and_then(|s| s.as_str()).unwrap_or("?");
        let seconds = call.get("seconds").and_then(|s| s.as_f64()).unwrap_or(0.0);
        let truncated = if call.get("truncated").and_then(|t| t.as_bool()) == Some(true) { ", truncated" } else { "" };
        let colour = if status == "ok" { green } else { red };
        writeln!(out, "{dim}tool call {}: {colour}{status}{reset}{dim}, {seconds:.3} s{truncated}{reset}", i + 1)?;
    }
    writeln!(out)?;
    Ok(())
}

/// `aha report RUN_DIR [--out FILE]`.
#[derive(Args)]
pub struct ReportArgs {
    /// A run directory.
    run: PathBuf,
    /// Where to write the HTML (default RUN_DIR/report.html).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn report(args: ReportArgs) -> Result<()> {
    let run = aha_grpo::RunDir::open(&args.run)?;
    let path = match args.out {
        Some(out) => {
            let title = args.run.file_name().map_or("aha run".into(), |n| n.to_string_lossy().into_owned());
            let html = aha_traces::render_report(&title, &run.metrics_path(), &run.traces_path())?;
            std::fs::write(&out, html).with_context(|| format!("writing {}", out.display()))?;
            out
        }
        None => run.write_report()?,
    };
    eprintln!("wrote {}", path.display());
    Ok(())
}
