//! The `aha` binary as users and other tools see it: output shapes, and one clear line with a
//! non-zero exit for bad input.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn aha(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_aha")).args(args).output().expect("run aha")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models").join(name)
}

fn expected() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/expected.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// One JSON value per line of `stdout`.
fn json_lines(stdout: &[u8]) -> Vec<Value> {
    std::str::from_utf8(stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Runs aha expecting failure; returns its single stderr line.
fn error_line(args: &[&str]) -> String {
    let out = aha(args);
    assert!(!out.status.success(), "aha {args:?} should fail");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0].to_string()
}

/// A copy of a fixture model folder that a test may break.
fn copy_of(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    dir
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let path = dir.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(config.as_object_mut().unwrap());
    std::fs::write(&path, config.to_string()).unwrap();
}

#[test]
fn logprobs_prints_tokens_and_logprobs_as_transformers_does() {
    let case = &expected()["models"]["llama"]["logprobs"][1];
    let model = fixture("llama");
    let out = aha(&["logprobs", "--model", model.to_str().unwrap(), "--text", case["text"].as_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["tokens"], case["tokens"]);
    let ours = json["logprobs"].as_array().unwrap();
    let theirs = case["logprobs"].as_array().unwrap();
    assert_eq!(ours.len(), theirs.len());
    for (a, b) in ours.iter().zip(theirs) {
        assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-4);
    }
}

#[test]
fn generate_json_gives_one_line_per_completion() {
    let model = fixture("qwen2");
    let args = [
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "12 + 35 =",
        "--n",
        "3",
        "--max-new-tokens",
        "8",
        "--top-k",
        "20",
        "--seed",
        "4",
        "--json",
    ];
    let out = aha(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 3);
    for line in &lines {
        let ids = line["token_ids"].as_array().unwrap();
        assert!(!ids.is_empty() && ids.len() <= 8);
        assert_eq!(line["logprobs"].as_array().unwrap().len(), ids.len());
        assert!(line["text"].is_string());
        let reason = line["finish_reason"].as_str().unwrap();
        assert!(reason == "length" && ids.len() == 8 || reason == "stop", "{line}");
    }
    // Same seed, same completions.
    assert_eq!(lines, json_lines(&aha(&args).stdout));
}

#[test]
fn doctor_reports_cuda() {
    let out = aha(&["doctor"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().any(|l| l.starts_with("cuda: ")), "{text}");
}

#[test]
fn a_missing_config_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let line = error_line(&["logprobs", "--model", dir.path().to_str().unwrap(), "--text", "hi"]);
    assert!(line.contains("config.json") && line.contains("No such file"), "{line}");
}

#[test]
fn a_malformed_config_is_named() {
    let dir = copy_of("qwen2");
    std::fs::write(dir.path().join("config.json"), "{\"model_type\": \"qwen2\",").unwrap();
    let line = error_line(&["logprobs", "--model", dir.path().to_str().unwrap(), "--text", "hi"]);
    assert!(line.contains("config.json: malformed JSON"), "{line}");
}

#[test]
fn an_unsupported_model_type_lists_the_supported_ones() {
    let dir = copy_of("qwen2");
    edit_config(dir.path(), |c| {
        c.insert("model_type".into(), "mixtral".into());
    });
    let line = error_line(&["logprobs", "--model", dir.path().to_str().unwrap(), "--text", "hi"]);
    assert!(line.contains("unsupported model_type \"mixtral\" (supported: qwen2, llama, qwen3)"), "{line}");
}

#[test]
fn a_missing_shard_is_named() {
    let dir = copy_of("qwen2-sharded");
    std::fs::remove_file(dir.path().join("model-00002-of-00003.safetensors")).unwrap();
    let line = error_line(&["logprobs", "--model", dir.path().to_str().unwrap(), "--text", "hi"]);
    assert!(line.contains("shard model-00002-of-00003.safetensors listed in the index is missing"), "{line}");
}

#[test]
fn a_tensor_of_the_wrong_shape_is_named() {
    let dir = copy_of("qwen2");
    edit_config(dir.path(), |c| {
        c.insert("intermediate_size".into(), 96.into());
    });
    let line = error_line(&["logprobs", "--model", dir.path().to_str().unwrap(), "--text", "hi"]);
    assert!(
        line.contains("tensor model.layers.0.mlp.gate_proj.weight has shape [128, 64], expected [96, 64]"),
        "{line}"
    );
}

#[test]
fn a_missing_tensor_is_named() {
    let dir = copy_of("qwen2");
    edit_config(dir.path(), |c| {
        c.insert("num_hidden_layers".into(), 3.into());
    });
    let line = error_line(&["logprobs", "--model", dir.path().to_str().unwrap(), "--text", "hi"]);
    assert!(line.contains("tensor model.layers.2.self_attn.q_proj.weight is missing from the checkpoint in"), "{line}");
}

#[test]
fn a_tokenizer_larger_than_the_vocabulary_is_refused() {
    // Shrink the model's vocabulary below the tokenizer's (embedding rows cut to match).
    let dir = copy_of("llama");
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let small_vocab = 300usize;
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            if name == "model.embed_tokens.weight" {
                let cols = view.shape()[1];
                let data = &view.data()[..small_vocab * cols * 4];
                let view = safetensors::tensor::TensorView::new(view.dtype(), vec![small_vocab, cols], data).unwrap();
                (name, view)
            } else {
                (name, view)
            }
        })
        .collect();
    let serialized = safetensors::tensor::serialize(views, None).unwrap();
    std::fs::write(&path, serialized).unwrap();
    edit_config(dir.path(), |c| {
        c.insert("vocab_size".into(), small_vocab.into());
        c.insert("bos_token_id".into(), 1.into());
        c.insert("eos_token_id".into(), 2.into());
    });
    let line = error_line(&["logprobs", "--model", dir.path().to_str().unwrap(), "--text", "hi"]);
    assert!(line.contains("tokenizer.json: does not match the model"), "{line}");
    assert!(line.contains("vocab_size is 300"), "{line}");
}

