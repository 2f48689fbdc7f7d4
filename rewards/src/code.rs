//! The `code` checker: run the completion's Python program against the problem's tests inside the
//! WASM sandbox (`aha-sandbox`: the pre-initialised CPython, else `python.wasm`).
//!
//! The program is the last fenced ```` ```python ```` (or `py`, `python3`) block of the completion,
//! else its last fenced block of any language; without one the reward is 0. The problem gives
//! `tests` (a list of `{"stdin", "stdout"}`), `asserts` (a list of Python assert statements), or
//! both (either may also be a JSON string holding the list). Every test is one sandbox run, and all
//! runs of one completion go to the sandbox pool at once.
//!
//! - **stdin/stdout test**: the program runs with that stdin; it passes when it exits 0 within
//!   every limit and its stdout equals the expected output line by line, each line trimmed, trailing
//!   empty lines ignored, with the same number of lines (a prefix does not pass; printing the right
//!   answer and then crashing does not pass).
//! - **assert test**: a host-written harness (a fixed bootstrap as the program text, the data on
//!   stdin) runs the program, then that one assert, then writes a fresh random marker (128 bits
//!   from a CSPRNG, new for every run) straight to file descriptor 1 and ends the process with
//!   `os._exit(0)`. It passes only when the run exits 0 and the *last line* of stdout is exactly
//!   the marker. A program that exits early (`sys.exit(0)`, `os._exit(0)`, `raise SystemExit`, an
//!   `atexit` or `sys.excepthook` that exits 0), silences `print` / `sys.stdout`, or crashes never
//!   prints it. The marker and the assert are not in the program text (nor in `sys.orig_argv`) or
//!   in the program's own code object, and stdin is already consumed when the program runs.
//!
//! Threat model, honestly: the program runs in the same interpreter as the harness, so a program
//! that walks interpreter internals (the harness's frame via `sys._getframe(1)`, the garbage
//! collector) could find the marker, and an object whose `__eq__` always returns true defeats
//! `assert f(x) == y`. Use stdin/stdout tests where that matters: their expected output never
//! enters the sandbox.
//!
//! Reward: the fraction of tests passed (`binary = true`: 1 only if all pass). A guest that traps,
//! times out or exceeds memory or output just fails that test. When the sandbox itself cannot run
//! (module missing, engine failure) the verdict is a *skip*, never 0. A problem without tests is a
//! skip too.

use std::path::PathBuf;
use std::sync::OnceLock;

use aha_sandbox::{Sandbox, Status, Verdict as RunVerdict};
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::checker::{CheckError, Checker, ProblemFields, Verdict};
use crate::sandboxed::{self, RunOptions, SandboxSpec};

/// Options of the `code` checker.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CodeOptions {
    /// Reward 1 only when every test passes (else 0); default: the fraction passed.
    pub binary: bool,
    /// The Python module; default: `wasm/python.wasm` in aha's assets folder (`aha_sandbox::assets`;
    /// runs start from the pre-initialised CPython beside it).
    pub module: Option<PathBuf>,
    /// Limits of each test run, workers, cache folder.
    #[serde(flatten)]
    pub run: RunOptions,
}

/// The assert harness (the program in argv; it holds no secret): reads `{"c": program, "t":
/// assert, "m": marker}` from stdin, runs the program in a fresh `__main__` namespace, then the
/// assert in a copy of that namespace where every built-in name is the real built-in again (a
/// program that defines its own `len`, `sorted` or `exec`, or patches `builtins`, cannot change
/// what the assert computes), then writes the marker to fd 1 and exits at once, so no `atexit`
/// handler can print after it. `exec`, `compile`, `os.write` and `os._exit` are bound before the
/// program runs.
const ASSERT_HARNESS: &str = r#"import sys, os, json, builtins
def _aha_harness(ex=exec, comp=compile, real=dict(builtins.__dict__), write=os.write, quit=os._exit):
    d = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    m = (d.pop("m") + "\n").encode()
    c = comp(d.pop("c"), "<solution>", "exec")
    t = comp(d.pop("t"), "<test>", "exec")
    del d
    g = {"__name__": "__main__", "__builtins__": builtins}
    ex(c, g)
    h = {k: v for k, v in g.items() if k not in real}
    h["__builtins__"] = real
    ex(t, h)
    try:
        sys.stdout.flush()
    except BaseException:
        pass
    while m:
        m = m[write(1, m):]
    quit(0)
