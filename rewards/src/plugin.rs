//! Custom checkers without forking aha, run inside the WASM sandbox with the same limits as code.
//!
//! **`python`** (options `{"file": PATH, "timeout_ms", "memory_mb", "max_output_bytes", "module",
//! "workers", "cache_dir"}`): `PATH` defines `reward(completion, sample) -> float`. Each check runs
//! one CPython (python.wasm) guest: the host's driver reads `{"completion", "sample"}` as JSON from
//! stdin, executes the file's source in a module namespace named `aha_plugin` (so an
//! `if __name__ == "__main__":` block does not run), calls `reward`, and writes one result line
//! tagged with a per-run random marker, so nothing the file (or a completion it echoes) prints can
//! pass for the result. `True`/`False` count as 1/0. The guest has the standard library only, no
//! files, no network, no environment.
//!
//! **`wasi`** (options `{"module": PATH, "args": [...], "timeout_ms", "memory_mb", ...}`): any WASI
//! preview-1 command module, started with argv `args` (default: the module's file name). Protocol:
//! the host writes one line `{"completion": "...", "sample": {...}}` to stdin; the module writes
//! `{"reward": <finite number>, "detail": <any JSON, optional>}` or `{"skip": "<reason>"}` as the
//! last non-empty line of stdout (earlier lines are ignored; logs belong on stderr) and exits 0.
//!
//! Failure policy (both): a plug-in that raises, returns something that is not a finite number
//! (`None`, a string, NaN, ±inf), breaks the protocol, exits non-zero, times out or runs out of
//! memory gives a **skip** with the reason in the detail, never a reward: it is a fault of the
//! checker (or a problem it cannot judge), and a made-up 0 would teach the model something false.
//! A skipped sample carries no learning signal and is counted separately in the means.

use std::path::PathBuf;

use aha_sandbox::{Sandbox, Status, Verdict as RunVerdict};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::checker::{CheckError, Checker, ProblemFields, Verdict};
use crate::registry::ConfigError;
use crate::sandboxed::{self, RunOptions, SandboxSpec};

/// Options of the `python` plug-in checker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PythonPluginOptions {
    /// The Python file defining `reward(completion, sample)`.
    pub file: PathBuf,
    /// The name the checker reports (default `python`).
    #[serde(default)]
    pub name: Option<String>,
    /// The Python module; default: `wasm/python.wasm` in aha's assets folder (`aha_sandbox::assets`;
    /// runs start from the pre-initialised CPython beside it).
    #[serde(default)]
    pub module: Option<PathBuf>,
    /// Limits of each run, workers, cache folder.
    #[serde(flatten)]
    pub run: RunOptions,
}

/// Options of the `wasi` plug-in checker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WasiPluginOptions {
    /// The WASI preview-1 command module.
    pub module: PathBuf,
    /// The guest's argv (default: the module's file name).
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// The name the checker reports (default `wasi`).
    #[serde(default)]
    pub name: Option<String>,
    /// Limits of each run, workers, cache folder.
    #[serde(flatten)]
    pub run: RunOptions,
}

/// A `reward(completion, sample)` function in a Python file, run in the sandbox.
pub struct PythonPluginChecker {
    name: String,
    file: PathBuf,
    source: String,
    limits: aha_sandbox::Limits,
    spec: SandboxSpec,
}

impl PythonPluginChecker {
    /// Reads the file now (a missing file is a configuration error); the sandbox is built on the
    /// first check and shared.
    pub fn new(options: PythonPluginOptions) -> Result<Self, ConfigError> {
        let source = std::fs::read_to_string(&options.file)
            .map_err(|e| ConfigError::options("python", format!("reading {}: {e}", options.file.display())))?;
        Ok(PythonPluginChecker {
            name: options.name.clone().unwrap_or_else(|| "python".into()),
            limits: options.run.limits(),
            spec: options.run.sandbox_spec(options.module.clone()),
            file: options.file,
            source,
        })
    }

