use std::path::PathBuf;

/// Everything that can go wrong while reading, running or writing a model. Each message is one
/// line that names the file, field or tensor at fault, and includes its cause (so no variant
/// exposes a `source`: printing the chain would repeat it).
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },

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
    Torch(tch::TchError),
}

impl From<tch::TchError> for ModelError {
    fn from(error: tch::TchError) -> Self {
        Self::Torch(error)
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

pub(crate) fn io_error(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ModelError {
    let path = path.into();
    move |error| ModelError::Io { path, error }
}