_aha_harness()
"#;

/// One test of a problem.
#[derive(Debug, Clone, PartialEq)]
pub enum CodeTest {
    Io { stdin: String, stdout: String },
    Assert(String),
}

/// Runs completions' programs against tests in the sandbox.
pub struct CodeChecker {
    options: CodeOptions,
    spec: SandboxSpec,
    fixed: Option<Sandbox>,
}

impl Default for CodeChecker {
    fn default() -> Self {
        CodeChecker::new(CodeOptions::default())
    }
}

impl CodeChecker {
    /// The sandbox is built on the first check (and shared with every checker of the same module).
    pub fn new(options: CodeOptions) -> Self {
        let spec = options.run.sandbox_spec(options.module.clone());
        CodeChecker { options, spec, fixed: None }
    }

    /// Runs on this sandbox (a Python one) instead of the shared one.
    pub fn with_sandbox(options: CodeOptions, sandbox: Sandbox) -> Self {
        let mut checker = CodeChecker::new(options);
        checker.fixed = Some(sandbox);
        checker
    }

    fn sandbox(&self) -> Result<Sandbox, String> {
        match &self.fixed {
            Some(sandbox) => Ok(sandbox.clone()),
            None => self.spec.sandbox(),
        }
    }

    /// Runs `code` against `tests`; the verdict as [`Checker::check`] gives it.
    pub fn run_tests(&self, code: &str, tests: &[CodeTest]) -> Verdict {
        let limits = self.options.run.limits();
        let sandbox = match self.sandbox() {
            Ok(sandbox) => sandbox,
            Err(error) => {
                return Verdict::skip(format!("sandbox unavailable: {error}"), json!({ "sandbox_error": error }))
            }
        };
        let mut markers = Vec::with_capacity(tests.len());
        let jobs = tests
            .iter()
            .map(|test| match test {
                CodeTest::Io { stdin, .. } => {
                    markers.push(None);
                    sandboxed::job(code, stdin.as_bytes(), limits)
                }
                CodeTest::Assert(statement) => {
                    let marker = sandboxed::marker();
                    let data = json!({ "c": code, "t": statement, "m": marker }).to_string();
                    markers.push(Some(marker));
                    sandboxed::job(ASSERT_HARNESS, data.into_bytes(), limits)
                }
            })
            .collect();
        let runs = sandbox.run_many(jobs);
        if let Some(failure) = runs.iter().find(|run| sandboxed::is_host_failure(run)) {
            let reason = failure.detail.clone().unwrap_or_default();
            return Verdict::skip(format!("sandbox failure: {reason}"), json!({ "sandbox_error": reason }));
        }
        let mut passed = 0usize;
        let mut details = Vec::with_capacity(tests.len());
        for ((test, marker), run) in tests.iter().zip(&markers).zip(&runs) {
            let (ok, why) = match (test, marker) {
                (CodeTest::Io { stdout, .. }, _) => judge_io(run, stdout),
                (CodeTest::Assert(_), Some(marker)) => judge_assert(run, marker),
                (CodeTest::Assert(_), None) => (false, "internal: no marker".to_string()),
            };
            passed += usize::from(ok);
            let mut entry = json!({
                "kind": if matches!(test, CodeTest::Io { .. }) { "stdio" } else { "assert" },
                "passed": ok,
                "status": run.status.as_str(),
                "wall_ms": run.wall_ms,
            });
            if !ok {
                entry["reason"] = json!(why);
                entry["stderr_tail"] = json!(sandboxed::tail(&run.stderr, 400));
            }
            details.push(entry);
        }
        let total = tests.len();
        let reward = if self.options.binary {
            if passed == total {
                1.0
            } else {
                0.0
            }
        } else {
            passed as f64 / total as f64
        };
        Verdict::reward(
            reward,
            json!({ "passed": passed, "total": total, "binary": self.options.binary, "tests": details }),
        )
    }
}

/// A stdin/stdout test: exit 0 within limits, and the same trimmed lines.
fn judge_io(run: &RunVerdict, expected: &str) -> (bool, String) {
    if run.status != Status::Ok {
        return (false, format!("the program did not exit 0 ({})", run.status));
    }
    if output_lines(&run.stdout) == output_lines(expected) {
        (true, String::new())
    } else {
        (false, format!("wrong output: {:?}", sandboxed::head(&run.stdout, 200)))
    }
}