    /// The driver program for one run: the file's source (as a string literal) and the marker.
    fn driver(&self, marker: &str) -> String {
        // A JSON string literal is a valid Python string literal with the same value (serde_json
        // escapes only `"`, `\` and control characters, with escapes Python shares).
        let source = serde_json::to_string(&self.source).expect("a string serialises");
        let file = serde_json::to_string(&self.file.display().to_string()).expect("a string serialises");
        let marker = serde_json::to_string(marker).expect("a string serialises");
        format!(
            r#"import sys, os, json, math
def _aha_driver(source={source}, file={file}, marker={marker}, write=os.write, quit=os._exit):
    try:
        data = json.loads(sys.stdin.buffer.read().decode("utf-8"))
        g = {{"__name__": "aha_plugin", "__file__": file, "__builtins__": __builtins__}}
        exec(compile(source, file, "exec"), g)
        fn = g.get("reward")
        if not callable(fn):
            out = {{"error": "the file defines no function reward(completion, sample)"}}
        else:
            r = fn(data["completion"], data["sample"])
            if isinstance(r, bool):
                r = float(r)
            if not isinstance(r, (int, float)):
                out = {{"error": "reward() returned %s, not a number" % type(r).__name__, "value": repr(r)[:200]}}
            else:
                r = float(r)
                if math.isfinite(r):
                    out = {{"reward": r}}
                else:
                    out = {{"error": "reward() returned %r, not a finite number" % r}}
    except BaseException as e:
        import traceback
        out = {{"error": "raised %s: %s" % (type(e).__name__, str(e)[:500]), "traceback": traceback.format_exc()[-2000:]}}
    try:
        sys.stdout.flush()
    except BaseException:
        pass
    line = ("\n" + marker + json.dumps(out) + "\n").encode()
    while line:
        line = line[write(1, line):]
    quit(0)
_aha_driver()
"#
        )
    }
}

impl Checker for PythonPluginChecker {
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self, completion: &str, sample: &ProblemFields) -> Result<Verdict, CheckError> {
        let base = json!({ "plugin": self.file.display().to_string() });
        let sandbox = match self.spec.sandbox() {
            Ok(sandbox) => sandbox,
            Err(error) => return Ok(skip(format!("sandbox unavailable: {error}"), base, None)),
        };
        let marker = sandboxed::marker();
        let stdin = json!({ "completion": completion, "sample": sample }).to_string();
        let run = sandbox.run(sandboxed::job(self.driver(&marker), stdin.into_bytes(), self.limits));
        if run.status != Status::Ok {
            return Ok(run_failed(&run, base));
        }
        let Some(result) = run.stdout.lines().rev().find_map(|line| line.strip_prefix(marker.as_str())) else {
            return Ok(skip("the plug-in's driver printed no result line".into(), base, Some(&run)));
        };
        let result: Map<String, Value> = match serde_json::from_str(result) {
            Ok(result) => result,
            Err(e) => return Ok(skip(format!("unreadable result line: {e}"), base, Some(&run))),
        };
        match result.get("reward").and_then(Value::as_f64) {
            Some(reward) if reward.is_finite() => Ok(Verdict::reward(reward, base)),
            _ => {
                let error = result.get("error").and_then(Value::as_str).unwrap_or("no reward").to_string();
                let mut detail = base;
                detail["error"] = json!(error);
                for key in ["value", "traceback"] {
                    if let Some(v) = result.get(key) {
                        detail[key] = v.clone();
                    }
                }
                Ok(Verdict::skip(format!("python plug-in: {error}"), detail))
            }
        }
    }
}

/// Any WASI command module speaking the JSON-lines protocol.
pub struct WasiPluginChecker {
    name: String,
    module: PathBuf,
    limits: aha_sandbox::Limits,
    spec: SandboxSpec,
    fixed: Option<Sandbox>,
}

