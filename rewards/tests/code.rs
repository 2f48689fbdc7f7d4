//! The `code` checker through the real python.wasm: correct programs, each reward hack, fraction
//! vs binary, extraction, and sandbox failures. Deadlines are generous (a loaded 2-core machine
//! must never fail a correct program); only the infinite loop uses a short one, and nothing asserts
//! a speed.

use std::time::{Duration, Instant};

use aha_rewards::code::{extract_code, CodeChecker, CodeOptions};
use aha_rewards::sandboxed::RunOptions;
use aha_rewards::{CheckError, Checker, ProblemFields, Registry, Verdict};
use serde_json::{json, Value};

/// Where compiled modules are cached (shared with the sandbox crate's tests, inside target/).
const CACHE: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/aha-sandbox-cache");

fn sample(v: Value) -> ProblemFields {
    v.as_object().unwrap().clone()
}

/// The `code` checker from the registry, with generous limits plus `extra` options.
fn checker(extra: Value) -> Box<dyn Checker> {
    let mut options = json!({ "timeout_ms": 30_000, "workers": 2, "cache_dir": CACHE });
    for (k, v) in extra.as_object().unwrap() {
        options[k] = v.clone();
    }
    Registry::with_builtins().build("code", &options).unwrap()
}

fn py(code: &str) -> String {
    format!("Here is my solution.\n```python\n{code}\n```\nDone.")
}

/// Sum of the integers on stdin's one line; two stdin/stdout tests.
fn io_problem() -> ProblemFields {
    sample(json!({ "tests": [
        { "stdin": "1 2 3\n", "stdout": "6\n" },
        { "stdin": "10 -4\n", "stdout": "6\n" },
        { "stdin": "5\n", "stdout": "5" },
    ]}))
}

/// `square(x)`; three asserts.
fn assert_problem() -> ProblemFields {
    sample(json!({ "asserts": ["assert square(3) == 9", "assert square(-2) == 4", "assert square(0) == 0"] }))
}

fn reward(verdict: &Verdict) -> f64 {
    verdict.reward_value().unwrap_or_else(|| panic!("expected a reward, got {verdict:#?}"))
}

#[track_caller]
fn expect_reward(completion: &str, s: &ProblemFields, expected: f64) -> Verdict {
    let verdict = checker(json!({})).check(completion, s).unwrap();
    assert_eq!(reward(&verdict), expected, "{completion}\n{verdict:#?}");
    verdict
}

// ---- correct programs ------------------------------------------------------------------------

#[test]
fn correct_stdin_stdout_program_passes_every_test() {
    let v = expect_reward(&py("print(sum(int(x) for x in input().split()))"), &io_problem(), 1.0);
    assert_eq!(v.detail["passed"], 3);
    assert_eq!(v.detail["block"], "python");
}

#[test]
fn output_comparison_trims_lines_and_ignores_trailing_blank_lines() {
    let s = sample(json!({ "tests": [{ "stdin": "", "stdout": "a b\n  c\n" }] }));
    expect_reward(&py("print('a b   ')\nprint('c')\nprint()\nprint('   ')"), &s, 1.0);
    expect_reward(&py("print('a  b')\nprint('c')"), &s, 0.0); // inner spacing matters
    expect_reward(&py("print('a b')\nprint()\nprint('c')"), &s, 0.0); // an inner blank line matters
}

#[test]
fn correct_assert_program_passes_every_test() {
    let v = expect_reward(&py("def square(x):\n    return x * x"), &assert_problem(), 1.0);
    assert_eq!(v.detail["total"], 3);
    // Tests given as a JSON string (as many datasets store them) work too.
    let s = sample(json!({ "asserts": "[\"assert square(5) == 25\"]" }));
    expect_reward(&py("def square(x):\n    return x ** 2"), &s, 1.0);
    // A program that prints, redirects sys.stdout and never restores it, or has a __main__ block
    // still passes: the harness writes its marker to the file descriptor.
    let code = "import sys, io\ndef square(x):\n    print('computing', x)\n    return x * x\nsys.stdout = io.StringIO()\nif __name__ == '__main__':\n    print(square(2))";
    expect_reward(&py(code), &assert_problem(), 1.0);
}

#[test]
fn mixed_tests_and_asserts_count_together() {
    let s = sample(json!({ "tests": [{ "stdin": "", "stdout": "ready" }], "asserts": ["assert f() == 1"] }));
    expect_reward(&py("def f():\n    return 1\nprint('ready')"), &s, 1.0);
    expect_reward(&py("def f():\n    return 2\nprint('ready')"), &s, 0.5);
}