/// Lines with surrounding whitespace trimmed, trailing empty lines dropped.
fn output_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().map(str::trim).collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

/// An assert test: exit 0 and the marker as the very last line of stdout.
fn judge_assert(run: &RunVerdict, marker: &str) -> (bool, String) {
    if run.status != Status::Ok {
        return (false, format!("the program or the assert failed ({})", run.status));
    }
    let body = run.stdout.strip_suffix('\n').unwrap_or("\u{0}");
    let last = body.rsplit('\n').next().unwrap_or("");
    if last == marker {
        (true, String::new())
    } else {
        (false, "the harness's marker was not the last line of stdout: the assert was never passed".into())
    }
}

/// The program of a completion: the last ```python block, else the last fenced block; with which.
pub fn extract_code(completion: &str) -> Option<(&str, &'static str)> {
    static FENCE: OnceLock<Regex> = OnceLock::new();
    let fence = FENCE.get_or_init(|| {
        Regex::new(r"(?ms)^[ \t]*```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)^[ \t]*```").expect("a valid regex")
    });
    let mut last_python = None;
    let mut last_any = None;
    for captures in fence.captures_iter(completion) {
        let body = captures.get(2).map_or("", |m| m.as_str());
        let lang = captures.get(1).map_or("", |m| m.as_str()).to_ascii_lowercase();
        if matches!(lang.as_str(), "python" | "python3" | "py") {
            last_python = Some(body);
        }
        last_any = Some(body);
    }
    match (last_python, last_any) {
        (Some(code), _) => Some((code, "python")),
        (None, Some(code)) => Some((code, "fallback")),
        _ => None,
    }
}

/// The tests of a sample: `tests` then `asserts`, each a list or a JSON string holding one.
pub fn parse_tests(fields: &ProblemFields) -> Result<Vec<CodeTest>, CheckError> {
    let tests = list_field(fields, "tests", "a list of {\"stdin\", \"stdout\"} objects")?;
    let asserts = list_field(fields, "asserts", "a list of Python assert statements (strings)")?;
    if tests.is_none() && asserts.is_none() {
        return Err(CheckError::MissingField { field: "tests".into() });
    }
    let mut out = Vec::new();
    for test in tests.unwrap_or_default() {
        let text = |key: &str| match test.get(key) {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        match (text("stdin"), text("stdout")) {
            (Some(stdin), Some(stdout)) => out.push(CodeTest::Io { stdin, stdout }),
            _ => {
                return Err(CheckError::BadField {
                    field: "tests".into(),
                    expected: "a list of {\"stdin\": string, \"stdout\": string} objects".into(),
                })
            }
        }
    }
    for statement in asserts.unwrap_or_default() {
        match statement {
            Value::String(s) => out.push(CodeTest::Assert(s)),
            _ => {
                return Err(CheckError::BadField {
                    field: "asserts".into(),
                    expected: "a list of Python assert statements (strings)".into(),
                })
            }
        }
    }
    Ok(out)
}

fn list_field(fields: &ProblemFields, name: &str, expected: &str) -> Result<Option<Vec<Value>>, CheckError> {
    let bad = || CheckError::BadField { field: name.into(), expected: expected.into() };
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => Ok(Some(items.clone())),
        Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(items)) => Ok(Some(items)),
            _ => Err(bad()),
        },
        Some(_) => Err(bad()),
    }
}

impl Checker for CodeChecker {
    fn name(&self) -> &str {
        "code"
    }

    fn check(&self, completion: &str, fields: &ProblemFields) -> Result<Verdict, CheckError> {
        let tests = parse_tests(fields)?;
        if tests.is_empty() {
            return Ok(Verdict::skip("the problem has no tests", json!({ "total": 0 })));
        }
        let Some((code, block)) = extract_code(completion) else {
            return Ok(Verdict::reward(
                0.0,
                json!({ "passed": 0, "total": tests.len(), "reason": "no fenced code block in the completion" }),
            ));
        };
        let mut verdict = self.run_tests(code, &tests);
        if let Value::Object(detail) = &mut verdict.detail {
            detail.insert("block".into(), json!(block));
            detail.insert("code_chars".into(), json!(code.chars().count()));
        }
        Ok(verdict)
    }
}
