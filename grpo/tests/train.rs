//! The training loop end to end on the tiny fixture checkpoint: the run directory, metrics,
//! traces, checkpoints, an exact resume, and a run that diverges.

mod common;

use std::path::Path;

use aha_grpo::{train, train_with_checkers, GrpoError, RunDir, TrainConfig};
use aha_model::{CausalLM, LoadOptions};
use aha_rewards::{CheckError, Checker, ProblemFields, Registry, Verdict};
use aha_traces::TraceReader;
use common::{deterministic, fixture, metrics, weights};
use serde_json::Value;

/// Countdown prompts; the reward is DAPO's length penalty, which varies with the (random)
/// model's completion lengths, so every step has a gradient.
fn config(out: &Path, steps: u64, extra: &[&str]) -> TrainConfig {
    let overrides: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let mut config = TrainConfig::from_toml(&config_text(out, steps), "test.toml", &overrides).unwrap();
    config.resolve();
    config
}

fn config_text(out: &Path, steps: u64) -> String {
    format!(
        r#"
[model]
path = "{model}"
device = "cpu"

[data]
source = "builtin:countdown:numbers=3,max=20,count=50"

[sampling]
group_size = 4
prompts_per_step = 3
max_new_tokens = 24

[[rewards.checkers]]
name = "length"
options = {{ max_tokens = 20, cache_tokens = 16 }}

[grpo]
loss_type = "grpo"

[optim]
lr = 1e-2
micro_batch_size = 5

[run]
steps = {steps}
save_every = 2
keep_last = 2
seed = 3
output_dir = "{out}"
"#,
        model = fixture().display(),
        out = out.display()
    )
}

#[test]
fn a_run_writes_metrics_traces_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut seen = Vec::new();
    let extra = ["data.eval_count=6", "run.eval_every=2"];
    let outcome = train(config(&out, 5, &extra), false, |m| seen.push(m["step"].as_u64().unwrap())).unwrap();
    assert_eq!(seen, [1, 2, 3, 4, 5]);

    let lines = metrics(&out);
    assert_eq!(lines.len(), 5);
    for line in &lines {
        for key in [
            "reward_mean",
            "reward_std",
            "accuracy",
            "frac_reward_zero_std",
            "completion_length_mean",
            "truncated_frac",
            "loss",
            "entropy",
            "clip_low",
            "clip_high",
            "grad_norm",
            "lr",
            "generation_s",
            "train_s",
            "reward_s",
        ] {
            assert!(line.get(key).is_some(), "metrics lack {key}: {line}");
        }
        assert_eq!(line["completions"], 12);
        assert!(line["rewards"]["length"]["mean"].as_f64().unwrap() <= 0.0);
        // The sampler's log-probs and the trainer's agree (same temperature, same model); absent
        // when no completion was run (every advantage 0).
        if let Some(diff) = line["sampling_logprob_diff"].as_f64() {
            assert!(diff < 1e-4, "{line}");
        }
    }
    assert!(lines.iter().any(|l| l["sampling_logprob_diff"].is_f64()), "no step ran a completion");
    assert!(lines.iter().any(|l| l["grad_norm"].as_f64().unwrap() > 0.0), "no step had a gradient");
    // Held-out evaluation at steps 2 and 4 and at the end, on the 6 held-out problems.
    let evaluated: Vec<u64> =
        lines.iter().filter(|l| l.get("eval_accuracy").is_some()).map(|l| l["step"].as_u64().unwrap()).collect();
    assert_eq!(evaluated, [2, 4, 5]);
    assert_eq!(lines[1]["eval_problems"], 6);
    assert!(lines[1]["eval_length_mean"].as_f64().unwrap() > 0.0);

    // Checkpoints 2 and 4 are kept (keep_last = 2 drops none yet), 5 is the end; 2 is dropped.
    let run = RunDir::open(&out).unwrap();
    let steps: Vec<u64> = run.checkpoints().unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(steps, [4, 5]);
    assert_eq!(outcome.last_checkpoint.unwrap(), out.join("checkpoints/step-000005"));
    let (latest, state) = run.latest_checkpoint().unwrap().unwrap();
    assert_eq!((state.step, state.groups_sampled, state.problems_drawn), (5, 15, 15));
    // The policy moved, and the checkpoint is a Hugging Face folder aha (and transformers) loads.
    assert_ne!(weights(&latest), weights(&fixture()));
    assert!(latest.join("tokenizer.json").is_file() && latest.join("optimizer.safetensors").is_file());

    let traces = TraceReader::open(&run.traces_path()).unwrap();
    let summaries = traces.steps().unwrap();
    assert_eq!(
        summaries.iter().map(|s| (s.step, s.groups, s.completions)).collect::<Vec<_>>(),
        (1..=5).map(|s| (s, 3, 12)).collect::<Vec<_>>()
    );
    let rows = traces.completions(3).unwrap();
    assert!(rows.iter().all(|r| r.advantage.is_some() && r.reward.is_some()));
    // Advantages are centred within each group.
    for group in rows.chunks(4) {
        let sum: f64 = group.iter().map(|r| r.advantage.unwrap()).sum();
        assert!(sum.abs() < 1e-6, "advantages of a group sum to {sum}");
    }

    // The run directory is not reused by accident.
    let error = train(config(&out, 5, &[]), false, |_| {}).unwrap_err();
    assert!(matches!(error, GrpoError::RunDir(_)), "{error:?}");
    let error = error.to_string();
    assert!(error.contains("already holds a run") && error.contains("--resume"), "{error}");
}