#[test]
fn bad_sampling_parameters_are_refused() {
    let model = fixture("qwen2");
    let line = error_line(&["generate", "--model", model.to_str().unwrap(), "--prompt", "hi", "--top-p", "1.5"]);
    assert!(line.contains("top_p must be in (0, 1]"), "{line}");
}

#[test]
fn an_unusable_device_is_refused() {
    let model = fixture("qwen2");
    let generate = |device: &str| {
        error_line(&["generate", "--model", model.to_str().unwrap(), "--prompt", "hi", "--device", device])
    };
    assert!(generate("tpu").contains("unknown device \"tpu\" (expected cpu, cuda, cuda:N or auto)"));
    // A GPU machine has cuda:0 but not cuda:4096; a CPU machine (or set-up) has neither.
    let line = generate("cuda:4096");
    assert!(line.contains("device cuda:4096: "), "{line}");
    if !tch::Cuda::is_available() {
        assert!(line.contains("CUDA is not available here"), "{line}");
        assert!(generate("cuda").contains("CUDA is not available here"));
    }
}

#[test]
fn convert_writes_a_folder_that_loads_the_same() {
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("bf16");
    let model = fixture("qwen3");
    let status =
        aha(&["convert", "--model", model.to_str().unwrap(), "--out", target.to_str().unwrap(), "--dtype", "bf16"]);
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let config: Value = serde_json::from_str(&std::fs::read_to_string(target.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["dtype"], "bfloat16");
    let scored = aha(&["logprobs", "--model", target.to_str().unwrap(), "--text", "The cat sat on the mat."]);
    assert!(scored.status.success(), "{}", String::from_utf8_lossy(&scored.stderr));
}

fn lora_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/lora").join(name)
}

/// `--model MODEL`, and `--adapter ADAPTER` when there is one.
fn model_args<'a>(model: &'a Path, adapter: Option<&'a Path>) -> Vec<&'a str> {
    let mut args = vec!["--model", model.to_str().unwrap()];
    if let Some(adapter) = adapter {
        args.extend(["--adapter", adapter.to_str().unwrap()]);
    }
    args
}