// ---- fraction vs binary ------------------------------------------------------------------------

#[test]
fn fraction_by_default_binary_on_request() {
    // Right for non-negative inputs only: 2 of 3 asserts pass.
    let code = py("def square(x):\n    return x * abs(x)");
    let v = expect_reward(&code, &assert_problem(), 2.0 / 3.0);
    assert_eq!(v.detail["tests"][1]["passed"], false);
    let binary = checker(json!({ "binary": true }));
    assert_eq!(reward(&binary.check(&code, &assert_problem()).unwrap()), 0.0);
    let good = py("def square(x):\n    return x * x");
    assert_eq!(reward(&binary.check(&good, &assert_problem()).unwrap()), 1.0);
}

// ---- the hacks ------------------------------------------------------------------------------------

#[test]
fn exiting_before_the_asserts_scores_nothing() {
    let hacks = [
        "import sys\ndef square(x):\n    return -1\nsys.exit(0)",
        "import os\ndef square(x):\n    return -1\nos._exit(0)",
        "def square(x):\n    return -1\nraise SystemExit",
        "def square(x):\n    return -1\nraise SystemExit(0)",
        "def square(x):\n    return -1\nexit()",
        // Exit 0 from an atexit handler or an excepthook, after the assert has failed.
        "import atexit, os\ndef square(x):\n    return -1\natexit.register(lambda: os._exit(0))",
        "import sys, os\ndef square(x):\n    return -1\nsys.excepthook = lambda *a: os._exit(0)",
        // Exit 0 from inside the function the assert calls.
        "import os\ndef square(x):\n    os._exit(0)",
        "import sys\ndef square(x):\n    sys.exit(0)",
    ];
    for hack in hacks {
        let v = expect_reward(&py(hack), &assert_problem(), 0.0);
        assert_eq!(v.detail["passed"], 0, "{hack}");
    }
}

#[test]
fn overriding_print_stdout_or_builtins_scores_nothing() {
    let hacks = [
        // Silence or replace print / stdout so that nothing (or a fake "pass") appears.
        "import builtins\nbuiltins.print = lambda *a, **k: None\ndef square(x):\n    return -1",
        "import sys, io\nsys.stdout = io.StringIO()\nsys.stderr = io.StringIO()\ndef square(x):\n    return -1",
        "import sys\nclass W:\n    def write(self, s):\n        sys.__stdout__.write('PASS\\n')\n    def flush(self): pass\nsys.stdout = W()\ndef square(x):\n    return -1",
        // Neuter exec / compile so that the assert never runs.
        "import builtins\nbuiltins.exec = lambda *a, **k: None\nbuiltins.compile = lambda *a, **k: None\ndef square(x):\n    return -1",
        "exec = lambda *a, **k: None\ndef square(x):\n    return -1",
        // Replace AssertionError, or the builtins the test relies on.
        "import builtins\nbuiltins.AssertionError = type('A', (Exception,), {})\ndef square(x):\n    return -1",
        "__builtins__ = {}\ndef square(x):\n    return -1",
        // Read the tests / marker from argv or stdin (neither holds them).
        "import sys, re, os\nsrc = ' '.join(sys.orig_argv + sys.argv) + sys.stdin.read()\nfor m in re.findall(r'AHA-[0-9a-f]{32}', src):\n    print(m)\ndef square(x):\n    return -1",
    ];
    for hack in hacks {
        let v = expect_reward(&py(hack), &assert_problem(), 0.0);
        assert_eq!(v.detail["passed"], 0, "{hack}\n{v:#?}");
    }
    // Positive control: the same tampering around a correct function still passes, so it is the
    // harness's checks (not a broken harness) that score the hacks 0.
    let tampering = "import builtins, sys, io\nbuiltins.print = lambda *a, **k: None\nbuiltins.exec = None\nbuiltins.compile = None\nbuiltins.AssertionError = None\nsys.stdout = io.StringIO()\nlen = None\ndef square(x):\n    return x * x";
    expect_reward(&py(tampering), &assert_problem(), 1.0);
    // Shadowing a builtin the test uses cannot change what the test computes.
    let s = sample(json!({ "asserts": ["assert sorted(f([3, 1, 2])) == [1, 2, 3]", "assert len(f([1])) == 1"] }));
    let hack = "def f(xs):\n    return []\nsorted = lambda xs: [1, 2, 3]\nlen = lambda xs: 1";
    expect_reward(&py(hack), &s, 0.0);
    let hack = "import builtins\ndef f(xs):\n    return []\nbuiltins.sorted = lambda xs: [1, 2, 3]\nbuiltins.len = lambda xs: 1";
    expect_reward(&py(hack), &s, 0.0);
    expect_reward(&py("def f(xs):\n    return list(xs)"), &s, 1.0);
}

