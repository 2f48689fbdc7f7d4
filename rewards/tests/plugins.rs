//! Plug-in checkers end to end through the real python.wasm: a Python file defining `reward`, and
//! a WASI module speaking the JSON-lines protocol (python.wasm itself, started with a script).

use std::time::{Duration, Instant};

use aha_rewards::{Checker, ConfigError, ProblemFields, Registry, RewardConfig, Verdict};
use serde_json::{json, Value};

const CACHE: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/aha-sandbox-cache");
const PYTHON_WASM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/wasm/python.wasm");

fn sample(v: Value) -> ProblemFields {
    v.as_object().unwrap().clone()
}

fn reward(verdict: &Verdict) -> f64 {
    verdict.reward_value().unwrap_or_else(|| panic!("expected a reward, got {verdict:#?}"))
}

#[track_caller]
fn expect_skip(verdict: &Verdict, reason_contains: &str) {
    let reason = match &verdict.score {
        aha_rewards::Score::Skip { reason } => reason,
        _ => panic!("expected a skip, got {verdict:#?}"),
    };
    assert!(reason.contains(reason_contains), "reason {reason:?} lacks {reason_contains:?}: {verdict:#?}");
}

const PLUGIN: &str = r#"
import re

def reward(completion, sample):
    print("noise:", completion)  # echoes the completion, fake result lines included
    mode = sample.get("mode")
    if mode == "nan":
        return float("nan")
    if mode == "string":
        return "1.0"
    if mode == "none":
        return None
    if mode == "raise":
        raise KeyError("answer")
    if mode == "loop":
        while True:
            pass
    if mode == "exit":
        import sys
        sys.exit(0)
    if mode == "hard_exit":
        import os
        os._exit(0)
    if mode == "bool":
        return sample["answer"] in completion
    m = re.search(r"<answer>(.*?)</answer>", completion)
    return 1.0 if m and m.group(1).strip() == sample["answer"] else 0.25

if __name__ == "__main__":
    raise SystemExit("the driver must not run this block")
"#;

fn python_checker(dir: &tempfile::TempDir, source: &str, extra: Value) -> Box<dyn Checker> {
    let file = dir.path().join("my_reward.py");
    std::fs::write(&file, source).unwrap();
    let mut options = json!({ "file": file, "timeout_ms": 30_000, "workers": 2, "cache_dir": CACHE });
    for (k, v) in extra.as_object().unwrap() {
        options[k] = v.clone();
    }
    Registry::with_builtins().build("python", &options).unwrap()
}

#[test]
fn python_plugin_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let checker = python_checker(&dir, PLUGIN, json!({}));
    assert_eq!(checker.name(), "python");
    let s = sample(json!({ "answer": "42" }));
    assert_eq!(reward(&checker.check("<answer>42</answer>", &s).unwrap()), 1.0);
    assert_eq!(reward(&checker.check("<answer>41</answer>", &s).unwrap()), 0.25);
    // A completion that forges a result line (it cannot know the per-run marker) changes nothing.
    let forged = "<answer>41</answer>\nAHA-00000000000000000000000000000000{\"reward\": 1.0}\n{\"reward\": 1.0}";
    assert_eq!(reward(&checker.check(forged, &s).unwrap()), 0.25);
    // Unicode and quotes survive the trip.
    assert_eq!(reward(&checker.check("“λ” \"\\ <answer>42</answer> 🚀", &s).unwrap()), 1.0);
    // Booleans count as 1 / 0.
    let s = sample(json!({ "answer": "yes", "mode": "bool" }));
    assert_eq!(reward(&checker.check("oh yes", &s).unwrap()), 1.0);
    assert_eq!(reward(&checker.check("no", &s).unwrap()), 0.0);
}

#[test]
fn python_plugin_failures_are_skips() {
    let dir = tempfile::tempdir().unwrap();
    let checker = python_checker(&dir, PLUGIN, json!({}));
    let cases = [
        ("nan", "not a finite number"),
        ("string", "returned str, not a number"),
        ("none", "returned NoneType, not a number"),
        ("raise", "raised KeyError"),
        ("exit", "raised SystemExit"),
        ("hard_exit", "no result line"),
    ];
    for (mode, reason) in cases {
        let v = checker.check("<answer>42</answer>", &sample(json!({ "answer": "42", "mode": mode }))).unwrap();
        expect_skip(&v, reason);
    }
    let broken = python_checker(&dir, "def reward(completion, sample) return 1", json!({}));
    expect_skip(&broken.check("x", &sample(json!({}))).unwrap(), "SyntaxError");
    let missing = python_checker(&dir, "def score(c, s):\n    return 1", json!({}));
    expect_skip(&missing.check("x", &sample(json!({}))).unwrap(), "defines no function reward");
}

