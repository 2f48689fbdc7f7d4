//! Hostile and ordinary programs through the real interpreters — the pre-initialised CPython
//! (python-snapshot.wasm), the same tests again through python.wasm started from `_start`, and
//! quickjs.wasm — plus the compiled-module cache and bad inputs. Deadlines are generous except
//! where a test is about timing; timing tests assert a bound far above the deadline, never a tight
//! speed.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aha_sandbox::{CacheDir, Job, Lang, LoadSource, Sandbox, SandboxConfig, SandboxError, Status, Verdict};

const PYTHON_WASM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/wasm/python.wasm");
const PYTHON_SNAPSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/wasm/python-snapshot.wasm");
const QUICKJS_WASM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/wasm/quickjs.wasm");
/// Where tests cache compiled modules (shared by test runs, inside target/).
const CACHE: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/aha-sandbox-cache");
/// For tests that are not about timing: a loaded 2-core machine must never make them flaky.
const GENEROUS: Duration = Duration::from_secs(20);

/// The default Python sandbox: runs start from the pre-initialised interpreter.
fn snapshot_sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        let config = SandboxConfig::new(PYTHON_WASM).workers(2).cache(CacheDir::Dir(CACHE.into())).fuel_metering(true);
        let sandbox = Sandbox::new(config).expect("python.wasm loads (run scripts/setup.sh if it is missing)");
        assert!(sandbox.uses_snapshot(), "{PYTHON_SNAPSHOT} is missing or unusable: run scripts/setup.sh");
        sandbox
    })
}

/// Python started from python.wasm's `_start` on every run (the fallback path).
fn command_sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        let config = SandboxConfig::new(PYTHON_WASM)
            .workers(2)
            .cache(CacheDir::Dir(CACHE.into()))
            .fuel_metering(true)
            .snapshot(None);
        let sandbox = Sandbox::new(config).expect("python.wasm loads (run scripts/setup.sh if it is missing)");
        assert!(!sandbox.uses_snapshot());
        sandbox
    })
}

fn run_on(sandbox: &Sandbox, code: &str) -> Verdict {
    sandbox.run(Job::new(code).timeout(GENEROUS))
}

#[track_caller]
fn expect(verdict: &Verdict, status: Status) {
    assert_eq!(verdict.status, status, "unexpected verdict: {verdict:#?}");
}

/// The tests inside run twice: in `snapshot::` on the pre-initialised interpreter and in
/// `command::` on python.wasm. Limits, verdicts and hostile-program behaviour must be the same.
macro_rules! on_both_python_paths {
    ($($tests:tt)*) => {
        mod snapshot {
            use super::*;
            fn sandbox() -> &'static Sandbox {
                snapshot_sandbox()
            }
            $($tests)*
        }
        mod command {
            use super::*;
            fn sandbox() -> &'static Sandbox {
                command_sandbox()
            }
            $($tests)*
        }
    };
}

#[test]
fn sandbox_is_send_sync_and_cheap_to_share() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Sandbox>();
}