#[test]
fn a_resumed_run_continues_exactly_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let straight = dir.path().join("straight");
    train(config(&straight, 6, &[]), false, |_| {}).unwrap();

    // The same run, stopped after step 3 (its last checkpoint), with a save of step 4 that was
    // interrupted, then resumed up to step 6.
    let interrupted = dir.path().join("interrupted");
    train(config(&interrupted, 3, &[]), false, |_| {}).unwrap();
    let partial = interrupted.join("checkpoints/.partial-step-000004");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("model.safetensors"), b"half a file").unwrap();
    let mut resumed = config(&interrupted, 6, &[]);
    resumed.run.output_dir = interrupted.clone();
    train(resumed, true, |_| {}).unwrap();
    assert!(!partial.exists(), "the interrupted save is cleaned up");

    let a: Vec<Value> = metrics(&straight).into_iter().map(deterministic).collect();
    let b: Vec<Value> = metrics(&interrupted).into_iter().map(deterministic).collect();
    assert_eq!(a, b, "the metrics of the resumed run differ from the straight run");
    assert_eq!(a.len(), 6);
    assert_eq!(
        weights(&straight.join("checkpoints/step-000006")),
        weights(&interrupted.join("checkpoints/step-000006"))
    );
    let steps = |run: &Path| TraceReader::open(&run.join("traces.sqlite")).unwrap().steps().unwrap();
    assert_eq!(steps(&straight), steps(&interrupted));
}

#[test]
fn a_diverging_run_stops_and_keeps_its_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    // An absurd learning rate without clipping: the weights overflow and the loss turns NaN.
    let config = config(&out, 6, &["optim.lr=1e30", "optim.max_grad_norm=0", "run.save_every=1"]);
    let error = train(config, false, |_| {}).unwrap_err();
    assert!(matches!(error, GrpoError::Diverged(_)), "{error:?}");
    let error = error.to_string();
    assert!(error.contains("non-finite") && error.contains("last good checkpoint"), "{error}");
    let run = RunDir::open(&out).unwrap();
    let (latest, state) = run.latest_checkpoint().unwrap().expect("a checkpoint before the divergence");
    assert!(error.contains(&latest.display().to_string()), "{error}");
    assert_eq!(metrics(&out).len() as u64, state.step, "no metrics line for the failed step");
    // The checkpoint it points at loads.
    CausalLM::load(&latest, LoadOptions::default()).unwrap();
}

/// A rule reward the tiny random model can learn in a few steps: the share of the completion's
/// characters that are digits.
struct DigitShare;

impl Checker for DigitShare {
    fn name(&self) -> &str {
        "digit_share"
    }

    fn check(&self, completion: &str, _fields: &ProblemFields) -> Result<Verdict, CheckError> {
        let chars = completion.chars().count().max(1) as f64;
        let digits = completion.chars().filter(char::is_ascii_digit).count() as f64;
        Ok(Verdict::reward(digits / chars, serde_json::Value::Null))
    }
}

#[test]
fn a_few_steps_raise_a_rule_reward() {
    raise_a_rule_reward(&[]);
}

#[test]
fn a_few_steps_raise_a_rule_reward_in_mixed_precision() {
    raise_a_rule_reward(&["model.compute_dtype=bf16"]);
}

fn raise_a_rule_reward(extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut registry = Registry::with_builtins();
    registry.register("digit_share", |_options: &serde_json::Value| Ok(Box::new(DigitShare) as Box<dyn Checker>));
    let settings = [&["optim.lr=3e-2", "sampling.prompts_per_step=4", "sampling.max_new_tokens=16"], extra].concat();
    let mut config = config(&out, 12, &settings);
    config.rewards.checkers[0].name = "digit_share".into();
    config.rewards.checkers[0].options = None;
    train_with_checkers(config, false, &registry, |_| {}).unwrap();
    let rewards: Vec<f64> = metrics(&out).iter().map(|l| l["reward_mean"].as_f64().unwrap()).collect();
    let first = (rewards[0] + rewards[1] + rewards[2]) / 3.0;
    let last = (rewards[9] + rewards[10] + rewards[11]) / 3.0;
    assert!(last > first + 0.1, "the reward did not rise: {rewards:?}");
}

#[test]
fn a_few_steps_with_lora_raise_a_rule_reward() {
    raise_a_rule_reward(&["lora.r=8", "lora.alpha=16", "lora.target_modules=all-linear", "optim.lr=5e-2"]);
}

/// The adapter tensors of a LoRA checkpoint, by name.
fn adapter(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let mut model = CausalLM::load(&fixture(), LoadOptions::default()).unwrap();
    model.load_adapter(dir, false).unwrap();
    model
        .parameters()
        .into_iter()
        .filter(|(name, _)| name.contains("lora_"))
        .map(|(name, t)| (name, Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()))
        .collect()
}

