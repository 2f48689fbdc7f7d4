//! The vLLM and SGLang backends against in-repo stand-in servers (tests/src/fake_server.rs,
//! answered by aha's own engine): the groups they return, faults that must lose no group, weight
//! syncs and the check that catches a server on other weights, tool calls in the middle of a
//! completion, and short `aha train` runs.
//! scripts/test_vllm.sh runs the same backend against real vLLM servers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aha_model::{CausalLM, CompletionBatch, LoadOptions, SaveOptions, Tokenizer};
use aha_rollout::remote::servers::SetAsideRules;
use aha_rollout::{
    generate, generate_all, Backend, Completion, GenerationRequest, PythonToolConfig, RemoteBackend, RemoteConfig,
    SamplingParams, ServerKind, SyncMethod, ToolExecutor, WeightsInMemory, WeightsOnDisk,
};
use aha_tests::fake_server::{FakeServer, Loopback};
use aha_tests::tool_calls::call_format_in;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/qwen2")
}

fn params() -> SamplingParams {
    SamplingParams { temperature: 1.0, max_new_tokens: 12, stop_token_ids: vec![1], ..Default::default() }
}

fn requests(count: usize) -> Vec<GenerationRequest> {
    (0..count)
        .map(|i| GenerationRequest { prompt_ids: vec![3 + i as u32, 17, 42, 5 + i as u32], n: 3, seed: 100 + i as u64 })
        .collect()
}

/// Patient with failures, quick to retry: the rules the tests need.
fn config(kind: ServerKind, servers: &[&FakeServer]) -> RemoteConfig {
    let mut config = RemoteConfig::new(kind, servers.iter().map(|s| s.url.clone()).collect());
    config.set_aside = SetAsideRules {
        failures_to_set_aside: 2,
        first_set_aside: Duration::from_millis(200),
        max_set_aside: Duration::from_secs(1),
    };
    config.request_timeout = Duration::from_secs(20);
    config
}

/// The same tokens and finish reasons, and log-probs within float rounding: the engine batched
/// all requests together where the servers ran them one by one, and a batch's shape moves the
/// last bits of a log-prob (never the sampled token: each sequence draws from its own seed).
fn assert_same_groups(remote: &[Vec<Completion>], local: &[Vec<Completion>]) {
    assert_eq!(remote.len(), local.len());
    for (r, l) in remote.iter().flatten().zip(local.iter().flatten()) {
        assert_eq!((&r.token_ids, r.finish_reason), (&l.token_ids, l.finish_reason));
        let diff = r.logprobs.iter().zip(&l.logprobs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-4, "log-probs differ by {diff}");
    }
    assert_eq!(remote.iter().map(Vec::len).collect::<Vec<_>>(), local.iter().map(Vec::len).collect::<Vec<_>>());
}

fn local(requests: &[GenerationRequest]) -> Vec<Vec<Completion>> {
    let model = CausalLM::load(&fixture(), LoadOptions::default()).unwrap();
    generate(&model, requests, &params()).unwrap()
}

/// A copy of the fixture with other random weights, saved in `dir`.
fn other_weights(dir: &Path, seed: u64) -> PathBuf {
    let model = CausalLM::init_random(&fixture(), LoadOptions::default(), seed).unwrap();
    let out = dir.join(format!("weights-{seed}"));
    std::fs::create_dir_all(&out).unwrap();
    model.save(&out, SaveOptions::default()).unwrap();
    out
}

fn expected_check(dir: &Path) -> WeightsOnDisk {
    let model = CausalLM::load(dir, LoadOptions::default()).unwrap();
    let probe_ids: Vec<u32> = vec![7, 30, 31, 200, 9, 15, 2, 88];
    let probe_logprobs = model.sequence_logprobs(std::slice::from_ref(&probe_ids), 1.0).unwrap().remove(0);
    WeightsOnDisk { dir: dir.to_path_buf(), probe_ids, probe_logprobs }
}