on_both_python_paths! {

fn run(code: &str) -> Verdict {
    run_on(sandbox(), code)
}

// ---- ordinary programs -------------------------------------------------------------------------

#[test]
fn hello_world_is_ok() {
    let v = run("print('hello', 6 * 7)");
    expect(&v, Status::Ok);
    assert_eq!(v.exit_code, Some(0));
    assert_eq!(v.stdout, "hello 42\n");
    assert_eq!(v.stderr, "");
    assert!(v.fuel_used.unwrap() > 0, "{v:?}");
}

#[test]
fn stdin_to_stdout() {
    let code = "import sys\nnums = [int(x) for x in sys.stdin.read().split()]\nprint(sum(nums), max(nums))";
    let v = sandbox().run(Job::new(code).stdin("3 4\n5 -1\n100\n").timeout(GENEROUS));
    expect(&v, Status::Ok);
    assert_eq!(v.stdout, "111 100\n");
    // input() on an empty stdin is EOF, not a hang.
    let v = sandbox().run(Job::new("input()").timeout(GENEROUS));
    expect(&v, Status::Exit);
    assert!(v.stderr.contains("EOFError"), "{v:?}");
}

#[test]
fn standard_library() {
    let code = r#"
import json, re, math, itertools, collections, fractions, heapq
data = json.loads('{"a": [1, 2, 3], "b": {"c": "d"}}')
assert json.dumps(data, sort_keys=True) == '{"a": [1, 2, 3], "b": {"c": "d"}}'
assert re.findall(r"\d+", "a1b22c333") == ["1", "22", "333"]
assert math.isqrt(10**20) == 10**10 and abs(math.pi - 3.14159) < 1e-5 and math.gcd(12, 18) == 6
assert list(itertools.permutations("abc", 2))[:2] == [("a", "b"), ("a", "c")]
assert sum(1 for _ in itertools.combinations(range(10), 3)) == 120
c = collections.Counter("mississippi")
assert c.most_common(1) == [("i", 4)] or c.most_common(1) == [("s", 4)]
d = collections.deque([1, 2, 3]); d.rotate(1); assert list(d) == [3, 1, 2]
assert fractions.Fraction(1, 3) + fractions.Fraction(1, 6) == fractions.Fraction(1, 2)
h = [5, 1, 4, 2, 3]; heapq.heapify(h); assert [heapq.heappop(h) for _ in range(5)] == [1, 2, 3, 4, 5]
print("all good", math.comb(50, 25))
"#;
    let v = run(code);
    expect(&v, Status::Ok);
    assert_eq!(v.stdout, "all good 126410606437752\n");
}

#[test]
fn many_programs_concurrently_in_order() {
    let jobs: Vec<Job> = (0..8).map(|i| Job::new(format!("print(sum(range({i} * 1000)))")).timeout(GENEROUS)).collect();
    let verdicts = sandbox().run_many(jobs);
    assert_eq!(verdicts.len(), 8);
    for (i, v) in verdicts.iter().enumerate() {
        expect(v, Status::Ok);
        let n = i as u64 * 1000;
        assert_eq!(v.stdout, format!("{}\n", n * n.saturating_sub(1) / 2));
    }
    // And from many host threads at once, through clones of the same sandbox.
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let sandbox = sandbox().clone();
            std::thread::spawn(move || sandbox.run(Job::new(format!("print({i} * 2)")).timeout(GENEROUS)))
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let v = h.join().unwrap();
        expect(&v, Status::Ok);
        assert_eq!(v.stdout, format!("{}\n", i * 2));
    }
}

// ---- exits -------------------------------------------------------------------------------------

#[test]
fn sys_exit_3_is_exit_with_code_3() {
    let v = run("import sys\nprint('bye')\nsys.exit(3)");
    expect(&v, Status::Exit);
    assert_eq!(v.exit_code, Some(3));
    assert_eq!(v.stdout, "bye\n");
}

#[test]
fn uncaught_exception_is_exit_1_with_traceback() {
    let v = run("def f():\n    raise ValueError('boom')\nf()");
    expect(&v, Status::Exit);
    assert_eq!(v.exit_code, Some(1));
    assert!(v.stderr.contains("Traceback") && v.stderr.contains("ValueError: boom"), "{v:?}");
}

#[test]
fn exit_hooks_run_as_the_interpreter_runs_them() {
    let v = run("import atexit\natexit.register(print, 'at exit')\nprint('main')");
    expect(&v, Status::Ok);
    assert_eq!(v.stdout, "main\nat exit\n");
    // An excepthook that ends the process with status 0 does so on both paths.
    let v = run("import sys, os\nsys.excepthook = lambda *a: os._exit(0)\nraise ValueError");
    expect(&v, Status::Ok);
    let v = run("import sys\nsys.excepthook = lambda t, e, tb: print('hooked', t.__name__)\n1/0");
    expect(&v, Status::Exit);
    assert_eq!(v.stdout, "hooked ZeroDivisionError\n");
}

#[test]
fn syntax_error_is_exit() {
    let v = run("def f(:\n  pass");
    expect(&v, Status::Exit);
    assert!(v.stderr.contains("SyntaxError"), "{v:?}");
}

