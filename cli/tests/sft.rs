//! `aha sft` from the command line: the example config on the tiny fixture, resume, a run's
//! exported traces as training data, and one-line errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// `aha ARGS` run from the repository root, where the example configs' relative paths point.
fn aha(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aha")).args(args).current_dir(repo("")).output().expect("run aha")
}

fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_example_config_trains_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let output = format!("run.output_dir={}", run.display());
    let out = aha(&[
        "sft",
        "examples/configs/sft-tiny.toml",
        "--set",
        &output,
        "--set",
        "run.steps=2",
        "--set",
        "run.eval_every=2",
    ]);
    let stderr = ok(&out);
    assert!(
        stderr.contains("step 2/2") && stderr.contains("eval_loss") && stderr.contains("checkpoints/step-000002"),
        "{stderr}"
    );
    let lines = metrics(&run);
    assert_eq!(lines.iter().map(|l| l["step"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2]);
    assert!(lines[1]["eval_loss"].as_f64().unwrap() > 0.0 && lines[0]["tokens"].as_u64().unwrap() > 0);
    let saved = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(
        saved.contains("steps = 2") && saved.contains("batch_size = 8") && saved.contains("init = \"pretrained\""),
        "{saved}"
    );

    let out = aha(&["sft", "--resume", run.to_str().unwrap(), "--set", "run.steps=3"]);
    ok(&out);
    assert_eq!(metrics(&run).len(), 3);
    assert!(run.join("checkpoints/step-000003/model.safetensors").is_file());
    assert!(run.join("checkpoints/step-000003/tokenizer.json").is_file());
}

#[test]
fn a_grpo_runs_exported_traces_are_training_data() {
    let dir = tempfile::tempdir().unwrap();
    let grpo = dir.path().join("grpo");
    let output = format!("run.output_dir={}", grpo.display());
    ok(&aha(&["train", "examples/configs/tiny-countdown.toml", "--set", &output, "--set", "run.steps=1"]));
    let out = aha(&["traces", grpo.to_str().unwrap(), "export"]);
    ok(&out);
    let exported = dir.path().join("exported.jsonl");
    std::fs::write(&exported, &out.stdout).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 16, "4 groups of 4 completions");

    let sft = dir.path().join("sft");
    let sets = [
        format!("data.source={}", exported.display()),
        "data.max_length=512".to_string(),
        "data.eval_count=0".to_string(),
        "run.eval_every=0".to_string(),
        "run.steps=1".to_string(),
        format!("run.output_dir={}", sft.display()),
    ];
    let mut args = vec!["sft", "examples/configs/sft-tiny.toml"];
    for set in &sets {
        args.extend(["--set", set.as_str()]);
    }
    ok(&aha(&args));
    assert_eq!(metrics(&sft)[0]["examples"], 8);
}

#[test]
fn mistakes_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[model]\npath = \"m\"\n[data]\nsource = \"d.jsonl\"\n[run]\nbatch = 4\n").unwrap();
    let out = aha(&["sft", path.to_str().unwrap()]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success() && stderr.lines().count() == 1, "{stderr}");
    assert!(stderr.contains("bad.toml:6") && stderr.contains("unknown field `batch`"), "{stderr}");

    let data = dir.path().join("data.jsonl");
    std::fs::write(&data, "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"text\": 3}\n").unwrap();
    let source = format!("data.source={}", data.display());
    let output = format!("run.output_dir={}", dir.path().join("run").display());
    let out = aha(&["sft", "examples/configs/sft-tiny.toml", "--set", &source, "--set", &output]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success() && stderr.lines().count() == 1, "{stderr}");
    assert!(stderr.contains("data.jsonl:2: \"text\" must be a string"), "{stderr}");
}
