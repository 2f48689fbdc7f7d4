//! Verifiable rewards for RLVR: programs that judge a model's completion against a problem's
//! known answer, fast, in-process, and hard to game.
//!
//! What it does:
//! - [`Checker`]: the trait every reward implements (`Send + Sync`, never panics, bounded time).
//!   It takes the completion and the problem's fields (`ProblemFields`, a JSON object) and returns a
//!   [`Verdict`]: a reward in the checker's documented range, or a *skip* when the problem itself
//!   cannot be judged, plus a serialisable detail (what was extracted, why it failed).
//! - Built-in checkers: [`math::MathChecker`] (`math`), [`countdown::CountdownChecker`]
//!   (`countdown`), [`format::FormatChecker`] (`format`), [`format::TagCountChecker`]
//!   (`format_tags`), [`length::LengthChecker`] (`length`), [`code::CodeChecker`] (`code`: the
//!   completion's Python program against stdin/stdout tests or asserts, in the WASM sandbox).
//! - Plug-ins without forking aha: [`plugin::PythonPluginChecker`] (`python`: a file defining
//!   `reward(completion, sample)`, run in the sandbox) and [`plugin::WasiPluginChecker`] (`wasi`:
//!   any WASI module speaking a JSON-lines protocol); or a Rust type registered in a [`Registry`]
//!   (see `examples/custom-checker`).
//! - [`Registry`]: checkers by name (a Rust type of your own is one `register` call away);
//!   [`RewardConfig`] / [`CombinedChecker`]: a weighted sum from `[{name, weight, options}]` that
//!   reports each part; [`MeanTracker`]: per-checker means.
//!
//! What it does not do: run model-written or plug-in code outside the WASM sandbox. Nothing here
//! evaluates raw text with a general-purpose expression engine: math and countdown answers are parsed by our own recursive-descent parsers
//! and evaluated with exact rational arithmetic where possible.

pub mod checker;
pub mod code;
pub mod countdown;
pub mod format;
pub mod length;
pub mod math;
pub mod plugin;
pub mod registry;
pub mod sandboxed;

pub use checker::{field, CheckError, Checker, ProblemFields, Score, Verdict};
pub use registry::{
    parse_options, parse_required, Breakdown, CheckerSpec, CombinedChecker, ConfigError, Factory, MeanStat,
    MeanTracker, Registry, RewardConfig,
};
