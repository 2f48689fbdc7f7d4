//! The run skeleton `aha train` and `aha sft` share: begin a run directory or resume the one
//! there, train step after step up to `run.steps`, evaluate every `run.eval_every` steps and at
//! the last, write one metrics line per step, save a checkpoint every `run.save_every` steps and
//! at the last.
//!
//! ```text
//! run = Run::begin(dir, config, resume, schedule)    # lock, find the checkpoint to resume from
//! (build the model, optimizer and data from run.checkpoint() and run.state())
//! for step in resumed step + 1 ..= steps:
//!     metrics = training.step(step, lr(step))         # GRPO (trainer.rs) or SFT (sft.rs)
//!     metrics += training.evaluate()                  # every eval_every steps, and at the last
//!     metrics.jsonl += metrics; training.record(..); on_step(metrics)
//!     checkpoint(training.state(step))                # every save_every steps, and at the last
//! training.finish(run)
//! ```
//!
//! What differs between GRPO and SFT is what one step does, what it evaluates, what it records
//! besides the metrics line and what its checkpoint's `TrainerState` holds: the [`Training`]
//! trait. Everything else about when and in which order lives here once.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Map, Value};

use aha_model::{CausalLM, LoraConfig};

use crate::config::{ModelInit, ModelSource};
use crate::error::{GrpoError, Result};
use crate::optim::{AdamW, AdamWConfig, LrSchedule};
use crate::run_dir::{RunDir, TrainerState};

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub run_dir: PathBuf,
    /// The step the run started from (0, or the checkpoint a resumed run continued from).
    pub first_step: u64,
    /// `run.steps`: the step it trained to, unless it was there already.
    pub steps: u64,
    pub last_checkpoint: Option<PathBuf>,
}

impl TrainOutcome {
    /// Steps this process trained: none when a resumed run was already at `run.steps` or past it.
    pub fn steps_trained(&self) -> u64 {
        self.steps.saturating_sub(self.first_step)
    }
}

/// How long a run is and when it evaluates and saves (the `[run]` and `[optim]` keys).
#[derive(Debug, Clone)]
pub(crate) struct RunSchedule {
    /// `run.steps`: the last step.
    pub steps: u64,
    /// Evaluate every this many steps (and at the last); 0 = never.
    pub eval_every: u64,
    /// Save a checkpoint every this many steps (and always at the last); 0 = only at the last.
    pub save_every: u64,
    /// Checkpoints kept; 0 = all.
    pub keep_last: usize,
    /// The learning rate of each step.
    pub lr: LrSchedule,
    /// The run's seed (`run.seed`).
    pub seed: u64,
}

impl RunSchedule {
    fn evaluates_at(&self, step: u64) -> bool {
        self.eval_every > 0 && (step.is_multiple_of(self.eval_every) || step == self.steps)
    }

    fn saves_at(&self, step: u64) -> bool {
        step == self.steps || (self.save_every > 0 && step.is_multiple_of(self.save_every))
    }
}

/// What one kind of training does at the points of the run loop. The model and optimizer it
/// returns are the ones checkpoints save.
pub(crate) trait Training {
    /// What a step leaves to [`Training::record`], written after its metrics line.
    type Record;

    /// Trains step `step` (counted from 1) at learning rate `lr`: its metrics line, and what to
    /// record. A NaN or infinite loss or gradient ([`GrpoError::NonFinite`]) stops the run.
    fn step(&mut self, step: u64, lr: f64) -> Result<(Value, Self::Record)>;

    /// The held-out fields added to the metrics line of an evaluation step; none without
    /// held-out data.
    fn evaluate(&mut self) -> Result<Map<String, Value>>;

    /// Records what a step left, once its metrics line is written. Nothing by default.
    fn record(&mut self, _record: Self::Record) -> Result<()> {
        Ok(())
    }

    /// What a checkpoint after `step` saves besides the weights and the optimizer.
    fn state(&mut self, step: u64) -> Result<TrainerState>;

    fn model(&self) -> &CausalLM;

    fn optimizer(&self) -> &AdamW;

    /// Called once after the last step. Nothing by default.
    fn finish(self, _run: &RunDir) -> Result<()>
    where
        Self: Sized,
    {
        Ok(())
    }
}

/// A run directory being trained in, from its first or resumed step to `schedule.steps`.
pub(crate) struct Run {
    dir: RunDir,
    schedule: RunSchedule,
    /// The checkpoint a resumed run continues from.
    checkpoint: Option<PathBuf>,
    state: TrainerState,
    started: Instant,
}

impl Run {
    /// A new run in `output_dir` with `resolved_config`, or, when `resume`, the run there, from
    /// its latest checkpoint (see [`RunDir::begin`]).
    pub fn begin(output_dir: &Path, resolved_config: &str, resume: bool, schedule: RunSchedule) -> Result<Self> {
        let started = Instant::now();
        let (dir, checkpoint, state) = RunDir::begin(output_dir, resolved_config, resume)?;
        Ok(Self { dir, schedule, checkpoint, state, started })
    }

    /// The outcome of a resumed run with nothing left to do, if it is at `run.steps` already.
    pub fn already_done(&self) -> Option<TrainOutcome> {
        (self.state.step >= self.schedule.steps).then(|| self.outcome(self.checkpoint.clone()))
    }

    /// Where the data and sampling continue from (all zero for a new run).
    pub fn state(&self) -> &TrainerState {
        &self.state
    }