#[test]
fn an_adapter_changes_the_scores_and_convert_merges_it() {
    let base = fixture("qwen2");
    let adapter = lora_fixture("qwen2");
    // (PEFT's own numbers are checked in tests/tests/lora_parity.rs; here the command line.)
    let text = "The cat sat on the mat.";
    let scored = |model: &[&str]| -> Vec<f64> {
        let out = aha(&[&["logprobs", "--text", text][..], model].concat());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let json: Value = serde_json::from_slice(&out.stdout).unwrap();
        json["logprobs"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
    };
    let with_adapter = scored(&model_args(&base, Some(&adapter)));
    let plain = scored(&model_args(&base, None));
    assert!(with_adapter.iter().zip(&plain).any(|(a, b)| (a - b).abs() > 1e-2), "the adapter changes nothing");

    let out = tempfile::tempdir().unwrap();
    let merged = out.path().join("merged");
    let status =
        aha(&[&["convert", "--out", merged.to_str().unwrap()][..], &model_args(&base, Some(&adapter))].concat());
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    assert!(merged.join("model.safetensors").is_file() && !merged.join("adapter_config.json").exists());
    let from_merged = scored(&model_args(&merged, None));
    for (a, b) in from_merged.iter().zip(&with_adapter) {
        assert!((a - b).abs() < 1e-5 * b.abs().max(1.0), "merged {a} vs adapter {b}");
    }

    // An adapter for another base: one line naming the tensor, exit status 1.
    let (llama, qwen3_adapter) = (fixture("llama"), lora_fixture("qwen3"));
    let line = error_line(&[&["logprobs", "--text", text][..], &model_args(&llama, Some(&qwen3_adapter))].concat());
    assert!(line.contains("k_proj.lora_B.weight") && line.contains("another base model"), "{line}");
}

#[test]
fn sandbox_run_prints_a_verdict_and_exits_zero_whatever_the_guest_did() {
    let dir = tempfile::tempdir().unwrap();
    let run = |code: &str, extra: &[&str]| -> Value {
        let file = dir.path().join("program.py");
        std::fs::write(&file, code).unwrap();
        let out = aha(&[&["sandbox", "run", file.to_str().unwrap(), "--timeout-ms", "20000"][..], extra].concat());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let stdin = dir.path().join("stdin.txt");
    std::fs::write(&stdin, "3 4\n").unwrap();
    let ok = run("a, b = map(int, input().split())\nprint(a * b)", &["--stdin", stdin.to_str().unwrap()]);
    assert_eq!(
        (ok["status"].as_str(), ok["exit_code"].as_i64(), ok["stdout"].as_str()),
        (Some("ok"), Some(0), Some("12\n"))
    );
    for key in ["stderr", "wall_ms", "fuel_used"] {
        assert!(ok.get(key).is_some(), "{key} missing from {ok}");
    }
    let exit = run("import sys\nsys.exit(3)", &[]);
    assert_eq!((exit["status"].as_str(), exit["exit_code"].as_i64()), (Some("exit"), Some(3)));
    let host = run("import os\nprint(open('/etc/passwd').read())", &[]);
    assert_eq!(host["status"], "exit");
    assert!(!host["stdout"].as_str().unwrap().contains("root:"));
    let flood = run("while True: print('x' * 1000)", &["--max-output-bytes", "10000"]);
    assert_eq!(flood["status"], "output_limit");
    let environment = "import os\nprint(dict(os.environ))";
    assert_eq!(run(environment, &[])["stdout"], "{}\n");
    let version = "import sys\nprint(sys.version_info[:2])";
    assert_eq!(run(version, &[])["stdout"], "(3, 14)\n", "the pre-initialised CPython by default");
    assert_eq!(run(version, &["--no-snapshot"])["stdout"], "(3, 12)\n");
    assert_eq!(run(environment, &["--no-snapshot"])["stdout"], "{'PYTHONPATH': '/stdlib'}\n");
    assert_eq!(run(environment, &["--no-snapshot", "--no-unpacked-stdlib"])["stdout"], "{}\n");
}

#[test]
fn sandbox_run_names_a_missing_program() {
    let line = error_line(&["sandbox", "run", "/nonexistent/program.py"]);
    assert!(line.contains("/nonexistent/program.py"), "{line}");
}

fn aha_with_stdin(args: &[&str], stdin: impl AsRef<[u8]>) -> std::process::Output {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_aha"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_ref()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn reward_adds_reward_and_detail_in_order() {
    let lines = [
        r#"{"id": 1, "completion": "so \\boxed{\\frac{1}{2}}", "answer": "0.5"}"#,
        r#"{"id": 2, "completion": "<answer>7</answer>", "answer": "8"}"#,
        r#"{"id": 3, "completion": "the final answer is 3\\sqrt{2}", "answer": "\\sqrt{18}"}"#,
    ];
    let out = aha_with_stdin(&["reward", "--checker", "math"], &(lines.join("\n") + "\n"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let scored = json_lines(&out.stdout);
    assert_eq!(scored.iter().map(|v| v["id"].as_i64().unwrap()).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(scored.iter().map(|v| v["reward"].as_f64().unwrap()).collect::<Vec<_>>(), vec![1.0, 0.0, 1.0]);
    assert!(scored.iter().all(|v| v.get("detail").is_some() && v["completion"].is_string()));
}

#[test]
fn reward_names_the_line_and_field_of_bad_input_after_writing_the_good_lines() {
    let input = "{\"completion\": \"\\\\boxed{2}\", \"answer\": \"2\"}\n{\"completion\": \"\\\\boxed{2}\"}\n";
    let out = aha_with_stdin(&["reward", "--checker", "math"], input);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("line 2") && stderr.contains("answer"), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "the good first line is kept: {stdout}");
    let not_json = aha_with_stdin(&["reward", "--checker", "math"], "{\"completion\": \n");
    let stderr = String::from_utf8(not_json.stderr).unwrap();
    assert!(!not_json.status.success() && stderr.contains("line 1") && stderr.contains("JSON"), "{stderr}");
}

#[test]
fn reward_writes_every_line_before_one_that_is_not_utf8() {
    // 600 lines: more than one batch of 512, so a whole batch and part of the next come first.
    for good in [4, 600] {
        let mut input = Vec::new();
        for i in 0..good {
            input.extend_from_slice(
                format!("{{\"id\": {i}, \"completion\": \"\\\\boxed{{2}}\", \"answer\": \"2\"}}\n").as_bytes(),
            );
        }
        input.extend_from_slice(b"{\"completion\": \"\xff\", \"answer\": \"2\"}\n");
        input.extend_from_slice(b"{\"completion\": \"\\\\boxed{2}\", \"answer\": \"2\"}\n");
        let out = aha_with_stdin(&["reward", "--checker", "math"], &input);
        assert!(!out.status.success());
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.contains(&format!("line {}", good + 1)) && stderr.contains("UTF-8"), "{stderr}");
        let scored = json_lines(&out.stdout);
        assert_eq!(scored.len(), good, "every line before the bad one is written");
        assert!(scored.iter().enumerate().all(|(i, v)| v["id"] == i && v["reward"] == 1.0));
    }
}