// ---- hostile: time -----------------------------------------------------------------------------

#[test]
fn infinite_loop_times_out() {
    let started = Instant::now();
    let v = sandbox().run(Job::new("while True:\n    pass").timeout(Duration::from_millis(1000)));
    expect(&v, Status::Timeout);
    assert_eq!(v.exit_code, None);
    assert!(v.wall_ms >= 1000, "{v:?}");
    assert!(v.wall_ms < 10_000, "the deadline must cut the loop: {v:?}");
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn sleep_in_a_host_call_is_cut_at_the_deadline() {
    let started = Instant::now();
    let v = sandbox()
        .run(Job::new("import time\nprint('start', flush=True)\ntime.sleep(600)").timeout(Duration::from_millis(1000)));
    expect(&v, Status::Timeout);
    assert_eq!(v.stdout, "start\n", "output written before the deadline is kept");
    assert!(v.wall_ms < 10_000, "{v:?}");
    assert!(started.elapsed() < Duration::from_secs(60), "time.sleep(600) must end at the deadline");
}

#[test]
fn fuel_budget_ends_a_loop_deterministically() {
    let v = sandbox().run(Job::new("while True:\n    pass").timeout(GENEROUS).fuel(400_000_000));
    expect(&v, Status::Timeout);
    assert!(v.detail.as_deref().unwrap_or("").contains("fuel"), "{v:?}");
    assert_eq!(v.fuel_used, Some(400_000_000));
    // A program that fits in its budget is unaffected.
    let v = sandbox().run(Job::new("print(1)").timeout(GENEROUS).fuel(5_000_000_000));
    expect(&v, Status::Ok);
}

// ---- hostile: memory ---------------------------------------------------------------------------

fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? / 1024)
}

#[test]
fn allocation_loop_hits_the_memory_cap() {
    let code = "chunks = []\nwhile True:\n    chunks.append(bytearray(1 << 20))";
    let v = sandbox().run(Job::new(code).timeout(GENEROUS).memory_bytes(96 << 20));
    expect(&v, Status::MemoryLimit);
    assert!(v.stderr.contains("MemoryError"), "{v:?}");
    let v =
        sandbox().run(Job::new("x = [0] * 10\nwhile True:\n    x = x + x").timeout(GENEROUS).memory_bytes(96 << 20));
    expect(&v, Status::MemoryLimit);
    if let Some(peak) = peak_rss_mib() {
        assert!(peak < 2048, "host memory must stay bounded, peak RSS {peak} MiB");
    }
}

#[test]
fn one_huge_allocation_hits_the_memory_cap() {
    let v = sandbox()
        .run(Job::new("x = bytearray(1_500_000_000)\nprint(len(x))").timeout(GENEROUS).memory_bytes(128 << 20));
    expect(&v, Status::MemoryLimit);
    assert_eq!(v.stdout, "");
    assert!(v.detail.as_deref().unwrap_or("").contains("refused"), "{v:?}");
    if let Some(peak) = peak_rss_mib() {
        assert!(peak < 2048, "host memory must stay bounded, peak RSS {peak} MiB");
    }
}

#[test]
fn caught_memory_error_then_exit_0_is_ok() {
    let code = "try:\n    x = bytearray(1_500_000_000)\nexcept MemoryError:\n    print('handled')";
    let v = sandbox().run(Job::new(code).timeout(GENEROUS).memory_bytes(128 << 20));
    expect(&v, Status::Ok);
    assert_eq!(v.stdout, "handled\n");
}

#[test]
fn unbounded_recursion_ends_without_harming_the_host() {
    let v = run("def f(n):\n    return f(n + 1)\nf(0)");
    expect(&v, Status::Exit);
    assert!(v.stderr.contains("RecursionError"), "{v:?}");
    // With the interpreter's own guard lifted, the wasm stack (or the guest's) gives out instead.
    let v = run("import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return f(n + 1)\nf(0)");
    assert!(matches!(v.status, Status::Error | Status::Exit | Status::MemoryLimit), "{v:#?}");
    assert_ne!(v.exit_code, Some(0));
}