    pub fn dir(&self) -> &RunDir {
        &self.dir
    }

    /// The model to train: for a new run from `source` (its weights, or fresh ones with
    /// `init = "random"` drawn from `seed`), for a resumed one from the checkpoint. With LoRA
    /// (`lora`, or `source.adapter` to continue an adapter) the base weights load frozen and only
    /// adapters train: the checkpoint's, `source.adapter`'s, or new ones (PEFT's initialisation,
    /// drawn from `seed`).
    pub fn model(&self, source: &ModelSource, lora: Option<&LoraConfig>, seed: u64) -> Result<CausalLM> {
        let checkpoint = self.checkpoint.as_deref();
        if lora.is_none() && source.adapter.is_none() {
            let options = source.load_options(true);
            return Ok(match (checkpoint, source.init) {
                (Some(dir), _) => CausalLM::load(dir, options)?,
                (None, ModelInit::Pretrained) => CausalLM::load(&source.path, options)?,
                (None, ModelInit::Random) => CausalLM::init_random(&source.path, options, seed)?,
            });
        }
        let mut model = CausalLM::load(&source.path, source.load_options(false))?;
        match (checkpoint.or(source.adapter.as_deref()), lora) {
            (Some(adapter), _) => model.load_adapter(adapter, true)?,
            (None, Some(lora)) => model.add_lora(lora, seed)?,
            (None, None) => unreachable!("checked above"),
        }
        Ok(model)
    }

    /// AdamW over `model`'s parameters: fresh for a new run, with the checkpoint's state for a
    /// resumed one.
    pub fn optimizer(&self, model: &CausalLM, config: AdamWConfig) -> Result<AdamW> {
        let mut optimizer = AdamW::for_model(model, config);
        if let Some(checkpoint) = &self.checkpoint {
            RunDir::load_optimizer(checkpoint, &mut optimizer)?;
        }
        Ok(optimizer)
    }

    /// Trains every step left, then lets `training` finish. `on_step` sees each metrics line.
    pub fn train<T: Training>(self, mut training: T, mut on_step: impl FnMut(&Value)) -> Result<TrainOutcome> {
        let schedule = &self.schedule;
        let mut last_checkpoint = self.checkpoint.clone();
        for step in self.state.step + 1..=schedule.steps {
            let lr = schedule.lr.lr_at(step - 1);
            // LoRA's dropout masks start each step from the run's seed and the step, so that a
            // resumed run draws what it would have drawn.
            training.model().seed_dropout(schedule.seed.rotate_left(32) ^ step);
            let (mut metrics, record) =
                training.step(step, lr).map_err(|e| diverged(step, e, last_checkpoint.as_deref()))?;
            let fields = metrics.as_object_mut().expect("a metrics line is a JSON object");
            if schedule.evaluates_at(step) {
                fields.extend(training.evaluate()?);
            }
            // Wall-clock seconds since the run began, as its line is written (after evaluating).
            fields.insert("elapsed_s".into(), json!(self.started.elapsed().as_secs_f64()));
            self.dir.append_metrics(&metrics)?;
            training.record(record)?;
            on_step(&metrics);

            if schedule.saves_at(step) {
                let state = training.state(step)?;
                let saved =
                    self.dir.save_checkpoint(training.model(), training.optimizer(), &state, schedule.keep_last)?;
                last_checkpoint = Some(saved);
            }
        }
        training.finish(&self.dir)?;
        Ok(self.outcome(last_checkpoint))
    }

    fn outcome(&self, last_checkpoint: Option<PathBuf>) -> TrainOutcome {
        TrainOutcome {
            run_dir: self.dir.root().to_path_buf(),
            first_step: self.state.step,
            steps: self.schedule.steps,
            last_checkpoint,
        }
    }
}

/// A NaN or infinite loss or gradient stops the run: the error says where its last good
/// checkpoint is. Other errors pass through.
fn diverged(step: u64, error: GrpoError, last_checkpoint: Option<&Path>) -> GrpoError {
    match error {
        GrpoError::NonFinite { .. } => GrpoError::Diverged(format!(
            "step {step}: {error}; the run stops here, and its last good checkpoint is {}",
            last_checkpoint.map_or("none (no checkpoint was saved yet)".into(), |p| p.display().to_string())
        )),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::ScheduleKind;

    fn schedule(steps: u64, eval_every: u64, save_every: u64) -> RunSchedule {
        RunSchedule {
            steps,
            eval_every,
            save_every,
            keep_last: 0,
            lr: LrSchedule {
                lr: 1.0,
                warmup_steps: 0,
                kind: ScheduleKind::Constant,
                min_lr_ratio: 0.0,
                total_steps: steps,
            },
            seed: 0,
        }
    }

    #[test]
    fn evaluates_and_saves_on_their_multiples_and_at_the_last_step() {
        let s = schedule(7, 3, 2);
        assert_eq!((1..=7).filter(|&k| s.evaluates_at(k)).collect::<Vec<_>>(), [3, 6, 7]);
        assert_eq!((1..=7).filter(|&k| s.saves_at(k)).collect::<Vec<_>>(), [2, 4, 6, 7]);
        // 0: never evaluate, save only at the last step.
        let s = schedule(7, 0, 0);
        assert!((1..=7).all(|k| !s.evaluates_at(k)));
        assert_eq!((1..=7).filter(|&k| s.saves_at(k)).collect::<Vec<_>>(), [7]);
    }
}
