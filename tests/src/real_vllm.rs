//! What the tests against real vLLM servers share (tests/tests/vllm_servers.rs on the CPU build,
//! tests/tests/nccl_gpu.rs on a GPU): the fixture model they serve, the server URLs their scripts
//! set, the probe of a weight sync and a short training run on the servers.

use std::path::{Path, PathBuf};

use aha_model::CausalLM;

/// The model the servers start with (head dim 32: vLLM's CPU attention takes no smaller).
pub fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/vllm-qwen2").canonicalize().unwrap()
}

/// The servers' URLs, from `AHA_VLLM_SERVERS` (comma-separated), which `script` sets.
pub fn servers(script: &str) -> Vec<String> {
    let urls = std::env::var("AHA_VLLM_SERVERS").unwrap_or_else(|_| panic!("AHA_VLLM_SERVERS: run {script}"));
    urls.split(',').map(str::to_string).collect()
}

/// A weight sync's probe: fixed token ids and `model`'s log-prob of each after the first.
pub fn probe(model: &CausalLM) -> (Vec<u32>, Vec<f32>) {
    let ids: Vec<u32> = vec![275, 301, 277, 305, 277, 220, 299, 36, 88, 120, 7];
    let logprobs = model.sequence_logprobs(std::slice::from_ref(&ids), 1.0).unwrap().remove(0);
    (ids, logprobs)
}

/// The TOML of a short GRPO run (`steps` steps, output in `out`) whose rollouts run on `servers`
/// (`rollout.backend = "vllm"`); the caller's overrides say how weights reach them.
pub fn train_toml(servers: &[String], out: &Path, steps: u64) -> String {
    format!(
        r#"
[model]
path = "{model}"

[data]
source = "builtin:countdown:numbers=3,max=20,count=64"

[sampling]
group_size = 4
prompts_per_step = 4
max_new_tokens = 48

[rollout]
backend = "vllm"
servers = {servers:?}

[[rewards.checkers]]
name = "length"
options = {{ max_tokens = 32, cache_tokens = 24 }}

[optim]
lr = 1e-3

[run]
steps = {steps}
save_every = 0
seed = 2
output_dir = "{out}"
"#,
        model = model_dir().display(),
        out = out.display()
    )
}