#[test]
fn vllm_groups_equal_the_engines_and_spread_over_the_servers() {
    let (a, b) = (FakeServer::start(ServerKind::Vllm, &fixture()), FakeServer::start(ServerKind::Vllm, &fixture()));
    let mut backend = RemoteBackend::new(config(ServerKind::Vllm, &[&a, &b]), params()).unwrap();
    let reqs = requests(6);
    let remote = generate_all(&mut backend, &reqs).unwrap();
    assert_same_groups(&remote, &local(&reqs));
    assert_eq!(a.generations() + b.generations(), 6);
    assert!(a.generations() >= 1 && b.generations() >= 1, "{} / {}", a.generations(), b.generations());
    assert_eq!(backend.in_flight(), 0);
}

#[test]
fn sglang_groups_come_back_whole() {
    let server = FakeServer::start(ServerKind::Sglang, &fixture());
    let mut backend = RemoteBackend::new(config(ServerKind::Sglang, &[&server]), params()).unwrap();
    let reqs = requests(3);
    let remote = generate_all(&mut backend, &reqs).unwrap();
    assert_eq!(remote.len(), 3);
    for (group, request) in remote.iter().zip(&reqs) {
        assert_eq!(group.len(), request.n);
        for c in group {
            assert_eq!(c.token_ids.len(), c.logprobs.len());
            assert!(!c.token_ids.is_empty() && c.logprobs.iter().all(|l| *l <= 0.0));
        }
    }
    // SGLang seeds each completion itself (seed + j): the same request gives the same group.
    assert_eq!(generate_all(&mut backend, &reqs).unwrap(), remote);
}

#[test]
fn errors_drops_malformed_and_short_answers_lose_no_group() {
    let (a, b) = (FakeServer::start(ServerKind::Vllm, &fixture()), FakeServer::start(ServerKind::Vllm, &fixture()));
    let faults = a.faults();
    faults.error_next.store(1, std::sync::atomic::Ordering::SeqCst);
    faults.drop_next.store(1, std::sync::atomic::Ordering::SeqCst);
    faults.malformed_next.store(1, std::sync::atomic::Ordering::SeqCst);
    faults.short_next.store(1, std::sync::atomic::Ordering::SeqCst);
    let mut backend = RemoteBackend::new(config(ServerKind::Vllm, &[&a, &b]), params()).unwrap();
    let reqs = requests(8);
    let remote = generate_all(&mut backend, &reqs).unwrap();
    assert_same_groups(&remote, &local(&reqs));
    // The short answer was generated and thrown away; every other group once.
    assert_eq!(a.generations() + b.generations(), 8 + 1);
}

#[test]
fn a_slow_server_times_out_and_its_group_goes_elsewhere() {
    let (a, b) = (FakeServer::start(ServerKind::Vllm, &fixture()), FakeServer::start(ServerKind::Vllm, &fixture()));
    a.faults().delay_ms.store(3_000, std::sync::atomic::Ordering::SeqCst);
    let mut config = config(ServerKind::Vllm, &[&a, &b]);
    config.request_timeout = Duration::from_millis(1_000);
    let mut backend = RemoteBackend::new(config, params()).unwrap();
    let reqs = requests(4);
    assert_same_groups(&generate_all(&mut backend, &reqs).unwrap(), &local(&reqs));
}

