//! `aha sft` on the tiny fixture checkpoint: the loss against an independent computation, exact
//! micro-batch accumulation, learning, an exact resume, training from scratch, and one-line
//! errors for bad data and configuration.

mod common;

use std::path::{Path, PathBuf};

use aha_grpo::sft::train;
use aha_grpo::{load_data, sft_gradients, sft_loss, GrpoError, SftConfig, SftExample};
use aha_model::{CausalLM, LoadOptions, Tokenizer};
use common::{deterministic, fixture, metrics, weights};
use serde_json::Value;

/// Prompt/completion pairs of different lengths (so micro-batches are padded).
const PAIRS: [(&str, &str); 6] = [
    ("User: 3 + 4 = ?\nAssistant:", " <answer>7</answer>"),
    ("User: 12 + 35 = ?\nAssistant:", " <think>12 + 35 = 47</think> <answer>47</answer>"),
    ("User: 9 - 2 = ?\nAssistant:", " <answer>7</answer>"),
    ("Q: 6 * 7\nA:", " 42"),
    ("User: 100 - 1 = ?\nAssistant:", " <think>100 - 1 = 99</think> <answer>99</answer>"),
    ("Q: 8 / 2\nA:", " 4, because 2 * 4 = 8"),
];

fn write_pairs(dir: &Path, pairs: &[(&str, &str)]) -> PathBuf {
    let path = dir.join("data.jsonl");
    let lines: Vec<String> = pairs
        .iter()
        .map(|(p, c)| serde_json::json!({"prompt": p, "completion": c, "reward": 1.0}).to_string())
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn config(model: &Path, data: &Path, out: &Path, steps: u64, extra: &[&str]) -> SftConfig {
    let text = format!(
        r#"
[model]
path = "{model}"
device = "cpu"

[data]
source = "{data}"
max_length = 64

[optim]
lr = 1e-2
micro_batch_size = 3

[run]
steps = {steps}
batch_size = 4
save_every = 2
keep_last = 2
seed = 5
output_dir = "{out}"
"#,
        model = model.display(),
        data = data.display(),
        out = out.display()
    );
    let overrides: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    SftConfig::from_toml(&text, "sft.toml", &overrides).unwrap()
}

fn tokenizer() -> Tokenizer {
    Tokenizer::from_dir(&fixture(), 400).unwrap()
}

fn examples(pairs: &[(&str, &str)]) -> Vec<SftExample> {
    let t = tokenizer();
    pairs
        .iter()
        .map(|(p, c)| SftExample { prompt_ids: t.encode(p).unwrap(), target_ids: t.encode(c).unwrap() })
        .collect()
}

#[test]
fn the_loss_is_the_masked_cross_entropy_of_the_completions() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_pairs(dir.path(), &PAIRS[..2]);
    let c = config(&fixture(), &data, &dir.path().join("run"), 1, &[]);
    let t = tokenizer();
    let loaded = load_data(&c.data, &t, Some(390), 0).unwrap();
    // Prompt and completion are tokenized apart, and the eos id follows the completion.
    for (example, (prompt, completion)) in loaded.train.iter().zip(PAIRS) {
        assert_eq!(example.prompt_ids, t.encode(prompt).unwrap());
        assert_eq!(example.target_ids, [t.encode(completion).unwrap(), vec![390]].concat());
    }

    let model = CausalLM::load(&fixture(), LoadOptions::default()).unwrap();
    let pass = sft_loss(&model, &loaded.train, 8).unwrap();
    // Independently: the log-probs of each whole sequence, prompt tokens masked out.
    let sequences: Vec<Vec<u32>> =
        loaded.train.iter().map(|e| [e.prompt_ids.clone(), e.target_ids.clone()].concat()).collect();
    let logprobs = model.sequence_logprobs(&sequences, 1.0).unwrap();
    let (mut sum, mut count) = (0.0f64, 0usize);
    for (example, lp) in loaded.train.iter().zip(&logprobs) {
        // logprobs[i - 1] scores token i; the targets are tokens prompt_len.. .
        let targets = &lp[example.prompt_ids.len() - 1..];
        assert_eq!(targets.len(), example.target_ids.len());
        sum += targets.iter().map(|&x| f64::from(x)).sum::<f64>();
        count += targets.len();
    }
    let expected = -sum / count as f64;
    assert_eq!(pass.tokens, count);
    assert!((pass.loss - expected).abs() < 1e-5, "loss {} vs reference {expected}", pass.loss);
    // The micro-batch size changes nothing but rounding (rows in another number take other BLAS
    // kernels on some CPUs: a few fp32 ulps of a loss near 5).
    let one_by_one = sft_loss(&model, &loaded.train, 1).unwrap();
    let diff = (one_by_one.loss - pass.loss).abs();
    assert!(diff < 1e-5, "one by one {} vs {}", one_by_one.loss, pass.loss);
}

