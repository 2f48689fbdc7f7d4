//! `aha demo aha-moment`, shortened: a few GRPO steps from the bundled base model, rewarded only
//! for right answers, must already make it check itself more often and answer right more often,
//! and the run directory must hold the demo's summary, traces and report. (The full demo and its
//! numbers over three seeds: README.md, "The aha moment".)

use std::process::Command;

#[test]
fn a_short_aha_moment_demo_raises_self_checking_and_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("aha-moment");
    let out = Command::new(env!("CARGO_BIN_EXE_aha"))
        .args(["demo", "aha-moment", "--seed", "3", "--eval-samples", "2", "--out", run.to_str().unwrap()])
        .args(["--set", "run.steps=30", "--set", "optim.lr=2e-4"])
        .output()
        .expect("run aha demo aha-moment");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for file in ["demo.md", "demo.json", "metrics.jsonl", "traces.sqlite", "report.html"] {
        assert!(run.join(file).is_file(), "{file} missing from the run directory");
    }
    assert!(stdout.contains("pass@1 at temperature 1") && stdout.contains("self-checking completions"), "{stdout}");

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("demo.json")).unwrap()).unwrap();
    let metric = |when: &str, key: &str| summary[when][key].as_f64().unwrap();
    let checks = |when: &str| summary[when]["t1"]["check_share"].as_f64().unwrap();
    assert_eq!(summary["before"]["problems"], 256);
    // Held-out pass@1 at T=1 and the share of self-checking completions both rise, by more than
    // the noise of 512 samples (a standard error of about 2 points).
    assert!(
        metric("after", "pass_at_1_t1") > metric("before", "pass_at_1_t1") + 0.05,
        "pass@1 did not rise: {summary}"
    );
    assert!(checks("after") > checks("before") + 0.05, "self-checking did not rise: {summary}");
    let curve = summary["curve"].as_array().unwrap();
    assert_eq!(curve.len(), 30);
    assert!(curve.iter().all(|p| p["check_share"].is_f64() && p["length"].is_f64()), "{summary}");

    // `aha traces stats` counts the demo's phrase, with whole column headers.
    let stats =
        Command::new(env!("CARGO_BIN_EXE_aha")).args(["traces", run.to_str().unwrap(), "stats"]).output().unwrap();
    let table = String::from_utf8_lossy(&stats.stdout);
    assert!(stats.status.success(), "{table}");
    let header = table.lines().next().unwrap_or("");
    assert!(header.contains(" let me check ") && header.contains(" double-check"), "{table}");
    // The last step's "let me check" share is above zero: the demo's phrase is counted.
    let column = header.split_whitespace().position(|w| w == "let").unwrap();
    let last = table.lines().last().unwrap().split_whitespace().collect::<Vec<_>>();
    assert!(last[column].parse::<f64>().unwrap() > 0.0, "{table}");
}