#[test]
fn a_lora_run_trains_adapters_alone_writes_peft_files_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    // Dropout draws from libtorch's generator and the KL term scores the base with the adapters
    // off: both must come back the same after a resume.
    let lora = ["lora.r=4", "lora.dropout=0.1", "lora.target_modules=[\"q_proj\", \"down_proj\"]", "grpo.beta=0.04"];
    let straight = dir.path().join("straight");
    train(config(&straight, 4, &lora), false, |_| {}).unwrap();
    let interrupted = dir.path().join("interrupted");
    train(config(&interrupted, 2, &lora), false, |_| {}).unwrap();
    let mut resumed = config(&interrupted, 4, &lora);
    resumed.run.output_dir = interrupted.clone();
    train(resumed, true, |_| {}).unwrap();

    let a: Vec<Value> = metrics(&straight).into_iter().map(deterministic).collect();
    let b: Vec<Value> = metrics(&interrupted).into_iter().map(deterministic).collect();
    assert_eq!(a, b, "the metrics of the resumed LoRA run differ from the straight run");
    assert!(a.iter().all(|l| l["kl"].as_f64().is_some_and(f64::is_finite)), "{a:?}");
    assert!(a.last().unwrap()["kl"].as_f64().unwrap() > 0.0, "the policy moved away from its base");

    let checkpoint = straight.join("checkpoints/step-000004");
    assert!(checkpoint.join("adapter_model.safetensors").is_file() && checkpoint.join("adapter_config.json").is_file());
    assert!(!checkpoint.join("model.safetensors").exists(), "a LoRA checkpoint holds the adapter alone");
    let trained = adapter(&checkpoint);
    assert_eq!(trained.len(), 2 * 2 * 2, "A and B of q_proj and down_proj in both layers");
    assert_eq!(trained, adapter(&interrupted.join("checkpoints/step-000004")));
    assert!(
        trained.iter().filter(|(n, _)| n.contains("lora_B")).all(|(_, b)| b.iter().any(|&x| x != 0.0)),
        "every B moved from zero"
    );
}

#[test]
fn lora_settings_out_of_range_name_their_key() {
    let dir = tempfile::tempdir().unwrap();
    for (set, expected) in [
        (&["lora.r=0"][..], "lora.r=0: must be at least 1"),
        (&["lora.dropout=1.5"], "lora.dropout"),
        (&["lora.target_modules=qproj"], "\"qproj\" matches no layer"),
        (&["lora.r=8", "model.adapter=/nowhere"], "model.adapter"),
    ] {
        let overrides: Vec<String> = set.iter().map(|s| s.to_string()).collect();
        let error =
            TrainConfig::from_toml(&config_text(dir.path(), 2), "test.toml", &overrides).unwrap_err().to_string();
        assert!(error.contains(expected), "{set:?}: {error}");
    }
}

/// With the Python tool on, completions call it mid-generation (the call delimiters here are
/// spaces, which the random model writes often, so its text between two spaces runs as code and
/// mostly fails: a result all the same), the run trains on the model's own tokens around the
/// results, and the metrics and traces count and keep the calls.
#[test]
fn a_run_with_the_python_tool_calls_it_and_trains() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let tools = "\n[tools.python]\nenable = true\nmax_calls = 2\nmax_output_tokens = 4\ntimeout_ms = 2000\n\
                 calls = [{ open = \" \", close = \" \" }]\n";
    let text = config_text(&out, 2).replace("max_new_tokens = 24", "max_new_tokens = 48") + tools;
    let mut config = TrainConfig::from_toml(&text, "test.toml", &[]).unwrap();
    config.resolve();
    train(config, false, |_| {}).unwrap();
    let lines = metrics(&out);
    assert_eq!(lines.len(), 2);
    let calls: f64 = lines.iter().map(|l| l["tool_calls_per_completion"].as_f64().unwrap_or(0.0)).sum();
    assert!(calls > 0.0, "no completion called the tool: {lines:?}");
    for line in &lines {
        assert!(line["loss"].as_f64().unwrap().is_finite(), "{line}");
        // The results' tokens have no sampler log-prob and are left out of the comparison: the
        // model's own tokens after a result agree with the trainer's recomputation.
        if let Some(diff) = line["sampling_logprob_diff"].as_f64() {
            assert!(diff < 1e-4, "{line}");
        }
    }
    let traces = TraceReader::open(&RunDir::open(&out).unwrap().traces_path()).unwrap();
    let rows: Vec<_> = (1..=2).flat_map(|s| traces.completions(s).unwrap()).collect();
    let call = rows.iter().find_map(|r| r.detail.get("tool_calls")).expect("a trace keeps the calls");
    assert!(call[0]["status"].is_string() && call[0]["code"].is_string(), "{call}");
    let stats = traces.statistics(&[]).unwrap();
    assert!(stats.iter().any(|s| s.tools.as_ref().is_some_and(|t| t.calls_per_completion > 0.0)));
}
