//! The outcome of one guest run.

use serde::Serialize;

/// How a run ended. Serialised in snake_case (`"memory_limit"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The guest exited with status 0.
    Ok,
    /// The guest exited with a non-zero status (an uncaught Python exception exits 1).
    Exit,
    /// The guest trapped (e.g. wasm stack overflow) or the engine failed.
    Error,
    /// The wall-clock deadline passed, or the fuel ran out.
    Timeout,
    /// The guest asked for more linear memory than its cap and did not exit 0.
    MemoryLimit,
    /// The guest wrote more than the output cap to stdout or stderr.
    OutputLimit,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Exit => "exit",
            Status::Error => "error",
            Status::Timeout => "timeout",
            Status::MemoryLimit => "memory_limit",
            Status::OutputLimit => "output_limit",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict of one run: `{"status", "exit_code", "stdout", "stderr", "wall_ms", "fuel_used",
/// "detail"}` in JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub status: Status,
    /// The guest's exit status when it exited (`ok`, `exit`, and `memory_limit` / `output_limit`
    /// runs that exited); `None` when it was stopped or trapped.
    pub exit_code: Option<i32>,
    /// Captured stdout, at most the output cap, decoded as UTF-8 (invalid bytes replaced).
    pub stdout: String,
    /// Captured stderr, at most the output cap (a Python traceback lands here).
    pub stderr: String,
    /// Wall time from the start of instantiation to the end of the run, in milliseconds.
    pub wall_ms: u64,
    /// Wasm fuel consumed (about one unit per instruction); `None` when metering is off.
    pub fuel_used: Option<u64>,
    /// A human-readable reason for `error`, `timeout`, `memory_limit` and `output_limit`.
    pub detail: Option<String>,
}

impl Verdict {
    /// True when the guest exited 0 within every limit.
    pub fn is_ok(&self) -> bool {
        self.status == Status::Ok
    }
}