impl WasiPluginChecker {
    /// The module is loaded on the first check (a missing one makes every check a skip).
    pub fn new(options: WasiPluginOptions) -> Self {
        let argv = options.args.clone().unwrap_or_else(|| {
            vec![options
                .module
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "plugin".into())]
        });
        let mut spec = options.run.sandbox_spec(Some(options.module.clone()));
        spec.argv = Some(argv);
        WasiPluginChecker {
            name: options.name.clone().unwrap_or_else(|| "wasi".into()),
            module: options.module,
            limits: options.run.limits(),
            spec,
            fixed: None,
        }
    }

    /// Runs on this sandbox (built with the plug-in's argv) instead of the shared one.
    pub fn with_sandbox(options: WasiPluginOptions, sandbox: Sandbox) -> Self {
        let mut checker = WasiPluginChecker::new(options);
        checker.fixed = Some(sandbox);
        checker
    }
}

impl Checker for WasiPluginChecker {
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self, completion: &str, sample: &ProblemFields) -> Result<Verdict, CheckError> {
        let base = json!({ "plugin": self.module.display().to_string() });
        let sandbox = match &self.fixed {
            Some(sandbox) => sandbox.clone(),
            None => match self.spec.sandbox() {
                Ok(sandbox) => sandbox,
                Err(error) => return Ok(skip(format!("sandbox unavailable: {error}"), base, None)),
            },
        };
        let line = json!({ "completion": completion, "sample": sample }).to_string() + "\n";
        let run = sandbox.run(sandboxed::job("", line.into_bytes(), self.limits));
        if run.status != Status::Ok {
            return Ok(run_failed(&run, base));
        }
        let Some(last) = run.stdout.lines().rev().map(str::trim).find(|l| !l.is_empty()) else {
            return Ok(skip("protocol: the module printed nothing".into(), base, Some(&run)));
        };
        let reply: Map<String, Value> = match serde_json::from_str(last) {
            Ok(reply) => reply,
            Err(e) => {
                let why =
                    format!("protocol: the last line is not a JSON object ({e}): {:?}", sandboxed::head(last, 200));
                return Ok(skip(why, base, Some(&run)));
            }
        };
        if let Some(reason) = reply.get("skip") {
            let reason = reason.as_str().map(str::to_string).unwrap_or_else(|| reason.to_string());
            let mut detail = base;
            detail["detail"] = reply.get("detail").cloned().unwrap_or(Value::Null);
            return Ok(Verdict::skip(reason, detail));
        }
        match reply.get("reward").and_then(Value::as_f64) {
            Some(reward) if reward.is_finite() => {
                let mut detail = base;
                detail["detail"] = reply.get("detail").cloned().unwrap_or(Value::Null);
                Ok(Verdict::reward(reward, detail))
            }
            _ => {
                let got = reply.get("reward").map(Value::to_string).unwrap_or_else(|| "nothing".into());
                Ok(skip(format!("protocol: `reward` must be a finite number, got {got}"), base, Some(&run)))
            }
        }
    }
}

fn skip(reason: String, mut detail: Value, run: Option<&RunVerdict>) -> Verdict {
    if let Some(run) = run {
        detail["run"] = sandboxed::run_detail(run);
    }
    detail["reason"] = json!(reason);
    Verdict::skip(reason, detail)
}

fn run_failed(run: &RunVerdict, base: Value) -> Verdict {
    let reason = match run.status {
        Status::Timeout => "plug-in timed out".to_string(),
        Status::MemoryLimit => "plug-in exceeded its memory cap".to_string(),
        Status::OutputLimit => "plug-in exceeded its output cap".to_string(),
        Status::Exit => format!("plug-in exited with status {}", run.exit_code.unwrap_or(-1)),
        Status::Error => format!("plug-in failed: {}", run.detail.clone().unwrap_or_default()),
        Status::Ok => "plug-in finished".to_string(),
    };
    skip(reason, base, Some(run))
}
