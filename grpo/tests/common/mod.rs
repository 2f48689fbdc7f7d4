//! What the tests share: the fixture model, deterministic token ids, and how a run's metrics and
//! weights are read back for comparison. (Each test file compiles its own copy and uses part.)
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use aha_model::{CausalLM, LoadOptions};
use serde_json::Value;

/// The tiny random Qwen2 checkpoint.
pub fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models/qwen2")
}

/// Deterministic token ids below the fixtures' vocabulary (400).
pub fn tokens(seed: u64, n: usize) -> Vec<u32> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 33) % 390) as u32
        })
        .collect()
}

/// The lines of a run's metrics.jsonl.
pub fn metrics(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A metrics line without its wall-clock fields (`*_s`, `*_per_s`) and the ones computed from the
/// sampler's log-probs (`sampling_logprob_diff`, `sampler_kl`, `tis_capped_frac`): those depend on
/// which sequences shared the engine's batches, which depends on when the reward workers hand
/// groups back, so two identical runs agree on them to about 1e-7, not bit for bit (on a loaded
/// machine they differed). The tokens, rewards and everything the trainer computes must agree
/// exactly.
pub fn deterministic(mut line: Value) -> Value {
    const SAMPLER_SIDE: [&str; 3] = ["sampling_logprob_diff", "sampler_kl", "tis_capped_frac"];
    line.as_object_mut().unwrap().retain(|key, _| !key.ends_with("_s") && !SAMPLER_SIDE.contains(&key.as_str()));
    line
}

/// Every weight of the checkpoint in `dir`, by name.
pub fn weights(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let model = CausalLM::load(dir, LoadOptions::default()).unwrap();
    let mut vars: Vec<(String, Vec<f32>)> = model
        .var_store()
        .variables()
        .into_iter()
        .map(|(name, t)| (name, Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}
