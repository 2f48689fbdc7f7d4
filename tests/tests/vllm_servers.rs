//! `rollout.backend = "vllm"` against two real vLLM servers (the CPU build): run by
//! scripts/test_vllm.sh, which installs vLLM, starts the servers on the model
//! tests/fixtures/models/vllm-qwen2 and sets AHA_VLLM_SERVERS (comma-separated URLs) and
//! AHA_VLLM_PORTS. Ignored by a plain `cargo test`: they need those servers (about 3 GB of memory
//! and two minutes to start each).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aha_model::{CausalLM, LoadOptions, SaveOptions, Tokenizer};
use aha_rollout::{
    generate, generate_all, Backend, GenerationRequest, PythonToolConfig, RemoteBackend, RemoteConfig, SamplingParams,
    ServerKind, ToolExecutor, WeightsOnDisk,
};
use aha_tests::real_vllm::{self, model_dir};
use aha_tests::tool_calls::call_format_in;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn servers() -> Vec<String> {
    real_vllm::servers("scripts/test_vllm.sh")
}

fn ports() -> Vec<String> {
    std::env::var("AHA_VLLM_PORTS").expect("AHA_VLLM_PORTS").split(',').map(str::to_string).collect()
}

fn requests(count: usize, n: usize) -> Vec<GenerationRequest> {
    (0..count)
        .map(|i| GenerationRequest {
            prompt_ids: vec![275, 301, 277 + i as u32, 305, 277, 220, 299],
            n,
            seed: 7 + i as u64,
        })
        .collect()
}

fn params(temperature: f64) -> SamplingParams {
    SamplingParams { temperature, max_new_tokens: 24, stop_token_ids: vec![390], ..Default::default() }
}

/// The check sequence's expected log-probs on the weights in `dir`.
fn weights(dir: &Path) -> WeightsOnDisk {
    let model = CausalLM::load(dir, LoadOptions::default()).unwrap();
    let (probe_ids, probe_logprobs) = real_vllm::probe(&model);
    WeightsOnDisk { dir: dir.to_path_buf(), probe_ids, probe_logprobs }
}

fn other_weights(dir: &Path, seed: u64) -> PathBuf {
    let model = CausalLM::init_random(&model_dir(), LoadOptions::default(), seed).unwrap();
    let out = dir.join(format!("other-{seed}"));
    std::fs::create_dir_all(&out).unwrap();
    model.save(&out, SaveOptions::default()).unwrap();
    out
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Greedy tokens equal aha's engine's on the same weights and their log-probs agree; a sampled
/// token's log-prob (the behaviour policy's) agrees with the trainer's recomputation. Both before
/// and after the servers load other weights.
#[test]
#[ignore = "needs vLLM servers: scripts/test_vllm.sh"]
fn servers_generate_as_the_engine_before_and_after_a_reload() {
    let tmp = tempfile::tempdir().unwrap();
    let mut backend = RemoteBackend::new(RemoteConfig::new(ServerKind::Vllm, servers()), params(0.0)).unwrap();
    for dir in [model_dir(), other_weights(tmp.path(), 3)] {
        let report = backend.weight_sync().unwrap().load_weights(weights(&dir)).unwrap();
        eprintln!(
            "{}: load {:.3} s, check {:.3} s, max |diff| {:.2e}",
            dir.display(),
            report.load_seconds,
            report.check_seconds,
            report.max_abs_logprob_diff
        );
        let model = CausalLM::load(&dir, LoadOptions::default()).unwrap();
        let reqs = requests(6, 1);
        let remote = generate_all(&mut backend, &reqs).unwrap();
        let local = generate(&model, &reqs, &params(0.0)).unwrap();
        for (r, l) in remote.iter().flatten().zip(local.iter().flatten()) {
            assert_eq!(r.token_ids, l.token_ids, "greedy tokens");
            assert!(max_diff(&r.logprobs, &l.logprobs) < 1e-4, "{:?} vs {:?}", r.logprobs, l.logprobs);
        }
    }
    // Sampled at T = 0.7 (the servers run with --logprobs-mode processed_logprobs).
    let mut sampling = RemoteBackend::new(RemoteConfig::new(ServerKind::Vllm, servers()), params(0.7)).unwrap();
    let dir = other_weights(tmp.path(), 3);
    let model = CausalLM::load(&dir, LoadOptions::default()).unwrap();
    let reqs = requests(4, 4);
    let mut worst = 0f32;
    for (request, group) in reqs.iter().zip(generate_all(&mut sampling, &reqs).unwrap()) {
        for c in group {
            let sequence: Vec<u32> = request.prompt_ids.iter().chain(&c.token_ids).copied().collect();
            let all = model.sequence_logprobs(std::slice::from_ref(&sequence), 0.7).unwrap().remove(0);
            let trainer = &all[request.prompt_ids.len() - 1..];
            worst = worst.max(max_diff(&c.logprobs, trainer));
        }
    }
    eprintln!("sampled at T=0.7: max |server - trainer| log-prob {worst:.2e}");
    assert!(worst < 1e-4, "{worst}");
}

/// A server that serves other weights than the ones it was given is caught by the check.
#[test]
#[ignore = "needs vLLM servers: scripts/test_vllm.sh"]
fn a_server_on_other_weights_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let urls = servers();
    let mut backend = RemoteBackend::new(RemoteConfig::new(ServerKind::Vllm, urls.clone()), params(0.0)).unwrap();
    let given = other_weights(tmp.path(), 5);
    backend.weight_sync().unwrap().load_weights(weights(&given)).unwrap();
    backend.weight_sync().unwrap().check_weights().unwrap();
    // Behind aha's back, the second server loads something else.
    let other = other_weights(tmp.path(), 6);
    let body = format!(
        r#"{{"method": "reload_weights", "kwargs": {{"weights_path": "{}", "is_checkpoint_format": true}}}}"#,
        other.display()
    );
    for (path, body) in [("/pause", None), ("/collective_rpc", Some(body)), ("/resume", None)] {
        let mut curl = Command::new("curl");
        curl.args(["-sf", "-X", "POST", &format!("{}{path}", urls[1])]);
        if let Some(body) = body {
            curl.args(["-H", "Content-Type: application/json", "-d", &body]);
        }
        assert!(curl.status().unwrap().success(), "{path}");
    }
    let error = backend.weight_sync().unwrap().check_weights().unwrap_err().to_string();
    assert!(error.contains(&urls[1]) && error.contains("does not serve the weights"), "{error}");
    // And the next sync puts it right.
    backend.weight_sync().unwrap().load_weights(weights(&given)).unwrap();
}