#[test]
fn gradients_do_not_depend_on_the_micro_batch_size() {
    let model = CausalLM::load(&fixture(), LoadOptions { trainable: true, ..LoadOptions::default() }).unwrap();
    let batch = examples(&PAIRS[..5]);
    let grads = |micro_batch_size: usize| {
        let pass = sft_gradients(&model, &batch, micro_batch_size).unwrap();
        let mut grads: Vec<(String, Vec<f32>)> = model
            .var_store()
            .variables()
            .into_iter()
            .map(|(name, t)| (name, Vec::<f32>::try_from(t.grad().flatten(0, -1)).unwrap()))
            .collect();
        grads.sort_by(|a, b| a.0.cmp(&b.0));
        (pass, grads)
    };
    let (one, a) = grads(1);
    let (four, b) = grads(4);
    // Equal up to rounding: rows in another number take other BLAS kernels on some CPUs, and a
    // gradient sums every token's part in another order (measured: 1.2e-6, with a largest
    // gradient of 1.02, under libtorch's portable kernels; a micro-batch of these five examples
    // counted twice or left out is off by far more).
    assert!((one.loss - four.loss).abs() < 1e-5, "{} vs {}", one.loss, four.loss);
    let largest = a.iter().flat_map(|(_, g)| g).fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(largest > 1e-4, "the gradient is not trivially zero");
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        for (x, y) in x.iter().zip(y) {
            assert!((x - y).abs() <= 1e-5 * largest, "{name}: {x} vs {y}");
        }
    }
}

#[test]
fn a_tiny_dataset_is_memorised() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_pairs(dir.path(), &PAIRS[..4]);
    let out = dir.path().join("run");
    let mut losses = Vec::new();
    train(config(&fixture(), &data, &out, 20, &[]), false, |m| losses.push(m["loss"].as_f64().unwrap())).unwrap();
    assert_eq!(losses.len(), 20);
    let (first, last) = (losses[0], losses[19]);
    assert!(last < 0.5 * first, "the loss went from {first} to {last}: {losses:?}");
    // Four examples, four per step: one epoch per step.
    assert_eq!(metrics(&out)[19]["epoch"], 20.0);
}

#[test]
fn a_resumed_run_continues_exactly_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_pairs(dir.path(), &PAIRS);
    // 6 examples, 2 held out, 3 per step: epochs of 4 cut across steps.
    let extra = ["data.eval_count=2", "run.eval_every=1", "run.batch_size=3"];
    let straight = dir.path().join("straight");
    train(config(&fixture(), &data, &straight, 4, &extra), false, |_| {}).unwrap();

    let interrupted = dir.path().join("interrupted");
    let outcome = train(config(&fixture(), &data, &interrupted, 2, &extra), false, |_| {}).unwrap();
    assert_eq!(outcome.last_checkpoint.unwrap(), interrupted.join("checkpoints/step-000002"));
    let outcome = train(config(&fixture(), &data, &interrupted, 4, &extra), true, |_| {}).unwrap();
    assert_eq!(outcome.last_checkpoint.unwrap(), interrupted.join("checkpoints/step-000004"));

    let a: Vec<Value> = metrics(&straight).into_iter().map(deterministic).collect();
    let b: Vec<Value> = metrics(&interrupted).into_iter().map(deterministic).collect();
    assert_eq!(a.len(), 4);
    assert_eq!(a, b, "the metrics of the resumed run differ from the straight run");
    for line in &a {
        for key in ["step", "loss", "eval_loss", "tokens", "lr", "grad_norm", "epoch"] {
            assert!(line.get(key).is_some(), "metrics lack {key}: {line}");
        }
        assert_eq!(line["examples"], 3);
    }
    assert!(metrics(&straight)
        .iter()
        .all(|l| l["tokens_per_s"].as_f64().unwrap() > 0.0 && l.get("elapsed_s").is_some()));
    assert_eq!(
        weights(&straight.join("checkpoints/step-000004")),
        weights(&interrupted.join("checkpoints/step-000004"))
    );
    assert_ne!(weights(&straight.join("checkpoints/step-000004")), weights(&fixture()), "the model moved");
}

#[test]
fn a_model_is_trained_from_scratch_from_its_config() {
    let dir = tempfile::tempdir().unwrap();
    // Only the architecture and the tokenizer.
    let bare = dir.path().join("bare");
    std::fs::create_dir(&bare).unwrap();
    for name in ["config.json", "tokenizer.json"] {
        std::fs::copy(fixture().join(name), bare.join(name)).unwrap();
    }
    let data = write_pairs(dir.path(), &PAIRS);
    let out = dir.path().join("run");
    let mut losses = Vec::new();
    let config = config(&bare, &data, &out, 2, &["model.init=random"]);
    let outcome = train(config, false, |m| losses.push(m["loss"].as_f64().unwrap())).unwrap();
    // Fresh weights (std 0.02) predict about uniformly over the 400 tokens.
    assert!((losses[0] - 400f64.ln()).abs() < 0.5, "{losses:?}");
    let checkpoint = outcome.last_checkpoint.unwrap();
    assert!(checkpoint.join("tokenizer.json").is_file());
    let model = CausalLM::load(&checkpoint, LoadOptions::default()).unwrap();
    assert_eq!(model.config().vocab_size, 400);
    assert_ne!(weights(&checkpoint), weights(&fixture()));
}

