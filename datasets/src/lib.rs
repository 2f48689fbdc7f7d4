//! aha-datasets: the problems an RLVR run trains and evaluates on.
//!
//! What it does:
//! - Loads problem sets from local files ([`Dataset::load`]): JSON lines, JSON arrays and Parquet
//!   (read row by row through the `parquet` crate's record API, snappy/gzip/lz4 pages). A
//!   [`FieldMapping`] says which column is the question, where the gold answer is and how to read
//!   it, and which columns go to the reward checker; [`Preset`]s cover GSM8K, MATH, Countdown
//!   and code problems. A row that lacks what its checker needs is skipped and listed (file and
//!   line or row), or, in strict mode, is an error.
//! - Shuffles, splits train/eval and iterates epochs deterministically from a seed.
//! - Renders prompts ([`PromptTemplate`]): DeepSeek-R1-Zero's template, a boxed-answer math
//!   template, the plain question, or your own text with `{field}` placeholders.
//! - Generates built-in synthetic tasks ([`synthetic`]): multi-digit arithmetic, column addition
//!   (with worked and guessed answers, the demo's pretraining corpus) and Countdown
//!   instances solvable by construction, seeded, with difficulty knobs; the completions of the
//!   demos' base models ([`SelfCheck`], [`ToolUse`]).
//! - [`ProblemSource`] and [`Prompter`]: the settings `aha train` and `aha eval` share (a file
//!   or `builtin:` task with its preset and column overrides; a template, optionally inside the
//!   model's chat template).
//! - Computes evaluation metrics ([`metrics`]): pass@1, unbiased pass@k, maj@k.
//!
//! What it does not do: download anything, tokenize, or judge completions (that is
//! aha-rewards); the tokenizer's chat template is aha-model's `ChatTemplate`.
//!
//! Main types: [`Problem`] (`id`, `question`, and the `fields` checkers read: `answer`,
//! `target`/`numbers`, `tests`/`asserts`), [`Dataset`], [`LoadOptions`], [`FieldMapping`],
//! [`Preset`], [`PromptTemplate`], [`DatasetError`].

pub mod dataset;
pub mod error;
pub mod mapping;
pub mod metrics;
pub mod problem;
pub mod self_check;
pub mod source;
pub mod synthetic;
pub mod template;
pub mod tool_use;

pub use dataset::{epoch_order, Dataset, Epochs, Format, LoadOptions, Skipped, SplitSize};
pub use error::{DatasetError, Result, Row, RowLocation};
pub use mapping::{last_boxed, AnswerFormat, AnswerSource, FieldMapping, Preset};
pub use metrics::{majority_vote, normalize_answer, pass_at_k, ProblemScore, SampleOutcome, Summary};
pub use problem::Problem;
pub use self_check::{CheckedCompletion, SelfCheck};
pub use source::{ProblemSource, Prompter};
pub use synthetic::{Addition, Arithmetic, BuiltinSpec, BuiltinTask, Countdown, Multiplication};
pub use template::PromptTemplate;
pub use tool_use::{ToolCompletion, ToolUse};
