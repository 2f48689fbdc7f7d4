//! `aha train CONFIG.toml [--set key=value]...` and `aha train --resume RUN_DIR`: GRPO on the
//! configured model, data and rewards; a run directory with the resolved config, metrics.jsonl,
//! traces.sqlite and checkpoints. A progress bar on a terminal, one log line per step otherwise.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use aha_grpo::{RunDir, TrainConfig};

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

pub fn run(args: TrainArgs) -> Result<()> {
    let (mut config, resume) = match (&args.config, &args.resume) {
        (Some(path), None) => (TrainConfig::load(path, &args.overrides)?, false),
        (None, Some(run_dir)) => {
            let run = RunDir::open(run_dir)?;
            let mut config = TrainConfig::load(&run.config_path(), &args.overrides)?;
            // The run continues where it is, wherever it was first written.
            config.run.output_dir = run_dir.clone();
            (config, true)
        }
        _ => bail!("give a configuration file, or --resume RUN_DIR"),
    };
    config.resolve();
    let steps = config.run.steps;
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
    let outcome = aha_grpo::train(config, resume, |metrics: &Value| {
        let number = |key: &str| metrics[key].as_f64().unwrap_or(f64::NAN);
        let summary = format!(
            "reward {:.3} accuracy {:.3} length {:.1} loss {:.4}",
            number("reward_mean"),
            number("accuracy"),
            number("completion_length_mean"),
            number("loss")
        );
        if bar.is_hidden() {
            eprintln!("step {}/{steps}: {summary} ({:.1} s)", metrics["step"], number("step_s"));
        } else {
            bar.set_position(metrics["step"].as_u64().unwrap_or(0));
            bar.set_message(summary);
        }
    })?;
    bar.finish_and_clear();
    eprintln!(
        "trained {} steps; run directory {}{}",
        outcome.steps,
        outcome.run_dir.display(),
        outcome.last_checkpoint.map(|p| format!(", last checkpoint {}", p.display())).unwrap_or_default()
    );
    Ok(())
}
