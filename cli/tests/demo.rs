//! `aha demo`, shortened: a few GRPO steps from the bundled base model must already move the
//! policy towards working sums out, and the run directory must hold the demo's summary, traces and
//! report. (The full demo and its acceptance numbers: bench/demo_seeds.sh.)

use std::process::Command;

#[test]
fn a_short_demo_moves_the_reward_up_and_writes_its_summary() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_aha"))
        .args(["demo", "--seed", "3", "--eval-samples", "2", "--out", run.to_str().unwrap()])
        .args(["--set", "run.steps=12", "--set", "optim.lr=2e-4"])
        .output()
        .expect("run aha demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for file in ["demo.md", "demo.json", "metrics.jsonl", "traces.sqlite", "report.html"] {
        assert!(run.join(file).is_file(), "{file} missing from the run directory");
    }
    assert!(stdout.contains("pass@1 at temperature 1") && stdout.contains("worked solutions"), "{stdout}");

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("demo.json")).unwrap()).unwrap();
    let metric = |when: &str, key: &str| summary[when][key].as_f64().unwrap();
    assert_eq!(summary["before"]["problems"], 256);
    // Held-out pass@1 at T=1 and the share of worked solutions both rise, by more than the noise
    // of 512 samples (a standard error of about 2 points).
    assert!(
        metric("after", "pass_at_1_t1") > metric("before", "pass_at_1_t1") + 0.05,
        "pass@1 did not rise: {summary}"
    );
    assert!(
        metric("after", "worked_share_t1") > metric("before", "worked_share_t1") + 0.05,
        "worked share did not rise: {summary}"
    );
    let curve = summary["curve"].as_array().unwrap();
    assert_eq!(curve.len(), 12);
    assert!(curve.iter().all(|p| p["worked_share"].is_f64() && p["length"].is_f64()), "{summary}");
}