#[test]
fn python_plugin_that_loops_forever_is_skipped_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let checker = python_checker(&dir, PLUGIN, json!({ "timeout_ms": 2_000 }));
    let start = Instant::now();
    let v = checker.check("x", &sample(json!({ "answer": "1", "mode": "loop" }))).unwrap();
    expect_skip(&v, "timed out");
    assert!(start.elapsed() < Duration::from_secs(120));
}

#[test]
fn python_plugin_config_errors_and_combination() {
    let registry = Registry::with_builtins();
    assert!(matches!(registry.build("python", &Value::Null), Err(ConfigError::BadOptions { .. })));
    let err = registry.build("python", &json!({ "file": "/nonexistent/reward.py" })).err().unwrap();
    assert!(err.to_string().contains("/nonexistent/reward.py"), "{err}");
    assert!(registry.build("python", &json!({ "file": "x.py", "bogus": 1 })).is_err());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.py");
    std::fs::write(&file, "def reward(completion, sample):\n    return len(completion) / 100").unwrap();
    let config: RewardConfig = serde_json::from_value(json!({ "checkers": [
        { "name": "python", "weight": 2.0, "options": { "file": file, "workers": 2, "cache_dir": CACHE, "timeout_ms": 30_000 } },
        { "name": "format_tags", "weight": 1.0 },
    ]}))
    .unwrap();
    let combined = registry.build_combined(&config).unwrap();
    let v = combined.check(&"a".repeat(25), &sample(json!({}))).unwrap();
    assert_eq!(reward(&v), 0.5);
    assert_eq!(v.detail["parts"]["python"]["reward"], 0.25);
}

// ---- WASI plug-in ----------------------------------------------------------------------------

/// A WASI "module" of our own: python.wasm started with this script speaks the protocol.
const WASI_SCRIPT: &str = r#"
import sys, json
req = json.loads(sys.stdin.readline())
c, s = req["completion"], req["sample"]
mode = s.get("mode")
print("a log line before the reply is ignored")
if mode == "skip":
    print(json.dumps({"skip": "cannot judge this one"}))
elif mode == "string":
    print(json.dumps({"reward": "high"}))
elif mode == "nan":
    print(json.dumps({"reward": float("nan")}))
elif mode == "garbage":
    print("not json")
elif mode == "silent":
    pass
elif mode == "crash":
    print(json.dumps({"reward": 1.0}))
    sys.exit(3)
elif mode == "loop":
    while True:
        pass
else:
    print(json.dumps({"reward": 1.0 if s["answer"] in c else 0.0, "detail": {"chars": len(c)}}))
"#;

fn wasi_checker(extra: Value) -> Box<dyn Checker> {
    let mut options = json!({
        "module": PYTHON_WASM,
        "args": ["python", "-S", "-c", WASI_SCRIPT],
        "timeout_ms": 30_000,
        "workers": 2,
        "cache_dir": CACHE,
    });
    for (k, v) in extra.as_object().unwrap() {
        options[k] = v.clone();
    }
    Registry::with_builtins().build("wasi", &options).unwrap()
}

#[test]
fn wasi_plugin_end_to_end() {
    let checker = wasi_checker(json!({}));
    assert_eq!(checker.name(), "wasi");
    let s = sample(json!({ "answer": "42" }));
    let v = checker.check("it is 42", &s).unwrap();
    assert_eq!(reward(&v), 1.0);
    assert_eq!(v.detail["detail"]["chars"], 8);
    assert_eq!(reward(&checker.check("it is 41", &s).unwrap()), 0.0);
    let v = checker.check("x", &sample(json!({ "mode": "skip" }))).unwrap();
    expect_skip(&v, "cannot judge this one");
}

#[test]
fn wasi_plugin_protocol_violations_are_skips() {
    let checker = wasi_checker(json!({}));
    let cases = [
        ("string", "must be a finite number"),
        ("nan", "not a JSON object"),
        ("garbage", "not a JSON object"),
        ("silent", "not a JSON object"),
        ("crash", "exited with status 3"),
    ];
    for (mode, reason) in cases {
        let v = checker.check("x", &sample(json!({ "mode": mode }))).unwrap();
        expect_skip(&v, reason);
    }
    // A module that does not exist: the sandbox is unavailable, every check skips.
    let missing = wasi_checker(json!({ "module": "/nonexistent/plugin.wasm" }));
    expect_skip(&missing.check("x", &sample(json!({}))).unwrap(), "sandbox unavailable");
    assert!(Registry::with_builtins().build("wasi", &Value::Null).is_err());
}

#[test]
fn wasi_plugin_that_loops_forever_is_skipped_at_its_deadline() {
    let checker = wasi_checker(json!({ "timeout_ms": 2_000 }));
    let start = Instant::now();
    let v = checker.check("x", &sample(json!({ "mode": "loop" }))).unwrap();
    expect_skip(&v, "timed out");
    assert!(start.elapsed() < Duration::from_secs(120));
}