// ---- hostile: the host's files, processes, network and environment ---------------------------

#[test]
fn reading_etc_passwd_fails() {
    let v = run("print(open('/etc/passwd').read())");
    expect(&v, Status::Exit);
    assert!(!v.stdout.contains("root:"), "{v:?}");
    assert!(v.stderr.contains("Error"), "{v:?}");
}

#[test]
fn listing_the_root_shows_nothing_of_the_host() {
    let v = run("import os\nprint(os.listdir('/'))");
    assert_ne!(v.status, Status::Ok, "{v:?}");
    for name in ["etc", "usr", "proc", "home", "root"] {
        assert!(!v.stdout.contains(name), "{v:?}");
    }
    let v =
        run("import os\ntry:\n    print(os.listdir('.'))\nexcept OSError as e:\n    print('denied', type(e).__name__)");
    expect(&v, Status::Ok);
    assert!(v.stdout.starts_with("denied"), "{v:?}");
}

#[test]
fn writing_a_file_leaves_the_host_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("pwned.txt");
    let code = format!("open({:?}, 'w').write('owned')", target.display().to_string());
    let v = run(&code);
    expect(&v, Status::Exit);
    assert!(!target.exists(), "the guest created {}", target.display());
    let v = run("open('pwned-relative.txt', 'w').write('owned')");
    expect(&v, Status::Exit);
    assert!(!PathBuf::from("pwned-relative.txt").exists());
    let v = run("import os\nos.mkdir('/tmp/aha-sandbox-pwned')");
    expect(&v, Status::Exit);
    assert!(!PathBuf::from("/tmp/aha-sandbox-pwned").exists());
}

#[test]
fn opening_a_socket_fails() {
    let code = "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\ns.connect(('127.0.0.1', 80))\nprint('connected')";
    let v = run(code);
    expect(&v, Status::Exit);
    assert!(!v.stdout.contains("connected"), "{v:?}");
}

#[test]
fn subprocess_fails() {
    let v = run("import subprocess\nprint(subprocess.run(['ls', '/'], capture_output=True).stdout)");
    expect(&v, Status::Exit);
    assert_eq!(v.stdout, "");
    let v = run("import os\nos.system('touch /tmp/aha-sandbox-system')\nprint('ran')");
    assert!(!PathBuf::from("/tmp/aha-sandbox-system").exists());
    assert_ne!(v.stdout, "ran\n0\n");
}

#[test]
fn fork_fails() {
    let v = run("import os\npid = os.fork()\nprint('forked', pid)");
    expect(&v, Status::Exit);
    assert!(!v.stdout.contains("forked"), "{v:?}");
}

#[test]
fn environment_shows_nothing_of_the_host() {
    std::env::set_var("AHA_SANDBOX_TEST_SECRET", "hunter2-do-not-leak");
    let v = run("import os\nprint(dict(os.environ))\nprint(os.getcwd())");
    expect(&v, Status::Ok);
    // Only what the sandbox itself sets: python.wasm gets the path of its read-only
    // standard-library mount, the snapshot nothing.
    let env = v.stdout.lines().next().unwrap_or("");
    let only = if sandbox().uses_snapshot() { "{}" } else { "{'PYTHONPATH': '/stdlib'}" };
    assert_eq!(env, only, "the guest sees no host variable: {v:?}");
}

// ---- hostile: output ---------------------------------------------------------------------------

