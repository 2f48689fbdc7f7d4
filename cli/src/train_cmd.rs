//! `aha train CONFIG.toml [--set key=value]...` and `aha train --resume RUN_DIR`: GRPO on the
//! configured model, data and rewards; a run directory with the resolved config, metrics.jsonl,
//! traces.sqlite and checkpoints. A progress bar on a terminal, one log line per step otherwise.
//!
//! `aha sft` (`sft_cmd.rs`) takes the same arguments and reports progress the same way, through
//! [`TrainArgs::config`], [`Progress`] and [`finished`].

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::Value;

use aha_grpo::{changed_on_resume, RunDir, TrainConfig, TrainOutcome};

#[derive(Args)]
pub struct TrainArgs {
    /// The training configuration (see docs/config.md).
    config: Option<PathBuf>,
    /// Override a key: `--set optim.lr=1e-5` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Continue the run in this directory from its latest checkpoint (its config.toml is used;
    /// `--set run.steps=N` may extend it).
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "config")]
    resume: Option<PathBuf>,
}

impl TrainArgs {
    /// The configuration to run, read by `load` with the overrides, and whether it resumes: the
    /// file given, or the resumed run's config.toml with its `run.output_dir` (reached through
    /// `output_dir`) pointed at the run, wherever it was first written.
    /// A resume that changes a setting the run's trajectory depends on says so, by name.
    pub fn config<C: Serialize>(
        &self,
        load: impl Fn(&Path, &[String]) -> aha_grpo::Result<C>,
        output_dir: impl Fn(&mut C) -> &mut PathBuf,
    ) -> Result<(C, bool)> {
        match (&self.config, &self.resume) {
            (Some(path), None) => Ok((load(path, &self.overrides)?, false)),
            (None, Some(run_dir)) => {
                let run = RunDir::open(run_dir)?;
                let mut config = load(&run.config_path(), &self.overrides)?;
                *output_dir(&mut config) = run_dir.clone();
                if !self.overrides.is_empty() {
                    let mut stored = load(&run.config_path(), &[])?;
                    *output_dir(&mut stored) = run_dir.clone();
                    for (key, old, new) in changed_on_resume(&stored, &config) {
                        tracing::warn!(
                            "--resume: {key} changes from {old} to {new}; the run will not continue as it \
                             would have without the change"
                        );
                    }
                }
                Ok((config, true))
            }
            _ => bail!("give a configuration file, or --resume RUN_DIR"),
        }
    }
}

/// A progress bar on a terminal; one line per step on stderr otherwise.
pub struct Progress {
    bar: ProgressBar,
    steps: u64,
}

impl Progress {
    pub fn new(steps: u64) -> Self {
        let bar = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(steps);
            bar.set_style(
                ProgressStyle::with_template("{bar:30} step {pos}/{len} {msg} [{elapsed} elapsed, {eta} left]")
                    .expect("a valid progress template"),
            );
            bar
        } else {
            ProgressBar::hidden()
        };
        Self { bar, steps }
    }

    /// Shows a step's metrics line, summarised as `summary`.
    pub fn step(&self, metrics: &Value, summary: String) {
        if self.bar.is_hidden() {
            eprintln!("step {}/{}: {summary} ({:.1} s)", metrics["step"], self.steps, number(metrics, "step_s"));
        } else {
            self.bar.set_position(metrics["step"].as_u64().unwrap_or(0));
            self.bar.set_message(summary);
        }
    }
}

/// A metric as a float (NaN when absent).
pub fn number(metrics: &Value, key: &str) -> f64 {
    metrics[key].as_f64().unwrap_or(f64::NAN)
}

/// Clears the progress bar and says where the run is.
pub fn finished(progress: Progress, outcome: TrainOutcome) {
    progress.bar.finish_and_clear();
    let checkpoint = outcome.last_checkpoint.as_ref().map(|p| format!(", last checkpoint {}", p.display()));
    if outcome.steps_trained() == 0 {
        eprintln!(
            "nothing to do: {} is at step {} and run.steps = {} (--set run.steps=N to train further){}",
            outcome.run_dir.display(),
            outcome.first_step,
            outcome.steps,
            checkpoint.unwrap_or_default()
        );
        return;
    }
    eprintln!(
        "trained {} steps (steps {}-{}); run directory {}{}",
        outcome.steps_trained(),
        outcome.first_step + 1,
        outcome.steps,
        outcome.run_dir.display(),
        checkpoint.unwrap_or_default()
    );
}

pub fn run(args: TrainArgs) -> Result<()> {
    let (mut config, resume) = args.config(TrainConfig::load, |c| &mut c.run.output_dir)?;
    config.resolve();
    let progress = Progress::new(config.run.steps);
    let outcome = aha_grpo::train(config, resume, |metrics: &Value| {
        let summary = format!(
            "reward {:.3} accuracy {:.3} length {:.1} loss {:.4}",
            number(metrics, "reward_mean"),
            number(metrics, "accuracy"),
            number(metrics, "completion_length_mean"),
            number(metrics, "loss")
        );
        progress.step(metrics, summary);
    })?;
    finished(progress, outcome);
    Ok(())
}
