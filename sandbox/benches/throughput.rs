//! Executions per second: python.wasm in the sandbox (1 and 2 workers) side by side with spawning
//! a native `python3 -S -c CODE` per run, for a trivial program and a typical test harness; plus
//! the compiled-module cache (first compile vs cached load), the unpacked standard library against
//! imports from python.wasm's zip, and the cost of fuel metering.
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
    println!("aha-sandbox throughput: {runs} runs per cell, {cpus} CPUs");

    // Compiled-module cache: a cold compile into an empty folder, then a cached load.
    let dir = std::env::temp_dir().join(format!("aha-sandbox-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = |workers: usize| SandboxConfig::new(PYTHON_WASM).workers(workers).cache(CacheDir::Dir(dir.clone()));
    let cold = Sandbox::new(config(1)).expect("python.wasm (run scripts/setup.sh)");
    let cold_ms = cold.module_info().load_ms;
    drop(cold);
    let one = Sandbox::new(config(1)).unwrap();
    println!(
        "python.wasm load: first compile {cold_ms} ms ({:?}), cached load {} ms ({:?})",
        "compiled",
        one.module_info().load_ms,
        one.module_info().source
    );
    let two = Sandbox::new(config(2)).unwrap();
    let metered_sandbox = Sandbox::new(config(1).fuel_metering(true)).unwrap();
    // No cache folder: no unpacked standard library either, so every start imports from the zip.
    let zip = Sandbox::new(SandboxConfig::new(PYTHON_WASM).workers(2).cache(CacheDir::Off)).unwrap();
    assert!(zip.module_info().stdlib_dir.is_none() && two.module_info().stdlib_dir.is_some());

    // Warm up (page in the module, CoW images).
    wasm_rate(&one, TRIVIAL, 3);
    wasm_rate(&two, TRIVIAL, 4);

    println!();
    println!("| program | wasm, 1 worker | wasm, 2 workers | native python3 -S, 1 | native python3 -S, 2 |");
    println!("|---|---|---|---|---|");
    for (name, code) in [("trivial print(1)", TRIVIAL), ("harness: function + 5 asserts", HARNESS)] {
        let w1 = wasm_rate(&one, code, runs);
        let w2 = wasm_rate(&two, code, runs * 2);
        let fmt = |r: Option<f64>| r.map(|r| format!("{r:.1}/s")).unwrap_or_else(|| "n/a".into());
        let n1 = native_rate(code, runs, 1);
        let n2 = native_rate(code, runs * 2, 2);
        println!("| {name} | {w1:.1}/s | {w2:.1}/s | {} | {} |", fmt(n1), fmt(n2));
    }
    let from_zip = wasm_rate(&zip, TRIVIAL, runs * 2);
    println!();
    println!("trivial, 2 workers, standard library imported from python.wasm's zip: {from_zip:.1}/s");
    let metered = wasm_rate(&metered_sandbox, TRIVIAL, runs);
    let plain = wasm_rate(&one, TRIVIAL, runs);
    println!();
    println!("fuel metering, trivial, 1 worker: on {metered:.1}/s, off {plain:.1}/s");
    let v = metered_sandbox.run(Job::new(TRIVIAL));
    println!("one trivial run: {} ms wall, {:?} fuel", v.wall_ms, v.fuel_used);
    let _ = std::fs::remove_dir_all(&dir);
}