#[test]
fn gigabytes_of_output_hit_the_output_cap() {
    let cap = 64 << 10;
    let code = "import sys\nwhile True:\n    sys.stdout.write('x' * (1 << 20))";
    let started = Instant::now();
    let v = sandbox().run(Job::new(code).timeout(GENEROUS).max_output_bytes(cap));
    expect(&v, Status::OutputLimit);
    assert_eq!(v.stdout.len(), cap, "stdout is kept up to the cap");
    assert!(started.elapsed() < Duration::from_secs(30));
    // A guest that swallows the write errors and keeps going still gets output_limit.
    let code = "while True:\n    try:\n        print('y' * 1000)\n    except OSError:\n        break";
    let v = sandbox().run(Job::new(code).timeout(GENEROUS).max_output_bytes(cap));
    expect(&v, Status::OutputLimit);
    // On stderr too.
    let code = "import sys\nfor _ in range(10**6):\n    sys.stderr.write('e' * 4096)";
    let v = sandbox().run(Job::new(code).timeout(GENEROUS).max_output_bytes(cap));
    expect(&v, Status::OutputLimit);
    assert_eq!(v.stderr.len(), cap);
    // Exactly at the cap is fine.
    let v = sandbox().run(Job::new("print('z' * 99)").timeout(GENEROUS).max_output_bytes(100));
    expect(&v, Status::Ok);
}

}

#[test]
fn without_the_unpacked_stdlib_the_guest_has_no_directory_and_no_environment() {
    // Reuses the compiled module from the shared cache; only the mount is switched off.
    let config = SandboxConfig::new(PYTHON_WASM)
        .workers(1)
        .cache(CacheDir::Dir(CACHE.into()))
        .unpacked_stdlib(false)
        .snapshot(None);
    let strict = Sandbox::new(config).unwrap();
    assert!(strict.module_info().stdlib_dir.is_none());
    let code = "import os, sys, json\nprint(dict(os.environ), sys.path[1], json.__file__)\nos.listdir('/stdlib')";
    let v = strict.run(Job::new(code).timeout(GENEROUS));
    expect(&v, Status::Exit);
    assert_eq!(v.stdout, "{} /usr/local/lib/python312.zip /usr/local/lib/python312.zip/json/__init__.pyc\n", "{v:?}");
    assert!(v.stderr.contains("FileNotFoundError"), "{v:?}");
}

// ---- JavaScript (QuickJS) ----------------------------------------------------------------------

#[test]
fn quickjs_runs_javascript() {
    let dir = tempfile::tempdir().unwrap();
    let config = SandboxConfig::new(QUICKJS_WASM).lang(Lang::Js).workers(1).cache(CacheDir::Dir(dir.path().into()));
    let js = Sandbox::new(config).expect("quickjs.wasm loads");
    let v = js.run(Job::new("console.log([1, 2, 3].map(x => x * 2).join(','))").timeout(GENEROUS));
    expect(&v, Status::Ok);
    assert_eq!(v.stdout, "2,4,6\n");
    let v = js.run(
        Job::new("console.log(std.in.readAsString().trim().split('').reverse().join(''))")
            .stdin("olleh\n")
            .timeout(GENEROUS),
    );
    expect(&v, Status::Ok);
    assert_eq!(v.stdout, "hello\n");
    let v = js.run(Job::new("for (;;) {}").timeout(Duration::from_millis(500)));
    expect(&v, Status::Timeout);
    let v = js.run(Job::new("throw new Error('boom')").timeout(GENEROUS));
    expect(&v, Status::Exit);
}

// ---- the compiled-module cache and bad inputs ------------------------------------------------

#[test]
fn compiled_cache_is_written_read_and_rebuilt_when_corrupted() {
    // quickjs.wasm: small, so compiling it twice costs little.
    let dir = tempfile::tempdir().unwrap();
    let config = || SandboxConfig::new(QUICKJS_WASM).lang(Lang::Js).workers(1).cache(CacheDir::Dir(dir.path().into()));
    let first = Sandbox::new(config()).unwrap();
    assert_eq!(first.module_info().source, LoadSource::CompiledAndCached);
    let file = first.module_info().cache_file.clone().unwrap();
    assert!(file.exists());
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.contains(&first.module_info().sha256[..16]) && name.contains("wasmtime-48"), "{name}");
    drop(first);

    let second = Sandbox::new(config()).unwrap();
    assert_eq!(second.module_info().source, LoadSource::Cached);
    drop(second);

    // Flip a byte in the middle of the compiled code: detected, reported, rebuilt.
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let third = Sandbox::new(config()).unwrap();
    assert!(
        matches!(&third.module_info().source, LoadSource::Rebuilt(reason) if reason.contains("checksum")),
        "{:?}",
        third.module_info()
    );
    let v = third.run(Job::new("console.log(40 + 2)").timeout(GENEROUS));
    assert_eq!(v.stdout, "42\n");
    drop(third);

    // Truncated, and garbage.
    std::fs::write(&file, &std::fs::read(&file).unwrap()[..100]).unwrap();
    assert!(matches!(Sandbox::new(config()).unwrap().module_info().source, LoadSource::Rebuilt(_)));
    std::fs::write(&file, b"not a cache file").unwrap();
    assert!(matches!(Sandbox::new(config()).unwrap().module_info().source, LoadSource::Rebuilt(_)));
    assert_eq!(Sandbox::new(config()).unwrap().module_info().source, LoadSource::Cached);
    // No temporary files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
}

