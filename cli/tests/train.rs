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
    let out = aha_owned(&train_args(&run, &["run.steps=2"]));
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

/// `aha train` on the example config and the tiny fixture, into `run`, with `sets` on top.
fn train_args(run: &Path, sets: &[&str]) -> Vec<String> {
    let mut args = vec![
        "train".to_string(),
        repo("examples/configs/tiny-countdown.toml").display().to_string(),
        "--set".into(),
        format!("model.path={}", repo("tests/fixtures/models/qwen2").display()),
        "--set".into(),
        format!("run.output_dir={}", run.display()),
    ];
    for set in sets {
        args.extend(["--set".to_string(), set.to_string()]);
    }
    args
}

fn aha_owned(args: &[String]) -> std::process::Output {
    aha(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn checkpoint_steps(run: &Path) -> Vec<u64> {
    let mut steps: Vec<u64> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_prefix("step-")?.parse().ok())
        .collect();
    steps.sort();
    steps
}

/// Waits for `done` (polling), failing the test after two minutes.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < std::time::Duration::from_secs(120), "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_run_directory_is_held_by_one_process_and_a_kill_frees_it() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut first = Command::new(env!("CARGO_BIN_EXE_aha"))
        .args(train_args(&run, &["run.steps=100000", "run.save_every=1", "run.eval_every=0"]))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the first checkpoint", || run.join("checkpoints").is_dir() && !checkpoint_steps(&run).is_empty());

    // A resume, and a fresh run racing for the same directory, are both refused with the PID.
    let holder = format!("in use by process {}", first.id());
    for args in [
        vec!["train".to_string(), "--resume".into(), run.display().to_string(), "--set".into(), "run.steps=3".into()],
        train_args(&run, &["run.steps=3"]),
    ] {
        let out = aha_owned(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} ran beside the holder");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(&holder), "{stderr}");
    }

    // kill -9 leaves no stale lock: the run resumes from its last checkpoint and takes a step.
    first.kill().unwrap();
    first.wait().unwrap();
    let last = *checkpoint_steps(&run).last().unwrap();
    let out = aha(&["train", "--resume", run.to_str().unwrap(), "--set", &format!("run.steps={}", last + 1)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(metric_steps(&run), (1..=last + 1).collect::<Vec<_>>(), "each step once");
}

#[test]
fn checkpoints_after_a_resume_are_complete_model_folders() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = aha_owned(&train_args(&run, &["run.steps=2", "run.save_every=1", "run.eval_every=0"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // keep_last = 2: the checkpoint the resume loads (step 2) is deleted on the way to step 6.
    let out = aha(&["train", "--resume", run.to_str().unwrap(), "--set", "run.steps=6"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(checkpoint_steps(&run), [5, 6]);
    for step in [5, 6] {
        let checkpoint = run.join(format!("checkpoints/step-{step:06}"));
        for file in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"] {
            assert!(checkpoint.join(file).is_file(), "step {step} has no {file}");
        }
    }
    let latest = run.join("checkpoints/step-000006");
    let out = aha(&["generate", "--model", latest.to_str().unwrap(), "--prompt", "1 + 2 =", "--max-new-tokens", "3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Nothing left to do: said, and nothing is written.
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    for steps in ["run.steps=3", "run.steps=6"] {
        let out = aha(&["train", "--resume", run.to_str().unwrap(), "--set", steps]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stderr.contains("nothing to do") && stderr.contains("at step 6"), "{stderr}");
        assert!(!stderr.contains("trained"), "{stderr}");
    }
    assert_eq!(std::fs::read_to_string(run.join("metrics.jsonl")).unwrap(), metrics);

    // A resume that changes the trajectory says which setting; warnings carry no colour codes
    // when stderr is not a terminal.
    let out = aha(&["train", "--resume", run.to_str().unwrap(), "--set", "run.steps=7", "--set", "run.seed=5"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("run.seed changes from 42 to 5"), "{stderr}");
    assert!(!stderr.contains("run.steps changes"), "a constant schedule does not depend on run.steps: {stderr}");
    assert!(!stderr.contains('\x1b'), "colour codes in a pipe: {stderr:?}");
}

#[test]
fn prompts_all_over_the_limit_stop_with_one_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut child = Command::new(env!("CARGO_BIN_EXE_aha"))
        .args(train_args(&run, &["sampling.max_prompt_tokens=8", "run.steps=2"]))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut status = None;
    wait_for("aha train to give up", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.unwrap().success(), "{stderr}");
    assert!(stderr.contains("no usable problem") && stderr.contains("sampling.max_prompt_tokens = 8"), "{stderr}");
    assert!(stderr.matches("skipping prompts").count() <= 1, "one warning, not one per prompt: {stderr}");
}

#[test]
fn a_failed_start_can_be_retried_in_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = aha_owned(&train_args(&run, &["model.path=/nonexistent/model", "run.steps=1"]));
    assert!(!out.status.success());
    assert!(run.join("config.toml").is_file(), "the failed start wrote its config");
    let out = aha_owned(&train_args(&run, &["run.steps=1", "run.eval_every=0"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(metric_steps(&run), [1]);
    // A run that made progress is not taken over.
    let out = aha_owned(&train_args(&run, &["run.steps=1"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("already holds a run"), "{stderr}");
}

#[test]
fn a_dataset_of_malformed_rows_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.jsonl");
    std::fs::write(&data, "{\"question\": \"1 + 1\"}\n{\"question\": \"2 + 2\"}\nnot json\n").unwrap();
    let run = dir.path().join("run");
    let out = aha_owned(&train_args(
        &run,
        &[&format!("data.source={}", data.display()), "data.eval_count=0", "rewards.checkers=[{name = \"math\"}]"],
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let error = stderr.lines().last().unwrap();
    assert!(error.contains("no problems (all 3 rows were skipped; first: "), "{error}");
    assert!(error.contains("data.jsonl:1: ") && error.contains("answer"), "{error}");
}
