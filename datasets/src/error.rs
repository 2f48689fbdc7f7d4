//! [`DatasetError`]: one line naming the file, row and field at fault.

use std::fmt;
use std::path::PathBuf;

/// Where a row came from: a line of a JSONL file (1-based), or a row of a JSON array or Parquet
/// file (0-based, as `pandas` and `datasets` count them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowLocation {
    pub path: PathBuf,
    pub row: Row,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Row {
    Line(usize),
    Index(usize),
}

impl RowLocation {
    /// A short, stable problem id: the file name with `:line` or `#row`.
    pub fn id(&self) -> String {
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match self.row {
            Row::Line(line) => format!("{name}:{line}"),
            Row::Index(index) => format!("{name}#{index}"),
        }
    }
}

impl fmt::Display for RowLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.row {
            Row::Line(line) => write!(f, "{}:{line}", self.path.display()),
            Row::Index(index) => write!(f, "{} row {index}", self.path.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },

    /// The file as a whole cannot be read (not a JSON array, not Parquet, unknown extension).
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },

    /// A row that cannot become a problem, in strict mode (otherwise it is skipped).
    #[error("{location}: {message}")]
    Row { location: RowLocation, message: String },

    /// A prompt template that does not parse or names a field the problem lacks.
    #[error("template: {0}")]
    Template(String),

    /// A bad name or option: a preset, a built-in task spec, a split size.
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = DatasetError> = std::result::Result<T, E>;
