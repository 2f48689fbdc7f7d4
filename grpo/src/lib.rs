//! aha-grpo: the numerical core of GRPO training. It turns scored completions into a better policy:
//! group-relative advantages, the GRPO-family losses, AdamW with a learning-rate schedule and
//! gradient clipping, and one optimisation step over micro-batches whose accumulated gradient does
//! not depend on the micro-batch size. It also reads the training configuration (`aha train
//! CONFIG.toml --set key=value`).
//!
//! The training loop ([`train`], `trainer.rs`) drives the others: problems from aha-datasets,
//! groups from aha-rollout's pool (scored by aha-rewards), traces into aha-traces, checkpoints and
//! metrics into the run directory ([`RunDir`]). It does not generate, score or parse data itself.
//! Each module starts with its formulas, the paper they come from, the TRL behaviour it follows
//! and where it deliberately differs; docs/architecture.md ("Where each formula lives") lists them
//! all.
//!
//! Supervised fine-tuning ([`sft`], `aha sft`) reuses the same machinery (the run skeleton of
//! `run_loop.rs`: run directory, resume, evaluation and checkpoint schedule, metrics; AdamW, the
//! micro-batch layout of `step.rs`) with a cross-entropy loss on given text: to
//! warm-start a model before GRPO, distil a run's exported traces, or train from scratch.
//!
//! Main types and functions:
//! - [`TrainConfig`] (`config`): the TOML configuration, overrides, validation, resolved TOML.
//! - [`compute_advantages`], [`ScaleRewards`], [`DynamicSampling`] (`advantages`).
//! - [`policy_loss`], [`LossType`], [`LossParams`], [`Normalizer`] (`loss`).
//! - [`AdamW`], [`LrSchedule`] (`optim`): an optimizer whose state is saved and restored exactly.
//! - [`train_step`], [`TrainBatch`], [`TrainSequence`], [`StepSettings`], [`StepStats`] (`step`).
//! - [`SftConfig`], [`sft::train`], [`sft_gradients`], [`sft_loss`], [`load_data`] (`sft`).
//! - [`HeldOut`], [`EvalSettings`], [`EvalReport`] (`evaluation`): held-out accuracy, greedy or
//!   sampled.
//! - [`GrpoError`]: every failure, as one line.

pub mod advantages;
pub mod config;
mod config_file;
pub mod error;
pub mod evaluation;
pub mod loss;
pub mod optim;
pub mod run_dir;
mod run_loop;
pub mod sft;
pub mod step;
pub mod trainer;
mod weight_sync;

pub use advantages::{compute_advantages, Advantages, DynamicSampling, ScaleRewards};
pub use config::{
    changed_on_resume, BackendKind, CheckerConfig, DataConfig, GrpoConfig, ModelInit, ModelSource, OptimConfig,
    OverlongPenalty, RewardsConfig, RolloutConfig, RunConfig, SamplingConfig, TrainConfig,
};
pub use error::{GrpoError, Result};
pub use evaluation::{EvalCompletion, EvalReport, EvalSettings, HeldOut};
pub use loss::{policy_loss, LossInputs, LossOutput, LossParams, LossStats, LossType, Normalizer};
pub use optim::{AdamW, AdamWConfig, LrSchedule, ScheduleKind};
pub use run_dir::{RunDir, TrainerState};
pub use sft::{
    load_data, sft_gradients, sft_loss, SftConfig, SftData, SftDataConfig, SftExample, SftPass, SftRunConfig,
};
pub use step::{
    accumulate_gradients, batch_loss, prepare_batch, train_step, IterationStats, PassStats, PreparedBatch,
    StepSettings, StepStats, TrainBatch, TrainSequence,
};
pub use trainer::{build_checker, load_problems, train, train_with_checkers, TrainOutcome};