#[test]
fn the_standard_library_is_a_read_only_mount_of_plain_files() {
    let dir = command_sandbox().module_info().stdlib_dir.clone().expect("a cache folder gives an unpacked stdlib");
    assert!(dir.join("encodings/__init__.pyc").is_file() && dir.join("json/__init__.pyc").is_file());
    let v =
        run_on(command_sandbox(), "import sys, encodings, json\nprint(sys.path[1], encodings.__file__, json.__file__)");
    expect(&v, Status::Ok);
    assert_eq!(v.stdout, "/stdlib /stdlib/encodings/__init__.pyc /stdlib/json/__init__.pyc\n");
    // Start-up importing from the zip costs ~210 million instructions, from the mount ~125 million.
    let v = run_on(command_sandbox(), "pass");
    assert!(v.fuel_used.unwrap() < 170_000_000, "{v:?}");
    for code in [
        "open('/stdlib/evil.py', 'w').write('x')",
        "open('/stdlib/json/__init__.pyc', 'r+b').write(b'x')",
        "import os\nos.remove('/stdlib/json/__init__.pyc')",
        "import os\nos.mkdir('/stdlib/new')",
        "print(open('/stdlib/../etc/passwd').read())",
    ] {
        let v = run_on(command_sandbox(), code);
        expect(&v, Status::Exit);
        assert!(v.stderr.contains("Error") && !v.stdout.contains("root:"), "{code}: {v:?}");
    }
    assert!(!dir.join("evil.py").exists() && !dir.join("new").exists());
    // Reads of the mount happen on the worker thread; a guest that loops on them still ends at
    // its deadline.
    let start = Instant::now();
    let code = "while True:\n    open('/stdlib/json/__init__.pyc', 'rb').read()";
    let v = command_sandbox().run(Job::new(code).timeout(Duration::from_millis(500)));
    expect(&v, Status::Timeout);
    assert!(start.elapsed() < Duration::from_secs(10), "{v:?}");
}

#[test]
fn a_changed_standard_library_folder_is_rebuilt() {
    // A cache folder with the compiled module copied in (no 5 s compile) and a tampered stdlib.
    let cache = tempfile::tempdir().unwrap();
    let info = command_sandbox().module_info();
    let compiled = info.cache_file.clone().unwrap();
    std::fs::copy(&compiled, cache.path().join(compiled.file_name().unwrap())).unwrap();
    let stdlib = info.stdlib_dir.clone().unwrap();
    let copy = cache.path().join(stdlib.file_name().unwrap());
    std::fs::create_dir_all(copy.join("json")).unwrap();
    std::fs::copy(stdlib.join("MANIFEST"), copy.join("MANIFEST")).unwrap();
    std::fs::write(copy.join("json/__init__.pyc"), b"not bytecode").unwrap();

    let config = SandboxConfig::new(PYTHON_WASM)
        .workers(1)
        .cache(CacheDir::Dir(cache.path().into()))
        .fuel_metering(true)
        .snapshot(None);
    let rebuilt = Sandbox::new(config).unwrap();
    assert_eq!(rebuilt.module_info().source, LoadSource::Cached);
    assert_eq!(rebuilt.module_info().stdlib_dir.as_deref(), Some(copy.as_path()));
    let v = rebuilt.run(Job::new("import json\nprint(json.dumps([1]))").timeout(GENEROUS));
    expect(&v, Status::Ok);
    assert_eq!(v.stdout, "[1]\n");
    assert_eq!(
        std::fs::read(copy.join("json/__init__.pyc")).unwrap(),
        std::fs::read(stdlib.join("json/__init__.pyc")).unwrap()
    );
    // No temporary folders are left behind.
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 2);
}

