//! `aha demo tools`, shortened: a few GRPO steps from the bundled base model, with the Python tool
//! enabled and rewarded only for right answers, must already make it call the tool more often and
//! answer right more often, and the run directory must hold the demo's summary, traces and report.
//! (The full demo and its numbers over three seeds: README.md, "Tool use that pays off".)

use std::process::Command;

#[test]
fn a_short_tools_demo_raises_tool_use_and_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("tools");
    let out = Command::new(env!("CARGO_BIN_EXE_aha"))
        .args(["demo", "tools", "--seed", "3", "--eval-samples", "2", "--out", run.to_str().unwrap()])
        .args(["--set", "run.steps=20", "--set", "optim.lr=3e-4"])
        .output()
        .expect("run aha demo tools");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for file in ["demo.md", "demo.json", "metrics.jsonl", "traces.sqlite", "report.html"] {
        assert!(run.join(file).is_file(), "{file} missing from the run directory");
    }
    assert!(stdout.contains("pass@1 at temperature 1") && stdout.contains("completions calling the tool"), "{stdout}");

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("demo.json")).unwrap()).unwrap();
    let metric = |when: &str, key: &str| summary[when][key].as_f64().unwrap();
    let tool_share = |when: &str| summary[when]["t1"]["tool_share"].as_f64().unwrap();
    assert_eq!(summary["before"]["problems"], 256);
    // Held-out pass@1 at T=1 and the share of completions calling the tool both rise, by more
    // than the noise of 512 samples (a standard error of about 2 points).
    assert!(
        metric("after", "pass_at_1_t1") > metric("before", "pass_at_1_t1") + 0.05,
        "pass@1 did not rise: {summary}"
    );
    assert!(tool_share("after") > tool_share("before") + 0.05, "tool use did not rise: {summary}");
    // The calls ran: their results are in the completions and mostly right.
    assert!(summary["after"]["t1"]["output_right_share_of_calls"].as_f64().unwrap() > 0.5, "{summary}");
    let curve = summary["curve"].as_array().unwrap();
    assert_eq!(curve.len(), 20);
    assert!(curve.iter().all(|p| p["tool_share"].is_f64() && p["length"].is_f64()), "{summary}");

    // `aha traces stats` counts the calls (the tool columns).
    let stats =
        Command::new(env!("CARGO_BIN_EXE_aha")).args(["traces", run.to_str().unwrap(), "stats"]).output().unwrap();
    let table = String::from_utf8_lossy(&stats.stdout);
    assert!(stats.status.success(), "{table}");
    // Counted from the right: the phrase columns before it have spaces in their headers.
    let header: Vec<&str> = table.lines().next().unwrap_or("").split_whitespace().collect();
    let from_end = header.len() - header.iter().position(|w| *w == "tool%").unwrap_or_else(|| panic!("{table}"));
    // The last step's share of completions calling the tool is above zero.
    let last = table.lines().last().unwrap().split_whitespace().collect::<Vec<_>>();
    assert!(last[last.len() - from_end].parse::<f64>().unwrap() > 0.0, "{table}");
}
