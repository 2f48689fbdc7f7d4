//! `rollout.sync_method = "nccl"` against a real vLLM server on a GPU: run by
//! scripts/test_nccl_gpu.sh, which starts the server (CUDA build of vLLM, weight-transfer engine
//! `nccl`) on tests/fixtures/models/vllm-qwen2 and sets AHA_VLLM_SERVERS. Built only with
//! `--features nccl`, and ignored by a plain `cargo test`: it needs a GPU, libnccl and the server.
//! Not run yet: no GPU machine has been available to the project when it was written.
#![cfg(feature = "nccl")]

use aha_model::{CausalLM, LoadOptions};
use aha_rollout::{
    generate, generate_all, Backend, GenerationRequest, RemoteBackend, RemoteConfig, SamplingParams, ServerKind,
    SyncMethod, WeightsInMemory,
};
use aha_tests::real_vllm::{self, model_dir};

fn servers() -> Vec<String> {
    real_vllm::servers("scripts/test_nccl_gpu.sh")
}

fn cuda() -> LoadOptions {
    LoadOptions { device: tch::Device::Cuda(0), ..LoadOptions::default() }
}

fn greedy() -> SamplingParams {
    SamplingParams { temperature: 0.0, max_new_tokens: 24, stop_token_ids: vec![390], ..Default::default() }
}

fn requests() -> Vec<GenerationRequest> {
    (0..4)
        .map(|i| GenerationRequest { prompt_ids: vec![275, 301, 277 + i, 305, 277, 220, 299], n: 1, seed: 7 })
        .collect()
}

fn weights(model: &CausalLM, version: u64) -> WeightsInMemory {
    let (probe_ids, probe_logprobs) = real_vllm::probe(model);
    WeightsInMemory { version, tensors: model.hf_weights(), probe_ids, probe_logprobs }
}

/// Two syncs of random weights from the trainer's GPU: after each, the probe agrees and the
/// server's greedy tokens equal aha's on the weights sent.
#[test]
#[ignore = "needs a GPU and a vLLM server: scripts/test_nccl_gpu.sh"]
fn nccl_syncs_put_the_trainers_weights_on_the_server() {
    let mut config = RemoteConfig::new(ServerKind::Vllm, servers());
    config.sync_method = SyncMethod::Nccl;
    config.max_logprob_diff = 1e-3;
    let mut backend = RemoteBackend::new(config, greedy()).unwrap();
    for (version, seed) in [(1, 71), (2, 72)] {
        let model = CausalLM::init_random(&model_dir(), cuda(), seed).unwrap();
        let report = backend.weight_sync().unwrap().send_weights(weights(&model, version)).unwrap();
        eprintln!("sync {version}: {report:?}");
        assert!(report.max_abs_logprob_diff < 1e-3, "{report:?}");
        let local = generate(&model, &requests(), &greedy()).unwrap();
        let remote = generate_all(&mut backend, &requests()).unwrap();
        for (r, l) in remote.iter().flatten().zip(local.iter().flatten()) {
            assert_eq!(r.token_ids, l.token_ids, "greedy tokens after sync {version}");
        }
    }
}

/// A short `aha train` on the GPU whose every sync goes over NCCL.
#[test]
#[ignore = "needs a GPU and a vLLM server: scripts/test_nccl_gpu.sh"]
fn training_with_nccl_sync_keeps_the_server_on_the_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let text = real_vllm::train_toml(&servers(), &tmp.path().join("run"), 3);
    let overrides = ["model.device=\"cuda\"".to_string(), "rollout.sync_method=\"nccl\"".to_string()];
    let config = aha_grpo::TrainConfig::from_toml(&text, "nccl.toml", &overrides).unwrap();
    let mut lines = Vec::new();
    aha_grpo::train(config, false, |m| lines.push(m.clone())).unwrap();
    assert_eq!(lines.len(), 3);
    for line in &lines {
        eprintln!("{line}");
        assert!(line["sync_max_abs_logprob_diff"].as_f64().unwrap() < 1e-3, "{line}");
    }
}