#[test]
fn a_dead_server_is_set_aside_and_a_restarted_one_gets_the_weights_again() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (FakeServer::start(ServerKind::Vllm, &fixture()), FakeServer::start(ServerKind::Vllm, &fixture()));
    let mut backend = RemoteBackend::new(config(ServerKind::Vllm, &[&a, &b]), params()).unwrap();
    let weights = other_weights(dir.path(), 11);
    let report = backend.weight_sync().unwrap().load_weights(expected_check(&weights)).unwrap();
    assert!(report.max_abs_logprob_diff < 1e-5, "{report:?}");
    assert_eq!((a.reloads(), b.reloads()), (1, 1));
    let synced = {
        let model = CausalLM::load(&weights, LoadOptions::default()).unwrap();
        generate(&model, &requests(6), &params()).unwrap()
    };

    // Killed: every group goes to b.
    a.faults().down.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_same_groups(&generate_all(&mut backend, &requests(6)).unwrap(), &synced);
    // Started again on its original weights: it loads the synced ones before serving a group.
    a.restart();
    std::thread::sleep(Duration::from_millis(1_100));
    let before = a.generations();
    assert_same_groups(&generate_all(&mut backend, &requests(6)).unwrap(), &synced);
    assert!(a.generations() > before, "the restarted server serves again");
    assert_eq!(a.reloads(), 2, "and it reloaded the weights first");
}

#[test]
fn when_every_server_is_gone_the_run_stops_with_one_error() {
    let (a, b) = (FakeServer::start(ServerKind::Sglang, &fixture()), FakeServer::start(ServerKind::Sglang, &fixture()));
    a.faults().down.store(true, std::sync::atomic::Ordering::SeqCst);
    b.faults().down.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut config = config(ServerKind::Sglang, &[&a, &b]);
    config.attempts_per_group = 4;
    let mut backend = RemoteBackend::new(config, params()).unwrap();
    let error = generate_all(&mut backend, &requests(2)).unwrap_err().to_string();
    assert!(error.contains("no server left") && error.contains("4 times on 2 servers"), "{error}");
}

#[test]
fn a_server_that_ignores_a_reload_is_caught_by_the_check() {
    let dir = tempfile::tempdir().unwrap();
    for kind in [ServerKind::Vllm, ServerKind::Sglang] {
        let (a, b) = (FakeServer::start(kind, &fixture()), FakeServer::start(kind, &fixture()));
        let mut backend = RemoteBackend::new(config(kind, &[&a, &b]), params()).unwrap();
        let first = other_weights(dir.path(), 21);
        backend.weight_sync().unwrap().load_weights(expected_check(&first)).unwrap();
        b.faults().ignore_reloads.store(true, std::sync::atomic::Ordering::SeqCst);
        let second = other_weights(dir.path(), 22);
        let error = backend.weight_sync().unwrap().load_weights(expected_check(&second)).unwrap_err().to_string();
        assert!(error.contains(&b.url) && error.contains("does not serve the weights"), "{kind:?}: {error}");
    }
}

#[test]
fn a_wrong_url_fails_with_the_servers_answer() {
    let server = FakeServer::start(ServerKind::Vllm, &fixture());
    let mut config = config(ServerKind::Vllm, &[&server]);
    config.servers = vec![format!("{}/nowhere", server.url)];
    let mut backend = RemoteBackend::new(config, params()).unwrap();
    // 404 (a wrong URL) is retried as a server problem, until the attempts run out.
    let error = generate_all(&mut backend, &requests(1)).unwrap_err().to_string();
    assert!(error.contains("404"), "{error}");
    assert!(RemoteBackend::new(RemoteConfig::new(ServerKind::Vllm, vec!["localhost:8000".into()]), params()).is_err());
}

fn train_config(out: &Path, extra: &[String]) -> aha_grpo::TrainConfig {
    let text = format!(
        r#"
[model]
path = "{model}"

[data]
source = "builtin:countdown:numbers=3,max=20,count=40"

[sampling]
group_size = 4
prompts_per_step = 3
max_new_tokens = 16

[[rewards.checkers]]
name = "length"
options = {{ max_tokens = 12, cache_tokens = 10 }}

[optim]
lr = 1e-2

[run]
steps = 3
save_every = 0
seed = 5
output_dir = "{out}"
"#,
        model = fixture().display(),
        out = out.display()
    );
    aha_grpo::TrainConfig::from_toml(&text, "test.toml", extra).unwrap()
}