#[test]
fn missing_module_is_one_clear_error() {
    let err = Sandbox::new(SandboxConfig::new("/nonexistent/python.wasm").cache(CacheDir::Off)).err().unwrap();
    assert!(matches!(err, SandboxError::ModuleMissing { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("/nonexistent/python.wasm") && message.contains("setup.sh"), "{message}");
    assert!(!message.contains('\n'));
}

#[test]
fn a_file_that_is_not_wasm_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("python.wasm");
    std::fs::write(&path, b"#!/usr/bin/env python3\nprint('hi')\n").unwrap();
    let err = Sandbox::new(SandboxConfig::new(&path).cache(CacheDir::Dir(dir.path().into()))).err().unwrap();
    assert!(matches!(err, SandboxError::NotWasm { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("python.wasm") && message.contains("not a WebAssembly module"), "{message}");
    assert!(!message.contains('\n'));
    // A WASM module that is not a WASI command (no imports, no _start).
    std::fs::write(&path, b"\0asm\x01\0\0\0").unwrap();
    let err = Sandbox::new(SandboxConfig::new(&path).cache(CacheDir::Off)).err().unwrap();
    assert!(err.to_string().contains("_start"), "{err}");
}

#[test]
fn fixed_argv_replaces_the_language_argv() {
    let script = "import sys\nprint(sys.argv[1:], sys.stdin.read().strip())";
    let argv = vec!["python".to_string(), "-S".into(), "-c".into(), script.into(), "plug".into(), "in".into()];
    let config = SandboxConfig::new(PYTHON_WASM).workers(1).cache(CacheDir::Dir(CACHE.into())).argv(argv);
    let sandbox = Sandbox::new(config).unwrap();
    assert!(!sandbox.uses_snapshot(), "a fixed argv runs the module itself");
    // The job's code is ignored: the guest sees exactly the configured argv.
    let v = sandbox.run(Job::new("print('ignored')").stdin("hello").timeout(GENEROUS));
    expect(&v, Status::Ok);
    assert_eq!(v.stdout, "['plug', 'in'] hello\n");
}

// ---- the pre-initialised interpreter -----------------------------------------------------------

#[test]
fn the_snapshot_skips_cpythons_start_up() {
    let info = snapshot_sandbox().module_info();
    assert!(info.path.ends_with("python-snapshot.wasm"), "{info:?}");
    let v = run_on(
        snapshot_sandbox(),
        "import sys, json\nprint(sys.version_info[:2], sys.argv, __name__, json.dumps([1]))",
    );
    expect(&v, Status::Ok);
    assert_eq!(v.stdout, "(3, 14) ['-c'] __main__ [1]\n");
    // python.wasm burns ~125 million instructions before a program's first line; the snapshot has
    // done that (and the common imports) already.
    let (snapshot, command) = (run_on(snapshot_sandbox(), "pass"), run_on(command_sandbox(), "pass"));
    let (snapshot, command) = (snapshot.fuel_used.unwrap(), command.fuel_used.unwrap());
    assert!(snapshot * 20 < command, "snapshot {snapshot} vs python.wasm {command} instructions");
}

#[test]
fn every_snapshot_run_starts_pristine() {
    // Everything a program can reach in the interpreter's state, changed.
    let tamper = r#"
import builtins, json, os, random, sys, collections
json.dumps = lambda *a, **k: "patched"
builtins.len = lambda x: -1
builtins.leak = "from the last run"
sys.modules["re"] = None
sys.path.insert(0, "/evil")
sys.setrecursionlimit(50)
collections.Counter.most_common = lambda self, n=None: "patched"
os.environ["LEAK"] = "1"
random.seed(1234)
SECRET = 42
print("tampered")
"#;
    let check = r#"
import builtins, json, os, random, re, sys, collections
assert json.dumps([1]) == "[1]", json.dumps
assert len([1, 2]) == 2
assert not hasattr(builtins, "leak")
assert re.sub("a", "b", "aa") == "bb"
assert "/evil" not in sys.path
assert sys.getrecursionlimit() == 1000, sys.getrecursionlimit()
assert collections.Counter("aab").most_common(1) == [("a", 2)]
assert "LEAK" not in os.environ
assert "SECRET" not in globals()
random.seed(1234); expected = random.random(); random.seed(1234)
print("pristine", random.random() == expected)
"#;
    for _ in 0..3 {
        // Twice as many runs as workers: every pool slot sees a tampered run before a check.
        let verdicts = snapshot_sandbox().run_many(vec![Job::new(tamper).timeout(GENEROUS); 4]);
        for v in &verdicts {
            expect(v, Status::Ok);
            assert_eq!(v.stdout, "tampered\n");
        }
        for v in snapshot_sandbox().run_many(vec![Job::new(check).timeout(GENEROUS); 4]) {
            expect(&v, Status::Ok);
            assert_eq!(v.stdout, "pristine True\n", "{v:?}");
        }
    }
    // The random state is reseeded per run, not frozen in the snapshot.
    let draws: std::collections::HashSet<String> = snapshot_sandbox()
        .run_many(vec![Job::new("import random\nprint(random.random())").timeout(GENEROUS); 6])
        .into_iter()
        .map(|v| v.stdout)
        .collect();
    assert_eq!(draws.len(), 6, "{draws:?}");
}

#[test]
fn modules_outside_the_snapshot_import_from_its_read_only_standard_library() {
    let v = run_on(
        snapshot_sandbox(),
        "import calendar, sys\nprint(calendar.isleap(2024), calendar.__file__, sys.path[0])",
    );
    expect(&v, Status::Ok);
    assert_eq!(v.stdout, "True /python/calendar.py /python\n");
    let stdlib = std::path::Path::new(PYTHON_SNAPSHOT).with_file_name("python-snapshot-stdlib");
    for code in [
        "open('/python/evil.py', 'w').write('x')",
        "open('/python/calendar.py', 'a').write('x')",
        "import os\nos.remove('/python/calendar.py')",
        "print(open('/python/../etc/passwd').read())",
    ] {
        let v = run_on(snapshot_sandbox(), code);
        expect(&v, Status::Exit);
        assert!(v.stderr.contains("Error") && !v.stdout.contains("root:"), "{code}: {v:?}");
    }
    assert!(!stdlib.join("evil.py").exists() && stdlib.join("calendar.py").is_file());
}

#[test]
fn an_unusable_snapshot_falls_back_to_python_wasm() {
    let dir = tempfile::tempdir().unwrap();
    // Missing; a core module where a component belongs; garbage.
    let not_a_component = dir.path().join("python-snapshot.wasm");
    std::fs::copy(QUICKJS_WASM, &not_a_component).unwrap();
    // Its standard library is there, so each is refused for what it is.
    let stdlib = std::path::Path::new(PYTHON_SNAPSHOT).with_file_name("python-snapshot-stdlib");
    std::os::unix::fs::symlink(stdlib, dir.path().join("python-snapshot-stdlib")).unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm\x0d\0\x01\0garbage").unwrap();
    for snapshot in [dir.path().join("missing.wasm"), not_a_component, garbage] {
        let config =
            SandboxConfig::new(PYTHON_WASM).workers(1).cache(CacheDir::Dir(CACHE.into())).snapshot(Some(snapshot));
        let sandbox = Sandbox::new(config).unwrap();
        assert!(!sandbox.uses_snapshot());
        assert!(sandbox.module_info().path.ends_with("python.wasm"));
        let v = run_on(&sandbox, "print(6 * 7)");
        expect(&v, Status::Ok);
        assert_eq!(v.stdout, "42\n");
    }
}
