//! Executions per second: Python in the sandbox — from the pre-initialised snapshot and from
//! python.wasm's `_start` (1 and 2 workers) — side by side with spawning a native
//! `python3 -S -c CODE` per run, for a trivial program and a typical test harness; plus the
//! compiled-module cache (first compile vs cached load), python.wasm's unpacked standard library
//! against imports from its zip, and the cost of fuel metering.
//!
//! `cargo bench -p aha-sandbox` (or `cargo bench -p aha-sandbox --bench throughput -- RUNS`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aha_sandbox::{CacheDir, Job, Sandbox, SandboxConfig, Status};

const PYTHON_WASM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/wasm/python.wasm");

const TRIVIAL: &str = "print(1)";
const HARNESS: &str = r#"
def solve(nums, target):
    seen = {}
    for i, n in enumerate(nums):
        if target - n in seen:
            return [seen[target - n], i]
        seen[n] = i
    return []

assert solve([2, 7, 11, 15], 9) == [0, 1]
assert solve([3, 2, 4], 6) == [1, 2]
assert solve([3, 3], 6) == [0, 1]
assert solve([1, 2, 3], 7) == []
assert solve(list(range(1000)), 1997) == [998, 999]
print("passed")
"#;

fn wasm_rate(sandbox: &Sandbox, code: &str, runs: usize) -> f64 {
    let jobs: Vec<Job> = (0..runs).map(|_| Job::new(code).timeout(Duration::from_secs(30))).collect();
    let start = Instant::now();
    let verdicts = sandbox.run_many(jobs);
    let elapsed = start.elapsed().as_secs_f64();
    for v in &verdicts {
        assert_eq!(v.status, Status::Ok, "{v:?}");
    }
    runs as f64 / elapsed
}

fn native_rate(code: &str, runs: usize, workers: usize) -> Option<f64> {
    let once = || {
        Command::new("python3")
            .args(["-S", "-c", code])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .is_some()
    };
    if !once() {
        return None;
    }
    let start = Instant::now();
    std::thread::scope(|scope| {
        for w in 0..workers {
            let share = runs / workers + usize::from(w < runs % workers);
            scope.spawn(move || (0..share).for_each(|_| assert!(once())));
        }
    });
    Some(runs as f64 / start.elapsed().as_secs_f64())
}

fn main() {
    let runs: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(60);
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("aha-sandbox throughput: {runs} runs per cell of python.wasm, 10x that of the snapshot, {cpus} CPUs");

    // Compiled-module cache: a cold compile into an empty folder, then a cached load.
    let dir = std::env::temp_dir().join(format!("aha-sandbox-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = |workers: usize| SandboxConfig::new(PYTHON_WASM).workers(workers).cache(CacheDir::Dir(dir.clone()));
    let command = |workers: usize| config(workers).snapshot(None);
    for (name, cfg) in [("python-snapshot.wasm", config(1)), ("python.wasm", command(1))] {
        let cold = Sandbox::new(cfg.clone()).expect("python.wasm (run scripts/setup.sh)");
        let cold_ms = cold.module_info().load_ms;
        drop(cold);
        let warm = Sandbox::new(cfg).unwrap();
        println!(
            "{name} load: first compile {cold_ms} ms, cached load {} ms ({:?})",
            warm.module_info().load_ms,
            warm.module_info().source
        );
    }
    let snapshot = [Sandbox::new(config(1)).unwrap(), Sandbox::new(config(2)).unwrap()];
    assert!(snapshot.iter().all(Sandbox::uses_snapshot), "python-snapshot.wasm unusable (run scripts/setup.sh)");
    let python = [Sandbox::new(command(1)).unwrap(), Sandbox::new(command(2)).unwrap()];
    let metered = Sandbox::new(config(1).fuel_metering(true)).unwrap();
    // No cache folder: no unpacked standard library either, so every start imports from the zip.
    let zip = Sandbox::new(SandboxConfig::new(PYTHON_WASM).workers(2).cache(CacheDir::Off).snapshot(None)).unwrap();
    assert!(zip.module_info().stdlib_dir.is_none() && python[1].module_info().stdlib_dir.is_some());

    // Warm up (page in the module, CoW images).
    for sandbox in snapshot.iter().chain(&python) {
        wasm_rate(sandbox, TRIVIAL, 4);
    }

    println!();
    println!("| program | snapshot, 1 worker | snapshot, 2 workers | python.wasm, 1 | python.wasm, 2 | native python3 -S, 1 | native python3 -S, 2 |");
    println!("|---|---|---|---|---|---|---|");
    for (name, code) in [("trivial print(1)", TRIVIAL), ("harness: function + 5 asserts", HARNESS)] {
        let s1 = wasm_rate(&snapshot[0], code, runs * 10);
        let s2 = wasm_rate(&snapshot[1], code, runs * 20);
        let w1 = wasm_rate(&python[0], code, runs);
        let w2 = wasm_rate(&python[1], code, runs * 2);
        let fmt = |r: Option<f64>| r.map(|r| format!("{r:.1}/s")).unwrap_or_else(|| "n/a".into());
        let n1 = native_rate(code, runs, 1);
        let n2 = native_rate(code, runs * 2, 2);
        println!("| {name} | {s1:.1}/s | {s2:.1}/s | {w1:.1}/s | {w2:.1}/s | {} | {} |", fmt(n1), fmt(n2));
    }
    let from_zip = wasm_rate(&zip, TRIVIAL, runs * 2);
    println!();
    println!("trivial, python.wasm, 2 workers, standard library imported from its zip: {from_zip:.1}/s");
    let metered_rate = wasm_rate(&metered, TRIVIAL, runs * 10);
    let plain = wasm_rate(&snapshot[0], TRIVIAL, runs * 10);
    println!();
    println!("fuel metering, trivial, snapshot, 1 worker: on {metered_rate:.1}/s, off {plain:.1}/s");
    let v = metered.run(Job::new(TRIVIAL));
    println!("one trivial run from the snapshot: {} ms wall, {:?} fuel", v.wall_ms, v.fuel_used);
    let _ = std::fs::remove_dir_all(&dir);
}
