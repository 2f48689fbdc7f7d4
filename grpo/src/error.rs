//! The crate's error type. Each message is one line that names the file, key, tensor or sequence
//! at fault and includes its cause (so no variant exposes a `source`: printing the chain would
//! repeat it), ready for the CLI to print as is.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum GrpoError {
    /// A bad training configuration: `config.toml:12: unknown field ...`, or
    /// `--set grpo.epsilon=-1: grpo.epsilon must be > 0 (got -1)`, or reward checkers that cannot
    /// be built from it.
    #[error("{0}")]
    Config(String),
    /// Training data that cannot be used: a dataset or example file that does not load, a prompt
    /// template that does not render, no problem short enough, no group left to train on.
    #[error("{0}")]
    Data(String),
    /// The run directory cannot be used as asked: in use by another process, already holding a
    /// run (without `--resume`), not a run directory, or a checkpoint's state that does not read.
    #[error("{0}")]
    RunDir(String),
    /// The trace store (`traces.sqlite`) or the report made from it failed: disk full, a
    /// corrupted database.
    #[error("{0}")]
    Traces(String),
    /// The loss or gradient became NaN or infinite during a run, which stopped there: the message
    /// names the step and the last good checkpoint.
    #[error("{0}")]
    Diverged(String),
    /// A batch the step cannot train on (empty prompt, log-probs of the wrong length, ...).
    #[error("invalid batch: {0}")]
    Input(String),
    /// The loss or the gradient norm is NaN or infinite; no parameter was changed.
    #[error("non-finite {what} ({value}); the update was not applied")]
    NonFinite { what: &'static str, value: f64 },
    /// Optimizer state that does not fit the parameters it is loaded into.
    #[error("optimizer state: {0}")]
    OptimizerState(String),
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{0}")]
    Model(aha_model::ModelError),
    #[error("libtorch: {0}")]
    Torch(tch::TchError),
    /// Generation or reward checking failed (aha-rollout).
    #[error("rollout: {0}")]
    Rollout(String),
}

impl From<crate::config::Invalid> for GrpoError {
    fn from(error: crate::config::Invalid) -> Self {
        Self::Config(error.message)
    }
}

impl From<aha_rollout::RolloutError> for GrpoError {
    fn from(error: aha_rollout::RolloutError) -> Self {
        Self::Rollout(error.to_string())
    }
}

impl From<aha_model::ModelError> for GrpoError {
    fn from(error: aha_model::ModelError) -> Self {
        Self::Model(error)
    }
}

impl From<tch::TchError> for GrpoError {
    fn from(error: tch::TchError) -> Self {
        Self::Torch(error)
    }
}

pub type Result<T, E = GrpoError> = std::result::Result<T, E>;
