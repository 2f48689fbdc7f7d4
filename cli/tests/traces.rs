//! `aha traces` on the committed trace store fixture (`tests/fixtures/traces/`, whose rows are
//! listed in its README): each subcommand and filter prints exactly what it should.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn store() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/traces/traces.sqlite")
}

/// `aha traces FIXTURE args...`, which must succeed; its stdout.
fn traces(args: &[&str]) -> String {
    let store = store();
    let out = Command::new(env!("CARGO_BIN_EXE_aha"))
        .arg("traces")
        .arg(&store)
        .args(args)
        .env_remove("COLUMNS")
        .output()
        .expect("run aha");
    assert!(out.status.success(), "aha traces {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn json_lines(args: &[&str]) -> Vec<Value> {
    traces(args).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// (step, prompt id, sample index) of `show --json` lines.
fn shown(args: &[&str]) -> Vec<(u64, String, u64)> {
    let mut all = vec!["show", "--json"];
    all.extend_from_slice(args);
    json_lines(&all)
        .iter()
        .map(|r| {
            (
                r["step"].as_u64().unwrap(),
                r["prompt_id"].as_str().unwrap().to_string(),
                r["sample_index"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn ids(ids: &[(u64, &str, u64)]) -> Vec<(u64, String, u64)> {
    ids.iter().map(|&(s, p, j)| (s, p.to_string(), j)).collect()
}

#[test]
fn steps_table_and_json() {
    let table = traces(&[]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "a header and four steps:\n{table}");
    assert_eq!(lines[1].split_whitespace().collect::<Vec<_>>(), ["1", "2", "8", "0.500", "4.9", "1"]);
    let steps = json_lines(&["steps", "--json"]);
    assert_eq!(steps.iter().map(|s| s["step"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(steps[3]["completions"], 8);
}

#[test]
fn show_filters() {
    assert_eq!(shown(&["--step", "2..3"]).len(), 16);
    assert_eq!(shown(&["--step", "4"]).len(), 8);
    assert_eq!(shown(&["--step", "..1"]).len(), 8);
    assert_eq!(shown(&["--step", "3.."]).len(), 16);
    assert_eq!(shown(&["--min-reward", "1"]).len(), 22);
    assert_eq!(
        shown(&["--min-reward", "1", "--max-reward", "1"]),
        ids(&[(1, "p-mul", 3), (2, "p-mul", 3), (3, "p-add", 3), (4, "p-sub", 2)])
    );
    assert_eq!(
        shown(&["--finish", "length"]),
        ids(&[(1, "p-add", 3), (2, "p-add", 3), (3, "p-add", 3), (4, "p-sub", 2)])
    );
    assert_eq!(
        shown(&["--step", "2..3", "--passed", "!format"]),
        ids(&[(2, "p-add", 3), (2, "p-mul", 3), (3, "p-add", 3)])
    );
    assert_eq!(shown(&["--passed", "math"]).len(), 22);
    assert_eq!(shown(&["--passed", "!math", "--step", "4"]), ids(&[(4, "p-sub", 3)]));
    assert_eq!(shown(&["--prompt", "p-sub", "--limit", "2"]), ids(&[(4, "p-sub", 0), (4, "p-sub", 1)]));
    let waits = ids(&[(2, "p-add", 0), (2, "p-mul", 1), (3, "p-add", 2), (4, "p-mul", 0), (4, "p-sub", 2)]);
    assert_eq!(shown(&["--grep", r"(?i)\bwait\b"]), waits);
    assert_eq!(shown(&["--grep", "let me"]), ids(&[(2, "p-add", 0), (4, "p-mul", 0)]));
    assert_eq!(shown(&["--grep", r"(?i)\bwait\b", "--limit", "3"]), waits[..3]);
    assert_eq!(shown(&["--grep", r"(?i)\bwait\b", "--passed", "!format", "--step", "3.."]), ids(&[(4, "p-sub", 2)]));
    // Every field of a row.
    let row = &json_lines(&["show", "--json", "--prompt", "p-sub", "--grep", "five"])[0];
    assert_eq!(row["text"], "<answer>five</answer>");
    assert_eq!(row["prompt"], "What is 9 - 4? Answer in <answer></answer> tags.");
    assert_eq!(
        (row["reward"].is_null(), row["rewards"]["math"].is_null(), &row["rewards"]["format"]),
        (true, true, &Value::from(1.0))
    );
    assert_eq!(row["sample"]["answer"], "5");
}

#[test]
fn show_as_text_names_step_prompt_and_reward() {
    let text = traces(&["show", "--prompt", "p-sub", "--step", "4", "--limit", "1"]);
    assert_eq!(
        text,
        "step 4 · prompt p-sub · sample 0 · reward 1.250, advantage +0.083 · 6 tokens, stop\n\
         What is 9 - 4? Answer in <answer></answer> tags.\n\
         9 - 4 = 5. <answer>5</answer>\n\n"
    );
}

#[test]
fn bad_filters_are_one_clear_error() {
    for (args, needle) in [
        (&["show", "--grep", "("][..], "--grep"),
        (&["show", "--step", "x..2"][..], "--step"),
        (&["show", "--finish", "eos"][..], "--finish"),
        (&["follow", "nope"][..], "never sampled"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_aha")).arg("traces").arg(store()).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn export_writes_prompt_completion_lines() {
    let lines = json_lines(&["export", "--passed", "math", "--step", "4"]);
    assert_eq!(lines.len(), 7);
    for line in &lines {
        let keys: Vec<&str> = line.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["completion", "prompt", "prompt_id", "reward", "rewards", "sample", "step"]);
        assert!(line["reward"].as_f64().unwrap() >= 1.0);
    }
    assert_eq!(lines[0]["prompt"], "What is 4 * 6? Answer in <answer></answer> tags.");
    assert_eq!(lines[0]["completion"], "4 * 6 = 24. Wait, let me double-check: 6 * 4 = 24. <answer>24</answer>");
    assert_eq!(lines[6]["completion"], "9 - 4 = 13. Wait, that is a mistake. 9 - 4 = 5, so");
}

#[test]
fn stats_count_reflection_phrases_per_step() {
    let stats = json_lines(&["stats", "--json"]);
    assert_eq!(stats.len(), 4);
    let wait: Vec<f64> = stats.iter().map(|s| s["phrases"]["wait"].as_f64().unwrap()).collect();
    assert_eq!(wait, [0.0, 0.25, 0.125, 0.25]);
    let math: Vec<f64> = stats.iter().map(|s| s["accuracy"]["math"].as_f64().unwrap()).collect();
    assert_eq!(math, [0.375, 0.625, 0.875, 0.875]);
    let custom = json_lines(&["stats", "--json", "--phrases", "let me check,mistake"]);
    let shares: Vec<(f64, f64)> = custom
        .iter()
        .map(|s| (s["phrases"]["let me check"].as_f64().unwrap(), s["phrases"]["mistake"].as_f64().unwrap()))
        .collect();
    assert_eq!(shares, [(0.0, 0.0), (0.125, 0.125), (0.25, 0.0), (0.0, 0.125)]);
    let table = traces(&["stats", "--phrases", "wait"]);
    assert_eq!(table.lines().count(), 5, "{table}");
    assert!(table.lines().next().unwrap().contains("acc:format") && table.contains("acc:math"), "{table}");
}

#[test]
fn rescore_compares_with_the_stored_reward() {
    // An unanchored tag pattern agrees with the stored `format` verdicts of step 1 ...
    let out = Command::new(env!("CARGO_BIN_EXE_aha"))
        .args(["traces", store().to_str().unwrap(), "rescore", "--step", "1", "--checker", "format"])
        .args(["--options", r#"{"pattern": "<answer>"}"#])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 8);
    assert!(lines.iter().all(|l| l["stored"] == l["reward"]), "{lines:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("8 completions re-scored; 0 differ"));
    // ... the R1 template (which wants <think> first) fails the four that had a tag.
    let out = Command::new(env!("CARGO_BIN_EXE_aha"))
        .args(["traces", store().to_str().unwrap(), "rescore", "--step", "1", "--checker", "format"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("8 completions re-scored; 4 differ"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn follow_stacks_the_steps_when_piped_or_narrow() {
    let stacked = traces(&["follow", "p-mul"]);
    let headers: Vec<&str> = stacked.lines().filter(|l| l.starts_with("step ")).collect();
    assert_eq!(headers.len(), 12, "three steps of four:\n{stacked}");
    assert!(headers[0].starts_with("step 1 · prompt p-mul · sample 0 · reward 0.250"), "{stacked}");
    assert!(headers[4].starts_with("step 3 · prompt p-mul · sample 0"), "the middle of steps 1-4 is 3:\n{stacked}");
    assert!(headers[11].starts_with("step 4 · prompt p-mul · sample 3"), "{stacked}");
    assert!(!stacked.contains('│'));
    assert_eq!(traces(&["follow", "p-mul", "--width", "100"]), stacked, "too narrow for columns");
    // A prompt sampled at one step has nothing to put side by side.
    assert_eq!(traces(&["follow", "p-sub", "--width", "200"]).lines().filter(|l| l.starts_with("step 4 ")).count(), 4);
}

#[test]
fn follow_puts_first_middle_and_last_steps_side_by_side() {
    let text = traces(&["follow", "p-mul", "--width", "120"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "prompt p-mul");
    assert_eq!(lines[1], "What is 4 * 6? Answer in <answer></answer> tags.");
    assert_eq!(lines[2], "");
    // Three columns of (120 - 2 * 3) / 3 = 38 characters.
    let row = |a: &str, b: &str, c: &str| format!("{a:<38} │ {b:<38} │ {c}").trim_end().to_string();
    assert_eq!(lines[3], row("step 1 · mean reward 0.625", "step 3 · mean reward 1.000", "step 4 · mean reward 1.250"));
    assert_eq!(lines[4], row(&"─".repeat(38), &"─".repeat(38), &"─".repeat(38)));
    assert_eq!(
        lines[5],
        row(
            "#0 reward 0.250 · 1 tokens, stop",
            "#0 reward 1.250 · 14 tokens, stop",
            "#0 reward 1.250 · 15 tokens, stop"
        )
    );
    assert_eq!(
        lines[6],
        row("<answer>10</answer>", "4 * 6 = 24. Let me check: 24 / 6 = 4.", "4 * 6 = 24. Wait, let me double-check:")
    );
    assert_eq!(lines[7], row("", "<answer>24</answer>", "6 * 4 = 24. <answer>24</answer>"));
    assert_eq!(lines[8], row("", "", ""));
    // Completion j of each step starts on the same line.
    assert_eq!(
        lines[9],
        row("#1 reward 1.250 · 6 tokens, stop", "#1 reward 1.250 · 1 tokens, stop", "#1 reward 1.250 · 6 tokens, stop")
    );
    for line in &lines[3..] {
        let chars: Vec<char> = line.chars().collect();
        assert!(chars.len() <= 120, "{line}");
        assert_eq!((chars.get(39), chars.get(80)), (Some(&'│'), Some(&'│')), "columns line up: {line}");
    }
    // Every completion of the three steps is there, in its column.
    assert!(text.contains("The product is 24") && text.contains("4 * 6 = 26. <answer>26</answer>"));
    assert!(!text.contains("4 * 6 = 20. Wait"), "step 2 is not one of the three");
}