fn train_config(out: &Path, sync_dir: &Path, steps: u64) -> aha_grpo::TrainConfig {
    let text = real_vllm::train_toml(&servers(), out, steps);
    let sync_dir = format!("rollout.sync_dir={:?}", sync_dir.display().to_string());
    aha_grpo::TrainConfig::from_toml(&text, "vllm.toml", &[sync_dir]).unwrap()
}

/// After every sync of a short `aha train`, each server's greedy tokens equal aha's engine's on
/// the weights it was handed.
#[test]
#[ignore = "needs vLLM servers: scripts/test_vllm.sh"]
fn training_on_two_servers_keeps_them_on_the_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let sync_dir = tmp.path().join("sync");
    let started = Instant::now();
    let mut lines = Vec::new();
    aha_grpo::train(train_config(&tmp.path().join("run"), &sync_dir, 3), false, |m| {
        lines.push(m.clone());
        // The folder the servers were handed before this step, and what they generate from it.
        let dir = std::fs::read_dir(&sync_dir).unwrap().flatten().map(|e| e.path()).max().unwrap();
        let model = CausalLM::load(&dir, LoadOptions::default()).unwrap();
        let reqs = requests(4, 1);
        for url in servers() {
            let mut one = RemoteBackend::new(RemoteConfig::new(ServerKind::Vllm, vec![url]), params(0.0)).unwrap();
            let remote = generate_all(&mut one, &reqs).unwrap();
            let local = generate(&model, &reqs, &params(0.0)).unwrap();
            for (r, l) in remote.iter().flatten().zip(local.iter().flatten()) {
                assert_eq!(r.token_ids, l.token_ids, "step {}: greedy tokens of {}", m["step"], dir.display());
            }
        }
    })
    .unwrap();
    eprintln!("3 steps in {:.1} s", started.elapsed().as_secs_f64());
    for line in &lines {
        let f = |key: &str| line[key].as_f64().unwrap_or(f64::NAN);
        eprintln!(
            "step {}: sync write {:.3} s load {:.3} s check {:.3} s, max |diff| {:.2e}; sampler |diff| {:.2e}; step {:.2} s",
            line["step"],
            f("sync_write_s"),
            f("sync_load_s"),
            f("sync_check_s"),
            f("sync_max_abs_logprob_diff"),
            f("sampling_logprob_diff"),
            f("step_s")
        );
        assert!(line["sync_max_abs_logprob_diff"].as_f64().unwrap() < 1e-4, "{line}");
        assert!(line["sampling_logprob_diff"].as_f64().unwrap() < 1e-4, "{line}");
    }
}