fn metrics(run: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let mut line: serde_json::Value = serde_json::from_str(l).unwrap();
            line.as_object_mut().unwrap().retain(|k, _| {
                !(k.ends_with("_s") || k.ends_with("_per_s") || k.starts_with("sync_") || k == "sampled_by_version")
            });
            line
        })
        .collect()
}

fn final_weights(run: &Path) -> Vec<(String, Vec<f32>)> {
    let dir = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .max()
        .expect("a final checkpoint");
    let model = CausalLM::load(&dir, LoadOptions::default()).unwrap();
    let mut vars: Vec<(String, Vec<f32>)> = model
        .var_store()
        .variables()
        .into_iter()
        .map(|(name, t)| (name, Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// `aha train` on two stand-in vLLM servers that sync after every step trains exactly as the
/// in-process engine does (the servers generate with aha's engine on the weights they loaded),
/// while one of them fails now and then.
#[test]
fn training_on_two_servers_equals_training_on_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let engine_run = dir.path().join("engine");
    aha_grpo::train(train_config(&engine_run, &[]), false, |_| {}).unwrap();

    let (a, b) = (FakeServer::start(ServerKind::Vllm, &fixture()), FakeServer::start(ServerKind::Vllm, &fixture()));
    a.faults().error_next.store(1, std::sync::atomic::Ordering::SeqCst);
    a.faults().drop_next.store(1, std::sync::atomic::Ordering::SeqCst);
    let remote_run = dir.path().join("remote");
    let sync_dir = dir.path().join("sync");
    let extra = vec![
        "rollout.backend=\"vllm\"".to_string(),
        format!("rollout.servers=[\"{}\", \"{}\"]", a.url, b.url),
        format!("rollout.sync_dir=\"{}\"", sync_dir.display()),
    ];
    let mut seen = Vec::new();
    aha_grpo::train(train_config(&remote_run, &extra), false, |m| seen.push(m.clone())).unwrap();

    // Everything but the sampler's log-probs' last bits (see assert_same_groups), which only
    // the metrics comparing them with the trainer's see.
    let close = |key: &str, a: &serde_json::Value, b: &serde_json::Value| {
        let (a, b) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
        assert!((a - b).abs() < 1e-5, "{key}: {a} vs {b}");
    };
    let (mut remote, mut engine) = (metrics(&remote_run), metrics(&engine_run));
    for (r, e) in remote.iter_mut().zip(engine.iter_mut()) {
        for key in ["sampling_logprob_diff", "sampler_kl"] {
            close(key, r, e);
            r.as_object_mut().unwrap().remove(key);
            e.as_object_mut().unwrap().remove(key);
        }
    }
    assert_eq!(remote, engine);
    assert_eq!(final_weights(&remote_run), final_weights(&engine_run));
    for (step, line) in seen.iter().enumerate() {
        assert_eq!(line["sampled_by_version"], step as u64, "{line}");
        assert!(line["sync_max_abs_logprob_diff"].as_f64().unwrap() < 1e-5, "{line}");
    }
    // Synced before each step's generation; a failed twice, so it loaded the weights again
    // before its next group. Only the latest weights are kept.
    assert!(a.reloads() > 3 && b.reloads() == 3, "{} {}", a.reloads(), b.reloads());
    let kept: Vec<_> = std::fs::read_dir(&sync_dir).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(kept, vec![std::ffi::OsString::from("weights-00000002")]);
}

/// A run whose server does not take the new weights stops at the first sync after it.
#[test]
fn training_stops_when_a_server_keeps_old_weights() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeServer::start(ServerKind::Sglang, &fixture());
    server.faults().ignore_reloads.store(true, std::sync::atomic::Ordering::SeqCst);
    let extra = vec![
        "rollout.backend=\"sglang\"".to_string(),
        format!("rollout.servers=[\"{}\"]", server.url),
        format!("rollout.sync_dir=\"{}\"", dir.path().join("sync").display()),
    ];
    let mut steps = 0;
    let error = aha_grpo::train(train_config(&dir.path().join("run"), &extra), false, |_| steps += 1).unwrap_err();
    assert_eq!(steps, 1, "the first sync hands it the policy it already has; the one before step 2 fails");
    assert!(error.to_string().contains("does not serve the weights"), "{error}");
}

/// With `max_staleness = 1` the servers generate step t+1's groups while step t trains: they come
/// from the policy one update behind, and the run records which.
#[test]
fn one_step_stale_training_records_the_version_that_sampled() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeServer::start(ServerKind::Vllm, &fixture());
    let extra = vec![
        "rollout.backend=\"vllm\"".to_string(),
        format!("rollout.servers=[\"{}\"]", server.url),
        format!("rollout.sync_dir=\"{}\"", dir.path().join("sync").display()),
        "rollout.max_staleness=1".to_string(),
        "grpo.tis_cap=2.0".to_string(),
        "run.steps=4".to_string(),
    ];
    let mut seen = Vec::new();
    aha_grpo::train(train_config(&dir.path().join("run"), &extra), false, |m| seen.push(m.clone())).unwrap();
    let versions: Vec<u64> = seen.iter().map(|m| m["sampled_by_version"].as_u64().unwrap()).collect();
    assert_eq!(versions, vec![0, 0, 1, 2]);
    // The traces say the same of every completion.
    let traces = aha_traces::TraceReader::open(&dir.path().join("run/traces.sqlite")).unwrap();
    for (step, version) in (1..=4).zip(&versions) {
        let rows = traces.completions(step).unwrap();
        assert!(!rows.is_empty() && rows.iter().all(|r| r.detail["sampled_by_version"] == *version), "step {step}");
    }
    for line in &seen[1..] {
        // Sampled one update behind: the trainer's old log-probs differ from the sampler's.
        assert!(line["sampling_logprob_diff"].as_f64().unwrap() > 1e-4, "{line}");
        assert!(line["sampler_kl"].as_f64().unwrap() >= 0.0, "{line}");
        assert!(line["tis_capped_frac"].as_f64().is_some(), "{line}");
    }
    // A request for step 5 was in flight when the run ended; every step trained on its groups.
    assert!(seen.iter().all(|m| m["groups"] == 3));

    let bad = aha_grpo::TrainConfig::from_toml(
        &format!("[model]\npath = \"{}\"\n[data]\nsource = \"builtin:countdown\"\n[[rewards.checkers]]\nname = \"countdown\"\n[rollout]\nmax_staleness = 1\n", fixture().display()),
        "t.toml",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(bad.contains("rollout.max_staleness") && bad.contains("needs backend"), "{bad}");
}

/// With tools on, a server stops a completion at the call's close, aha runs the call in its
/// sandbox, appends the result as context and the completion goes on in a new request: the tokens
/// up to the call are the server's own, the result is the sandbox's, and every token the model
/// sampled after it has the log-prob of the whole context (the new request carried the call and
/// its result). The same group twice gives the same completions.
#[test]
fn tool_calls_run_here_and_completions_go_on_on_the_servers() {
    let model = CausalLM::load(&fixture(), LoadOptions::default()).unwrap();
    let tokenizer = Tokenizer::from_dir(&fixture(), model.config().vocab_size).unwrap();
    // Room for the result (its delimiters and the truncation marker are some 35 tokens here).
    let params = SamplingParams { temperature: 1.0, max_new_tokens: 80, stop_token_ids: vec![], ..Default::default() };
    let request =
        GenerationRequest { prompt_ids: tokenizer.encode("Once upon a time, in a land far").unwrap(), n: 3, seed: 7 };
    let base = generate(&model, std::slice::from_ref(&request), &params).unwrap().remove(0);
    let (choice, (format, close)) = base
        .iter()
        .enumerate()
        .find_map(|(i, c)| call_format_in(&tokenizer, &c.token_ids).map(|f| (i, f)))
        .expect("some completion has two usable tokens");
    let tools = PythonToolConfig {
        enable: true,
        timeout_ms: 1_000,
        memory_mb: 64,
        max_output_tokens: 8,
        max_calls: 1,
        workers: 1,
        calls: vec![format],
        ..Default::default()
    };
    for kind in [ServerKind::Vllm, ServerKind::Sglang] {
        let server = FakeServer::start(kind, &fixture());
        let backend = RemoteBackend::new(config(kind, &[&server]), params.clone()).unwrap();
        let executor = ToolExecutor::new(tools.clone()).unwrap();
        let mut backend = backend.with_tools(tokenizer.clone(), executor.clone());
        let group = generate_all(&mut backend, std::slice::from_ref(&request)).unwrap().remove(0);
        let c = &group[choice];
        assert_eq!(
            c.token_ids[..=close],
            base[choice].token_ids[..=close],
            "{kind:?}: the server's tokens up to the call"
        );
        assert_eq!(c.tool_calls.len(), 1, "{kind:?}: {c:?}");
        let call = &c.tool_calls[0];
        assert_eq!(call.output_start, close + 1);
        let (expected, _, _) = tools.result_tokens(&tokenizer, &executor.run(&call.code).text).unwrap();
        let output = &c.token_ids[call.output_start..call.output_start + call.output_tokens];
        assert_eq!(output, &expected[..], "{kind:?}: the result's tokens");
        assert!(c.logprobs[call.output_start..call.output_start + call.output_tokens].iter().all(|&l| l == 0.0));
        assert!(c.token_ids.len() > call.output_start + call.output_tokens, "{kind:?}: it went on after the result");
        assert!(c.token_ids.len() <= params.max_new_tokens);
        assert_eq!(c.token_ids.len(), c.logprobs.len());
        assert!(server.generations() >= 2, "a second request carried the completion on");

        let prompt = &request.prompt_ids;
        let batch = CompletionBatch::new(&[(&prompt[..], &c.token_ids[..], true)], model.device()).unwrap();
        let scored = Vec::<f32>::try_from(batch.logprobs(&model, 1.0, false).0.flatten(0, -1)).unwrap();
        let mask = c.tool_output_mask();
        let diff = scored
            .iter()
            .zip(&c.logprobs)
            .zip(&mask)
            .filter(|(_, &tool)| !tool)
            .map(|((a, b), _)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-4, "{kind:?}: sampled and recomputed log-probs differ by {diff}");

        let again = generate_all(&mut backend, std::slice::from_ref(&request)).unwrap().remove(0);
        for (a, b) in again.iter().zip(&group) {
            assert_eq!(
                (&a.token_ids, a.tool_calls.len()),
                (&b.token_ids, b.tool_calls.len()),
                "{kind:?}: reproducible"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// NCCL weight transfer (rollout.sync_method = "nccl"), over the fake server's loopback NCCL.

fn nccl_backend(servers: &[&FakeServer]) -> RemoteBackend {
    let mut config = config(ServerKind::Vllm, servers);
    config.sync_method = SyncMethod::Nccl;
    RemoteBackend::with_broadcaster(config, params(), Box::new(Loopback::default())).unwrap()
}

/// Random weights of the fixture's shape, as the trainer would send them, and the check they
/// must pass on every server.
fn weights_in_memory(seed: u64, version: u64) -> (CausalLM, WeightsInMemory) {
    let model = CausalLM::init_random(&fixture(), LoadOptions::default(), seed).unwrap();
    let probe_ids: Vec<u32> = vec![7, 30, 31, 200, 9, 15, 2, 88];
    let probe_logprobs = model.sequence_logprobs(std::slice::from_ref(&probe_ids), 1.0).unwrap().remove(0);
    let weights = WeightsInMemory { version, tensors: model.hf_weights(), probe_ids, probe_logprobs };
    (model, weights)
}

#[test]
fn nccl_sync_follows_vllms_choreography_and_the_servers_serve_the_weights() {
    let (a, b) = (FakeServer::start(ServerKind::Vllm, &fixture()), FakeServer::start(ServerKind::Vllm, &fixture()));
    b.set_workers(2); // say tensor-parallel 2: ranks 1 and 2 of its group
    let mut backend = nccl_backend(&[&a, &b]);
    let (model, weights) = weights_in_memory(31, 4);
    let names: Vec<String> = weights.tensors.iter().map(|(n, _)| n.clone()).collect();
    let report = backend.weight_sync().unwrap().send_weights(weights).unwrap();
    assert!(report.max_abs_logprob_diff < 1e-5, "{report:?}");
    assert!(report.unreachable.is_empty(), "{report:?}");

    let sync = [
        "/pause?mode=wait",
        "/start_weight_update",
        "/update_weights",
        "/finish_weight_update",
        "/reset_prefix_cache",
        "/resume",
    ];
    for (server, workers) in [(&a, 1u64), (&b, 2)] {
        let mut expected = vec!["/get_world_size?include_dp=true", "/init_weight_transfer_engine"];
        expected.extend(sync);
        assert_eq!(server.control_calls(), expected);
        let calls = server.calls();
        let body = |path: &str| calls.iter().find(|(p, _)| p == path).unwrap().1.clone();
        let init = &body("/init_weight_transfer_engine")["init_info"];
        assert_eq!((init["rank_offset"].as_u64(), init["world_size"].as_u64()), (Some(1), Some(1 + workers)));
        assert_eq!(init["packed"], false);
        // 128 bytes in standard base64: 172 characters, padded.
        assert_eq!(init["nccl_unique_id_b64"].as_str().unwrap().len(), 172);
        let update = &body("/update_weights")["update_info"];
        let listed: Vec<&str> = update["names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
        assert_eq!(listed, names);
        assert!(update["dtype_names"].as_array().unwrap().iter().all(|d| d == "float32"));
        assert_eq!(update["packed"], false);
        assert_eq!(body("/finish_weight_update"), serde_json::json!({"weight_version": "4"}));
    }
    // The servers sample from the weights sent.
    let local = generate(&model, &requests(2), &params()).unwrap();
    let remote = generate_all(&mut backend, &requests(2)).unwrap();
    assert_same_groups(&remote, &local);

    // The next sync reuses the groups: no second rendezvous.
    let (_, weights) = weights_in_memory(32, 5);
    backend.weight_sync().unwrap().send_weights(weights).unwrap();
    for server in [&a, &b] {
        let calls = server.control_calls();
        assert_eq!(calls.iter().filter(|p| p.starts_with("/init_weight_transfer_engine")).count(), 1);
        assert_eq!(&calls[calls.len() - sync.len()..], &sync);
    }
    // A folder sync is the other method's.
    let error = backend.weight_sync().unwrap().load_weights(expected_check(&fixture())).unwrap_err().to_string();
    assert!(error.contains("sent, not loaded"), "{error}");
}

/// The list of tensors is what vLLM reads from a checkpoint: the names, dtypes and shapes the
/// disk sync writes into model.safetensors.
#[test]
fn the_nccl_manifest_lists_the_tensors_a_checkpoint_holds() {
    let dir = tempfile::tempdir().unwrap();
    let saved = other_weights(dir.path(), 41);
    let model = CausalLM::load(&saved, LoadOptions::default()).unwrap();
    let manifest = aha_rollout::remote::nccl::manifest(&model.hf_weights()).unwrap();
    let bytes = std::fs::read(saved.join("model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let mut on_disk: Vec<(String, String, Vec<i64>)> = header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, _)| *name != "__metadata__")
        .map(|(name, t)| {
            let dtype = match t["dtype"].as_str().unwrap() {
                "F32" => "float32",
                "BF16" => "bfloat16",
                "F16" => "float16",
                other => panic!("{other}"),
            };
            let shape = t["shape"].as_array().unwrap().iter().map(|d| d.as_i64().unwrap()).collect();
            (name.clone(), dtype.to_string(), shape)
        })
        .collect();
    on_disk.sort();
    let listed: Vec<(String, String, Vec<i64>)> =
        manifest.iter().map(|t| (t.name.clone(), t.dtype.to_string(), t.shape.clone())).collect();
    assert_eq!(listed, on_disk, "sorted by name, as sent");
}

#[test]
fn a_failed_nccl_step_stops_the_sync_and_leaves_no_server_paused() {
    let (a, b) = (FakeServer::start(ServerKind::Vllm, &fixture()), FakeServer::start(ServerKind::Vllm, &fixture()));
    let mut backend = nccl_backend(&[&a, &b]);

    // The rendezvous refused: the trainer stops waiting for the group, and says why.
    b.faults().fail_next("/init_weight_transfer_engine");
    let (_, weights) = weights_in_memory(51, 1);
    let error = backend.weight_sync().unwrap().send_weights(weights).unwrap_err().to_string();
    assert!(error.contains(&b.url) && error.contains("injected failure of /init_weight_transfer_engine"), "{error}");
    assert!(!error.contains('\n'), "{error}");

    // A transfer that fails on one server: the error names it, every server is resumed, and the
    // groups are dropped, so the next sync opens new ones.
    b.faults().fail_next("/update_weights");
    let (_, weights) = weights_in_memory(52, 2);
    let error = backend.weight_sync().unwrap().send_weights(weights).unwrap_err().to_string();
    assert!(error.contains(&b.url) && error.contains("/update_weights"), "{error}");
    for server in [&a, &b] {
        let calls = server.control_calls();
        assert_eq!(calls.last().map(String::as_str), Some("/resume"), "{calls:?}");
        assert!(!calls.iter().any(|p| p == "/finish_weight_update"), "an update that failed is not finished");
    }
    let joins = |s: &FakeServer| s.control_calls().iter().filter(|p| *p == "/init_weight_transfer_engine").count();
    let before = (joins(&a), joins(&b));
    let (_, weights) = weights_in_memory(53, 3);
    backend.weight_sync().unwrap().send_weights(weights).unwrap();
    assert_eq!((joins(&a), joins(&b)), (before.0 + 1, before.1 + 1));
}

#[test]
fn a_server_that_ignores_an_nccl_update_is_caught_by_the_check() {
    let (a, b) = (FakeServer::start(ServerKind::Vllm, &fixture()), FakeServer::start(ServerKind::Vllm, &fixture()));
    let mut backend = nccl_backend(&[&a, &b]);
    let (_, weights) = weights_in_memory(61, 1);
    backend.weight_sync().unwrap().send_weights(weights).unwrap();
    b.faults().ignore_reloads.store(true, std::sync::atomic::Ordering::SeqCst);
    let (_, weights) = weights_in_memory(62, 2);
    let error = backend.weight_sync().unwrap().send_weights(weights).unwrap_err().to_string();
    assert!(error.contains(&b.url) && error.contains("does not serve the weights"), "{error}");
    assert!(error.contains("version 2 sent over NCCL"), "{error}");
}

#[test]
fn nccl_sync_needs_vllm_and_the_feature() {
    let server = FakeServer::start(ServerKind::Sglang, &fixture());
    let mut config = config(ServerKind::Sglang, &[&server]);
    config.sync_method = SyncMethod::Nccl;
    let error = RemoteBackend::with_broadcaster(config.clone(), params(), Box::new(Loopback::default()))
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("needs backend = \"vllm\""), "{error}");
    config.kind = ServerKind::Vllm;
    match RemoteBackend::new(config, params()) {
        Ok(_) => assert!(aha_rollout::remote::nccl::BUILT_WITH_NCCL),
        Err(e) => assert!(e.to_string().contains("--features nccl"), "{e}"),
    }
}
