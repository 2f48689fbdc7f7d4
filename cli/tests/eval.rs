//! `aha eval` on the tiny random Qwen2 fixture: output shapes, determinism, metrics consistent
//! with the per-problem lines, and one-line errors.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn aha(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_aha")).args(args).output().expect("run aha")
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn model() -> String {
    repo("tests/fixtures/models/qwen2").display().to_string()
}

fn json_lines(stdout: &[u8]) -> Vec<Value> {
    std::str::from_utf8(stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn eval(extra: &[&str]) -> (Vec<Value>, String) {
    let model = model();
    let mut args = vec!["eval", "--model", model.as_str(), "--max-new-tokens", "12"];
    args.extend_from_slice(extra);
    let out = aha(&args);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "aha {args:?}: {stderr}");
    (json_lines(&out.stdout), stderr)
}

fn error_line(extra: &[&str]) -> String {
    let model = model();
    let mut args = vec!["eval", "--model", model.as_str(), "--max-new-tokens", "4"];
    args.extend_from_slice(extra);
    let out = aha(&args);
    assert!(!out.status.success(), "aha {args:?} should fail");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0].to_string()
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let values: Vec<f64> = values.collect();
    values.iter().sum::<f64>() / values.len() as f64
}

#[test]
fn builtin_arithmetic_prints_problem_lines_then_a_summary() {
    let (lines, _) = eval(&["--data", "builtin:arithmetic:count=5,digits=2", "--samples", "3", "--seed", "4"]);
    assert_eq!(lines.len(), 6);
    let (problems, summary) = lines.split_at(5);
    let summary = &summary[0];
    for problem in problems {
        assert_eq!(problem["n"], 3);
        let samples = problem["samples"].as_array().unwrap();
        assert_eq!(samples.len(), 3);
        for sample in samples {
            assert!(sample["tokens"].as_u64().unwrap() <= 12);
            assert!(sample["reward"].is_number() && sample["completion"].is_string(), "{sample}");
            assert!(["stop", "length"].contains(&sample["finish_reason"].as_str().unwrap()));
        }
        let correct = samples.iter().filter(|s| s["correct"] == true).count() as f64;
        assert_eq!(problem["pass@1"].as_f64().unwrap(), correct / 3.0);
        assert!(problem["prompt"].as_str().unwrap().starts_with("A conversation between User and Assistant."));
        assert!(problem["prompt"].as_str().unwrap().ends_with("?. Assistant:"));
        assert!(problem["gold"].is_string());
    }
    assert_eq!(summary["n_problems"], 5);
    assert_eq!(summary["k"], 3);
    assert_eq!(summary["checker"], "math");
    assert_eq!(summary["skipped"], 0);
    let pass1 = mean(problems.iter().map(|p| p["pass@1"].as_f64().unwrap()));
    let passk = mean(problems.iter().map(|p| p["pass@k"].as_f64().unwrap()));
    let majk = mean(problems.iter().map(|p| if p["maj@k"] == true { 1.0 } else { 0.0 }));
    assert!((summary["pass@1"].as_f64().unwrap() - pass1).abs() < 1e-12);
    assert!((summary["pass@k"].as_f64().unwrap() - passk).abs() < 1e-12);
    assert!((summary["maj@k"].as_f64().unwrap() - majk).abs() < 1e-12);
    let tokens = mean(
        problems.iter().flat_map(|p| p["samples"].as_array().unwrap().iter()).map(|s| s["tokens"].as_f64().unwrap()),
    );
    assert!((summary["mean_completion_tokens"].as_f64().unwrap() - tokens).abs() < 1e-9);
}

#[test]
fn same_seed_same_completions_and_out_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("problems.jsonl");
    let args = ["--data", "builtin:countdown:count=3,numbers=3", "--samples", "2", "--seed", "1", "--batch-size", "2"];
    let (first, _) = eval(&args);
    let mut with_out = args.to_vec();
    with_out.extend_from_slice(&["--out", out.to_str().unwrap()]);
    let (summary_only, _) = eval(&with_out);
    assert_eq!(summary_only.len(), 1);
    assert_eq!(summary_only[0]["checker"], "countdown");
    let written = json_lines(&std::fs::read(&out).unwrap());
    let completions = |lines: &[Value]| -> Vec<Value> { lines.iter().map(|l| l["samples"].clone()).collect() };
    assert_eq!(completions(&written), completions(&first[..3]));
    let (other_seed, _) = eval(&["--data", "builtin:countdown:count=3,numbers=3", "--samples", "2", "--seed", "2"]);
    assert_ne!(completions(&other_seed[..3]), completions(&first[..3]));
}

#[test]
fn file_with_preset_warns_about_skipped_rows() {
    let data = repo("datasets/tests/fixtures/gsm8k.jsonl");
    let (lines, stderr) = eval(&["--data", data.to_str().unwrap(), "--preset", "gsm8k", "--template", "boxed"]);
    assert_eq!(lines.len(), 4);
    let ids: Vec<&str> = lines[..3].iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["gsm8k.jsonl:1", "gsm8k.jsonl:2", "gsm8k.jsonl:5"]);
    assert_eq!(lines[1]["gold"], "2500");
    assert!(lines[0]["prompt"].as_str().unwrap().ends_with("put your final answer within \\boxed{}."));
    assert_eq!(lines[3]["skipped"], 4);
    assert!(
        stderr.contains("gsm8k.jsonl:3: field `answer` has no `####` before the final answer (skipped)"),
        "{stderr}"
    );
    assert!(stderr.contains("4 rows skipped"), "{stderr}");
}

#[test]
fn chat_template_wraps_the_prompt() {
    let (lines, _) = eval(&["--data", "builtin:arithmetic:count=1", "--template", "chat:plain", "--limit", "1"]);
    let prompt = lines[0]["prompt"].as_str().unwrap();
    assert!(prompt.starts_with("<|im_start|>user\nWhat is "), "{prompt}");
    assert!(prompt.ends_with("?<|im_end|>\n<|im_start|>assistant\n"), "{prompt}");
}

#[test]
fn bad_inputs_are_one_line_errors() {
    let data = repo("datasets/tests/fixtures/gsm8k.jsonl");
    let data = data.to_str().unwrap();
    let strict = error_line(&["--data", data, "--preset", "gsm8k", "--strict"]);
    assert!(strict.ends_with("gsm8k.jsonl:3: field `answer` has no `####` before the final answer"), "{strict}");
    let preset = error_line(&["--data", data, "--preset", "gsm9k"]);
    assert!(preset.contains("unknown preset \"gsm9k\""), "{preset}");
    let template = error_line(&["--data", "builtin:arithmetic:count=2", "--template", "Solve: {problem_text}"]);
    assert!(template.contains("unknown placeholder {problem_text} for problem arithmetic-0-0"), "{template}");
    let builtin = error_line(&["--data", "builtin:countdown:numbers=9"]);
    assert!(builtin.contains("numbers must be 2..=6"), "{builtin}");
    let missing = error_line(&["--data", "nope.parquet"]);
    assert!(missing.contains("nope.parquet"), "{missing}");
}
