//! `aha sft CONFIG.toml [--set key=value]...` and `aha sft --resume RUN_DIR`: supervised
//! fine-tuning (see aha-grpo's `sft` module and docs/config.md, "aha sft"): a run directory with
//! the resolved config, metrics.jsonl and checkpoints in Hugging Face format. The arguments and
//! the progress display are `aha train`'s.

use anyhow::Result;
use serde_json::Value;

use aha_grpo::SftConfig;

use crate::train_cmd::{finished, number, Progress};

/// `aha sft` takes the arguments of `aha train`: a configuration file and `--set`, or
/// `--resume RUN_DIR`.
pub type SftArgs = crate::train_cmd::TrainArgs;

pub fn run(args: SftArgs) -> Result<()> {
    let (config, resume) = args.config(SftConfig::load, |c| &mut c.run.output_dir)?;
    let progress = Progress::new(config.run.steps);
    let outcome = aha_grpo::sft::train(config, resume, |metrics: &Value| {
        let mut summary = format!("loss {:.4}", number(metrics, "loss"));
        if metrics.get("eval_loss").is_some() {
            summary.push_str(&format!(" eval_loss {:.4}", number(metrics, "eval_loss")));
        }
        summary.push_str(&format!(
            " epoch {:.2} {:.0} tokens/s",
            number(metrics, "epoch"),
            number(metrics, "tokens_per_s")
        ));
        progress.step(metrics, summary);
    })?;
    finished(progress, outcome);
    Ok(())
}
