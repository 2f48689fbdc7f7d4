use std::path::PathBuf;

/// Everything that can go wrong while reading, running or writing a model. Each message is one
/// line that names the file, field or tensor at fault.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },

    #[error("{}: unsupported model_type \"{found}\" (supported: {})", path.display(), crate::Architecture::SUPPORTED.join(", "))]
    UnsupportedArchitecture { path: PathBuf, found: String },

    #[error("{}: no model.safetensors or model.safetensors.index.json", dir.display())]
    NoWeights { dir: PathBuf },

    #[error("{}: {message}", path.display())]
    Weights { path: PathBuf, message: String },

    #[error("tensor {name} is missing from the checkpoint in {}", dir.display())]
    MissingTensor { name: String, dir: PathBuf },

    #[error("tensor {name} has shape {found:?}, expected {expected:?} from config.json")]
    ShapeMismatch { name: String, expected: Vec<i64>, found: Vec<i64> },

    #[error("{}: {message}", path.display())]
    Tokenizer { path: PathBuf, message: String },

    #[error("invalid input: {0}")]
    Input(String),

    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

pub(crate) fn io_error(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ModelError {
    let path = path.into();
    move |source| ModelError::Io { path, source }
}