/// A server killed in the middle of a run and started again loses no group: its groups go to the
/// other one, and once back it loads the current weights before it serves again.
#[test]
#[ignore = "needs vLLM servers: scripts/test_vllm.sh"]
fn a_server_killed_mid_run_and_restarted_loses_no_group() {
    let tmp = tempfile::tempdir().unwrap();
    let sync_dir = tmp.path().join("sync");
    let port = ports()[1].clone();
    let script = root().join("scripts/vllm_servers.sh");
    let mut restart: Option<std::thread::JoinHandle<()>> = None;
    let mut lines = Vec::new();
    aha_grpo::train(train_config(&tmp.path().join("run"), &sync_dir, 6), false, |m| {
        lines.push(m.clone());
        match m["step"].as_u64().unwrap() {
            1 => {
                // Killed (SIGKILL, no goodbye) a moment into step 2's generation, then started again.
                let (script, port) = (script.clone(), port.clone());
                restart = Some(std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(300));
                    let pid_file = root().join(format!("runs/vllm-servers/{port}.pid"));
                    let pid = std::fs::read_to_string(pid_file).unwrap().trim().to_string();
                    Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status().unwrap();
                    let gone = Instant::now();
                    while Command::new("kill").args(["-0", &pid]).status().unwrap().success() {
                        assert!(gone.elapsed() < Duration::from_secs(30), "pid {pid} outlived SIGKILL");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    let model = model_dir();
                    let started =
                        Command::new(&script).args(["start", model.to_str().unwrap(), &port]).status().unwrap();
                    assert!(started.success(), "restarting the server");
                }));
            }
            // Wait until it is back, so that the last steps run on both again.
            4 => restart.take().unwrap().join().unwrap(),
            _ => {}
        }
    })
    .unwrap();
    assert_eq!(lines.len(), 6);
    assert!(lines.iter().all(|l| l["groups"] == 4), "every step trained on all its groups");
    // The restarted server serves the policy: the last sync checked it.
    assert!(lines[5]["sync_max_abs_logprob_diff"].as_f64().unwrap() < 1e-4);
    assert_eq!(lines[5]["sync_unreachable_servers"], 0);
}

/// Tool calls on real servers: vLLM stops at the call's close (a stop string kept in the output,
/// its token ids up to the token that completed it), aha runs the call and the completion goes on
/// in a new request that carries the call and its result: the tokens up to the call are the ones
/// the server samples without tools, the result's are the sandbox's, and every token sampled
/// after it has the trainer's log-prob of the whole context.
#[test]
#[ignore = "needs vLLM servers: scripts/test_vllm.sh"]
fn tool_calls_go_on_in_new_requests() {
    let model = CausalLM::load(&model_dir(), LoadOptions::default()).unwrap();
    let tokenizer = Tokenizer::from_dir(&model_dir(), model.config().vocab_size).unwrap();
    // Room for the result (its delimiters and the truncation marker are some 35 tokens here).
    let params = SamplingParams { max_new_tokens: 80, ..params(1.0) };
    let mut plain = RemoteBackend::new(RemoteConfig::new(ServerKind::Vllm, servers()), params.clone()).unwrap();
    plain.weight_sync().unwrap().load_weights(weights(&model_dir())).unwrap();
    let request = GenerationRequest { prompt_ids: tokenizer.encode("Once upon a time").unwrap(), n: 4, seed: 11 };
    let base = generate_all(&mut plain, std::slice::from_ref(&request)).unwrap().remove(0);
    let (choice, (format, close)) = base
        .iter()
        .enumerate()
        .find_map(|(i, c)| call_format_in(&tokenizer, &c.token_ids).map(|f| (i, f)))
        .expect("some completion has two usable tokens");
    eprintln!("call format {format:?}, closed at token {close} of completion {choice}");
    let tools = PythonToolConfig {
        enable: true,
        max_output_tokens: 8,
        max_calls: 1,
        calls: vec![format],
        ..Default::default()
    };
    let executor = ToolExecutor::new(tools.clone()).unwrap();
    let backend = RemoteBackend::new(RemoteConfig::new(ServerKind::Vllm, servers()), params.clone()).unwrap();
    let mut backend = backend.with_tools(tokenizer.clone(), executor.clone());
    let c = generate_all(&mut backend, std::slice::from_ref(&request)).unwrap().remove(0).remove(choice);
    assert_eq!(c.token_ids[..=close], base[choice].token_ids[..=close], "the server's tokens up to the call");
    assert_eq!(c.tool_calls.len(), 1, "{c:?}");
    let call = &c.tool_calls[0];
    assert_eq!(call.output_start, close + 1);
    let (expected, _, _) = tools.result_tokens(&tokenizer, &executor.run(&call.code).text).unwrap();
    assert_eq!(c.token_ids[call.output_start..call.output_start + call.output_tokens], expected[..]);
    let after = call.output_start + call.output_tokens;
    assert!(c.token_ids.len() > after, "it went on after the result: {c:?}");

    let sequence: Vec<u32> = request.prompt_ids.iter().chain(&c.token_ids).copied().collect();
    let all = model.sequence_logprobs(std::slice::from_ref(&sequence), 1.0).unwrap().remove(0);
    let trainer = &all[request.prompt_ids.len() - 1..];
    let before_call = max_diff(&c.logprobs[..call.output_start], &trainer[..call.output_start]);
    let after_call = max_diff(&c.logprobs[after..], &trainer[after..]);
    eprintln!(
        "tool call {:?} -> {:?} ({}); |server - trainer| log-prob before the call {before_call:.2e}, after {after_call:.2e}",
        call.code, call.output, call.status
    );
    assert!(before_call < 1e-4 && after_call < 1e-4, "{before_call} {after_call}");
}