#[test]
fn a_text_file_is_cut_into_overlapping_windows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corpus.txt");
    let text = "the first problem: 3 + 4 = 7\nthen the second one, 12 + 35 = 47, because 2 + 5 = 7.\n";
    std::fs::write(&path, text).unwrap();
    let mut c = config(&fixture(), &path, &dir.path().join("run"), 1, &["data.max_length=8"]);
    let t = tokenizer();
    let ids = [t.encode(text).unwrap(), vec![390]].concat();
    let data = load_data(&c.data, &t, Some(390), 0).unwrap();
    assert!(data.train.iter().all(|e| e.prompt_ids.len() == 1 && e.target_ids.len() <= 7));
    // Every token after the first is predicted exactly once, after the one before it.
    let targets: Vec<u32> = data.train.iter().flat_map(|e| e.target_ids.clone()).collect();
    assert_eq!(targets, ids[1..]);
    assert_eq!(data.train[1].prompt_ids[0], *data.train[0].target_ids.last().unwrap());
    c.data.add_eos = false;
    let data = load_data(&c.data, &t, Some(390), 0).unwrap();
    assert_eq!(*data.train.last().unwrap().target_ids.last().unwrap(), *ids.iter().rev().nth(1).unwrap());
}

#[test]
fn long_examples_are_cut_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = [
        ("Q: 1", " <think>12 + 35 = 47, because 2 + 5 = 7 and 1 + 3 = 4</think>"),
        ("Q: 6", " 42"),
        ("", "a text line"),
        ("Q: 6 * 7\nA:", ""),
        ("the question of this problem is far too long for twelve tokens", " 1"),
    ];
    let data = write_pairs(dir.path(), &pairs);
    let c = config(&fixture(), &data, &dir.path().join("run"), 1, &["data.max_length=12", "data.add_eos=false"]);
    let loaded = load_data(&c.data, &tokenizer(), Some(390), 0).unwrap();
    // The long pair is cut; the empty completion has nothing to learn and the long prompt leaves
    // no room: both skipped; an empty prompt makes a text line.
    assert_eq!((loaded.train.len(), loaded.truncated, loaded.skipped), (3, 1, 2));
    assert_eq!(loaded.train[0].prompt_ids.len() + loaded.train[0].target_ids.len(), 12);
    assert_eq!(loaded.train[2].prompt_ids.len(), 1);
}

#[test]
fn bad_data_and_configuration_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bad.jsonl");
    std::fs::write(&data, "{\"prompt\": \"a\", \"completion\": \"b\"}\n\n{\"prompt\": \"a\", \"answer\": \"b\"}\n")
        .unwrap();
    let error = train(config(&fixture(), &data, &dir.path().join("run"), 1, &[]), false, |_| {}).unwrap_err();
    assert!(matches!(error, GrpoError::Data(_)), "{error:?}");
    let error = error.to_string();
    assert!(error.starts_with(&format!("{}:3: missing key \"completion\"", data.display())), "{error}");
    assert!(!error.contains('\n'), "{error}");

    let text = "[model]\npath = \"m\"\n[data]\nsource = \"d.jsonl\"\nmax_len = 10\n";
    let error = SftConfig::from_toml(text, "sft.toml", &[]).unwrap_err();
    assert!(matches!(error, GrpoError::Config(_)), "{error:?}");
    let error = error.to_string();
    assert!(
        error.starts_with("sft.toml:5: unknown field `max_len`, expected one of `source`, `max_length`"),
        "{error}"
    );
    let text = text.replace("max_len", "max_length");
    let error = SftConfig::from_toml(&text, "sft.toml", &["run.stepz=3".into()]).unwrap_err().to_string();
    assert!(error.starts_with("--set run.stepz=3: unknown field `stepz`"), "{error}");

    // A diverging run names its last good checkpoint.
    let data = write_pairs(dir.path(), &PAIRS);
    let out = dir.path().join("diverging");
    let extra = ["optim.lr=1e30", "optim.max_grad_norm=0", "run.save_every=1"];
    let error = train(config(&fixture(), &data, &out, 6, &extra), false, |_| {}).unwrap_err();
    assert!(matches!(error, GrpoError::Diverged(_)), "{error:?}");
    let error = error.to_string();
    assert!(error.contains("non-finite") && error.contains("last good checkpoint is"), "{error}");
    assert!(error.contains(&out.join("checkpoints/step-").display().to_string()), "{error}");
}
