//! `aha train` from the command line: the example config on the tiny fixture, resume, and
//! one-line configuration errors.

use std::path::{Path, PathBuf};
use std::process::Command;

fn aha(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_aha")).args(args).output().expect("run aha")
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn metric_steps(run: &Path) -> Vec<u64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap())
        .collect()
}

#[test]
fn the_example_config_trains_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let config = repo("examples/configs/tiny-countdown.toml");
    let model = format!("model.path={}", repo("tests/fixtures/models/qwen2").display());
    let output = format!("run.output_dir={}", run.display());
    let out = aha(&["train", config.to_str().unwrap(), "--set", &model, "--set", &output, "--set", "run.steps=2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("step 2/2") && stderr.contains("checkpoints/step-000002"), "{stderr}");
    assert_eq!(metric_steps(&run), [1, 2]);
    let saved = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(saved.contains("steps = 2") && saved.contains("epsilon_high = 0.28"), "resolved config:\n{saved}");

    let out = aha(&["train", "--resume", run.to_str().unwrap(), "--set", "run.steps=3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(metric_steps(&run), [1, 2, 3]);
    assert!(run.join("checkpoints/step-000003/model.safetensors").is_file());

    // What the run sampled, read back through `aha traces`.
    let traces = |args: &[&str]| {
        let mut all = vec!["traces", run.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = aha(&all);
        assert!(out.status.success(), "aha {all:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let table = traces(&[]);
    assert_eq!(table.lines().count(), 4, "a header and three steps:\n{table}");
    let shown: Vec<serde_json::Value> =
        traces(&["show", "--step", "2..3", "--json"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(shown.len(), 2 * 4 * 4, "two steps of 4 groups of 4");
    assert!(shown.iter().all(|r| (2..=3).contains(&r["step"].as_u64().unwrap())));
    let exported: Vec<serde_json::Value> =
        traces(&["export", "--finish", "length"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(exported
        .iter()
        .all(|r| r["prompt"].as_str().unwrap().contains("Assistant:") && r["completion"].is_string()));
    let stats: Vec<serde_json::Value> = traces(&["stats", "--json", "--phrases", "wait,answer"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(stats.len(), 3);
    assert!(stats[0]["phrases"]["answer"].is_number() && stats[0]["accuracy"]["countdown"].is_number());
}

#[test]
fn configuration_mistakes_are_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[model]\npath = \"m\"\n[data]\nsource = \"builtin:countdown\"\n[optim]\nlr_rate = 1\n")
        .unwrap();
    let out = aha(&["train", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("bad.toml:6") && stderr.contains("lr_rate"), "{stderr}");

    let out = aha(&["train", "--resume", dir.path().to_str().unwrap()]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success() && stderr.contains("not a run directory"), "{stderr}");
}