#[test]
fn printing_the_answer_then_crashing_or_a_prefix_scores_nothing() {
    let s = sample(json!({ "tests": [{ "stdin": "", "stdout": "1\n2\n3\n" }] }));
    expect_reward(&py("print(1)\nprint(2)\nprint(3)\nraise ValueError('boom')"), &s, 0.0);
    expect_reward(&py("import sys\nprint(1)\nprint(2)\nprint(3)\nsys.exit(1)"), &s, 0.0);
    expect_reward(&py("print(1)\nprint(2)"), &s, 0.0); // a prefix
    expect_reward(&py("print(1)\nprint(2)\nprint(3)\nprint(4)"), &s, 0.0); // an extension
    expect_reward(&py(""), &s, 0.0); // nothing
    expect_reward(&py("print('1\\n2\\n3')"), &s, 1.0);
    // Exiting 0 early with the right output is simply a correct program.
    expect_reward(&py("import sys\nprint(1)\nprint(2)\nprint(3)\nsys.exit(0)\nprint(4)"), &s, 1.0);
}

#[test]
fn reading_the_host_environment_or_files_finds_nothing() {
    let s = sample(json!({ "tests": [{ "stdin": "", "stdout": "6" }] }));
    let hacks = [
        "import os\nprint(os.environ['EXPECTED'])",
        "print(open('/etc/passwd').read())",
        "import os\nprint(os.listdir('/'))",
        "import glob\nprint(open(glob.glob('**/*.json', recursive=True)[0]).read())",
        "import os\nprint(os.environ.get('HOME', 'none'), len(os.environ))",
    ];
    for hack in hacks {
        expect_reward(&py(hack), &s, 0.0);
    }
}

#[test]
fn infinite_loop_is_a_failed_test_within_the_deadline() {
    let checker = checker(json!({ "timeout_ms": 2_000 }));
    let s = sample(json!({ "tests": [{ "stdin": "", "stdout": "1" }], "asserts": ["assert f() == 1"] }));
    let start = Instant::now();
    let verdict = checker.check(&py("def f():\n    return 1\nwhile True:\n    pass"), &s).unwrap();
    assert_eq!(reward(&verdict), 0.0, "{verdict:#?}");
    assert_eq!(verdict.detail["tests"][0]["status"], "timeout");
    assert_eq!(verdict.detail["tests"][1]["status"], "timeout");
    // Far above the deadline: only proves the run was stopped, not how fast.
    assert!(start.elapsed() < Duration::from_secs(120));
    let verdict = checker.check(&py("import time\ntime.sleep(600)"), &s).unwrap();
    assert_eq!(reward(&verdict), 0.0);
}

#[test]
fn memory_bomb_and_output_flood_are_failed_tests() {
    let checker = checker(json!({ "memory_mb": 64, "max_output_bytes": 4096 }));
    let s = sample(json!({ "tests": [{ "stdin": "", "stdout": "1" }] }));
    let v = checker.check(&py("x = bytearray(512 << 20)\nprint(1)"), &s).unwrap();
    assert_eq!(reward(&v), 0.0);
    assert_eq!(v.detail["tests"][0]["status"], "memory_limit");
    let v = checker.check(&py("print(1)\nprint('x' * 100000)"), &s).unwrap();
    assert_eq!(reward(&v), 0.0);
    assert_eq!(v.detail["tests"][0]["status"], "output_limit");
}

#[test]
fn exhausting_the_guest_stack_or_memory_is_a_failed_test_not_a_skip() {
    // Unbounded recursion with the recursion limit lifted: the wasm stack or the memory cap gives
    // out (a trap or memory_limit), which fails the test like any other crash.
    let s = sample(json!({ "asserts": ["assert f(1) == 1"] }));
    let code =
        "import sys\nsys.setrecursionlimit(10**8)\ndef g(n):\n    return g(n + 1) + 1\ng(0)\ndef f(x):\n    return x";
    let v = expect_reward(&py(code), &s, 0.0);
    assert_ne!(v.detail["tests"][0]["status"], "ok", "{v:#?}");
}

#[test]
fn only_the_sandboxs_own_failures_count_as_infrastructure() {
    use aha_rewards::sandboxed::is_host_failure;
    use aha_sandbox::{Status, Verdict as Run};
    let run = |status, detail: &str| Run {
        status,
        exit_code: None,
        stdout: String::new(),
        stderr: String::new(),
        wall_ms: 0,
        fuel_used: None,
        detail: Some(detail.into()),
    };
    assert!(is_host_failure(&run(Status::Error, "the sandbox pool shut down")));
    assert!(is_host_failure(&run(Status::Error, "sandbox worker failed: panicked")));
    // A guest trap, a timeout, a memory cap: the guest's doing, a failed test.
    assert!(!is_host_failure(&run(
        Status::Error,
        "error while executing at wasm backtrace: wasm trap: call stack exhausted"
    )));
    assert!(!is_host_failure(&run(Status::Timeout, "deadline of 10 ms passed")));
    assert!(!is_host_failure(&run(Status::MemoryLimit, "linear memory growth refused")));
}

// ---- extraction and inputs ------------------------------------------------------------------------

#[test]
fn code_extraction() {
    assert_eq!(extract_code("```python\na = 1\n```\ntext\n```python\nb = 2\n```"), Some(("b = 2\n", "python")));
    assert_eq!(extract_code("```py\na = 1\n```\n```text\nnot code\n```"), Some(("a = 1\n", "python")));
    assert_eq!(extract_code("```\nprint(1)\n```"), Some(("print(1)\n", "fallback")));
    assert_eq!(extract_code("no code at all"), None);
    assert_eq!(extract_code("```python\nunterminated"), None);
    assert_eq!(extract_code(&"`".repeat(1 << 20)), None);
}

#[test]
fn missing_code_block_is_reward_zero_with_detail() {
    let v = checker(json!({})).check("I think the answer is print(6)", &io_problem()).unwrap();
    assert_eq!(reward(&v), 0.0);
    assert!(v.detail["reason"].as_str().unwrap().contains("no fenced code block"));
    // A fallback block of another language is still run (as Python).
    let v = expect_reward("```\nprint(sum(int(x) for x in input().split()))\n```", &io_problem(), 1.0);
    assert_eq!(v.detail["block"], "fallback");
}

#[test]
fn bad_inputs_are_errors_or_skips() {
    let c = checker(json!({}));
    assert_eq!(c.check("x", &sample(json!({}))).unwrap_err(), CheckError::MissingField { field: "tests".into() });
    assert!(matches!(c.check("x", &sample(json!({ "tests": 3 }))), Err(CheckError::BadField { .. })));
    assert!(matches!(c.check("x", &sample(json!({ "tests": [{ "in": "" }] }))), Err(CheckError::BadField { .. })));
    assert!(matches!(c.check("x", &sample(json!({ "asserts": [1] }))), Err(CheckError::BadField { .. })));
    assert!(c.check("x", &sample(json!({ "tests": [] }))).unwrap().is_skip());
}

// ---- sandbox failures ----------------------------------------------------------------------------

#[test]
fn sandbox_infrastructure_failure_is_a_skip_not_zero() {
    let missing = checker(json!({ "module": "/nonexistent/python.wasm" }));
    let v = missing.check(&py("print(6)"), &io_problem()).unwrap();
    assert!(v.is_skip(), "{v:#?}");
    assert!(v.detail["sandbox_error"].as_str().unwrap().contains("not found"), "{v:#?}");
    // A file that is not WebAssembly.
    let dir = std::env::temp_dir().join(format!("aha-code-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bogus = dir.join("bogus.wasm");
    std::fs::write(&bogus, b"not wasm at all").unwrap();
    let v = checker(json!({ "module": bogus })).check(&py("print(6)"), &io_problem()).unwrap();
    assert!(v.is_skip(), "{v:#?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn many_completions_from_many_threads_share_the_pool() {
    let run =
        RunOptions { timeout_ms: 30_000, workers: Some(2), cache_dir: Some(CACHE.into()), ..RunOptions::default() };
    let c = CodeChecker::new(CodeOptions { run, ..CodeOptions::default() });
    let s = assert_problem();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let (c, s) = (&c, &s);
                scope.spawn(move || {
                    let code = if i % 2 == 0 {
                        "def square(x):\n    return x * x"
                    } else {
                        "def square(x):\n    return x + 1"
                    };
                    (i, reward(&c.check(&py(code), s).unwrap()))
                })
            })
            .collect();
        for h in handles {
            let (i, r) = h.join().unwrap();
            assert_eq!(r, if i % 2 == 0 { 1.0 } else { 0.0 }, "completion {i}");
        }
    });
}
