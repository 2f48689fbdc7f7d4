//! Tool calls in the middle of generation, on the tiny fixture checkpoint and the WASM sandbox:
//! hostile calls are contained; a sequence that pauses for a call and resumes gives the same
//! tokens whatever else is in the batch, and its log-probs after the result are the model's own
//! given the whole context (its cache was kept and extended correctly); `max_calls` and the
//! result's truncation hold.
//!
//! A randomly initialised model does not write ```` ```python ```` on its own, so the engine
//! tests take the call delimiters from what the model does write: two tokens of a completion
//! generated without tools become the `open` and `close` of a call format, so that, with tools on,
//! the same completion (same seed, same tokens up to there) makes a call at a known token. Its
//! "code" is model text, so it usually fails (a `SyntaxError` is its result): the run goes on.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aha_model::{CausalLM, CompletionBatch, LoadOptions, Tokenizer};
use aha_rollout::{
    generate_all, CallFormat, Completion, Engine, EngineConfig, GenerationRequest, PythonToolConfig, SamplingParams,
    ShardedEngine, ToolExecutor,
};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models/qwen2")
}

fn load() -> (CausalLM, Tokenizer) {
    let model = CausalLM::load(&fixture(), LoadOptions::default()).unwrap();
    let tokenizer = Tokenizer::from_dir(&fixture(), model.config().vocab_size).unwrap();
    (model, tokenizer)
}

fn tool_config(calls: Vec<CallFormat>, max_calls: usize) -> PythonToolConfig {
    PythonToolConfig {
        enable: true,
        timeout_ms: 1_000,
        memory_mb: 64,
        max_output_bytes: 4096,
        workers: 2,
        max_output_tokens: 8,
        max_calls,
        calls,
        ..Default::default()
    }
}

#[test]
fn hostile_calls_become_observations() {
    let executor = ToolExecutor::new(tool_config(PythonToolConfig::default().calls, 4)).unwrap();
    let path = std::env::var("PATH").unwrap_or_default();
    let cases: [(&str, &[&str], &str); 8] = [
        ("print(6 * 7)", &["ok"], "42"),
        ("while True:\n    pass", &["timeout"], "TimeoutError"),
        ("import time\ntime.sleep(600)", &["timeout"], "TimeoutError"),
        ("x = bytearray(1 << 30)", &["memory_limit", "exit"], "MemoryError"),
        ("print(open('/etc/passwd').read())", &["exit"], "Error"),
        ("import socket\nsocket.create_connection(('example.com', 80))", &["exit"], "Traceback"),
        ("print('x' * 10**7)", &["output_limit", "exit", "memory_limit"], "x"),
        ("raise SystemExit(3)", &["exit"], ""),
    ];
    for (code, statuses, expected) in cases {
        let start = Instant::now();
        let result = executor.run(code);
        let seconds = start.elapsed().as_secs_f64();
        assert!(statuses.contains(&result.status.as_str()), "{code}: {:?} {:?}", result.status, result.text);
        assert!(result.text.contains(expected), "{code}: {:?}", result.text);
        assert!(result.text.len() <= 4096 + 2100, "{code}: {} bytes of output", result.text.len());
        assert!(seconds < 10.0, "{code}: took {seconds} s");
    }
    // The environment is empty: nothing of the host's shows.
    let env = executor.run("import os\nprint(dict(os.environ))");
    assert!(env.status.as_str() == "ok", "{env:?}");
    assert!(path.is_empty() || !env.text.contains(&path), "the host's PATH leaked: {}", env.text);
}

#[test]
fn finding_calls() {
    let config = PythonToolConfig::default();
    assert_eq!(config.find_call("Let me compute.\n```python\nprint(2**10)\n```"), Some("print(2**10)"));
    assert_eq!(config.find_call("x <python>print(1)</python> ```python\nprint(2)\n```"), Some("print(1)"));
    assert_eq!(config.find_call("```python\nprint(2**10)\n``"), None);
    assert_eq!(config.find_call("no code here ```"), None);
}

fn params() -> SamplingParams {
    SamplingParams { temperature: 1.0, max_new_tokens: 80, stop_token_ids: vec![], ..Default::default() }
}

fn requests(tokenizer: &Tokenizer) -> Vec<GenerationRequest> {
    ["12 + 35 =", "The cat sat on the", "Once upon a time, in a land far", "7 * 8 = 56. 9 * 9 ="]
        .iter()
        .enumerate()
        .map(|(i, text)| GenerationRequest { prompt_ids: tokenizer.encode(text).unwrap(), n: 3, seed: 300 + i as u64 })
        .collect()
}

/// A call format made of two tokens of `tokens` (at `open` and `close`, with `from` the first
/// token scanned), such that, with `formats` plus this one, the first call completes at `close`.
fn format_at(
    tokenizer: &Tokenizer,
    tokens: &[u32],
    from: usize,
    formats: &[CallFormat],
) -> Option<(CallFormat, usize)> {
    let text = |ids: &[u32]| tokenizer.decode(ids, false).unwrap();
    for open in from + 1..tokens.len().min(from + 8) {
        for close in open + 2..tokens.len().min(open + 8) {
            let format = CallFormat { open: text(&tokens[open..=open]), close: text(&tokens[close..=close]) };
            if [&format.open, &format.close].iter().any(|s| s.trim().is_empty() || s.contains('\u{FFFD}')) {
                continue;
            }
            let mut calls = formats.to_vec();
            calls.push(format.clone());
            let config = tool_config(calls, 4);
            let completes_here = config.find_call(&text(&tokens[from..=close])).is_some()
                && (from + 1..=close).all(|end| config.find_call(&text(&tokens[from..end])).is_none());
            if completes_here {
                return Some((format, close));
            }
        }
    }
    None
}

fn engine_with_tools<'m>(
    model: &'m CausalLM,
    tokenizer: &'m Tokenizer,
    config: PythonToolConfig,
    engine: EngineConfig,
) -> Engine<'m> {
    Engine::new(model, params(), engine).unwrap().with_tools(tokenizer, ToolExecutor::new(config).unwrap())
}

fn assert_same(a: &[Completion], b: &[Completion], what: &str) {
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.token_ids, y.token_ids, "{what}");
        assert_eq!(x.tool_calls.len(), y.tool_calls.len(), "{what}");
        let diff = x.logprobs.iter().zip(&y.logprobs).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max);
        assert!(diff < 1e-4, "{what}: log-probs differ by {diff}");
    }
}

#[test]
fn a_paused_sequence_resumes_as_if_alone() {
    let (model, tokenizer) = load();
    let requests = requests(&tokenizer);
    let base = generate_all(&mut Engine::new(&model, params(), EngineConfig::default()).unwrap(), &requests).unwrap();
    // A completion of request 0 and a call format that makes it call at a known token.
    let (sample, (format, close)) = base[0]
        .iter()
        .enumerate()
        .find_map(|(i, c)| format_at(&tokenizer, &c.token_ids, 0, &[]).map(|f| (i, f)))
        .expect("some completion has two usable tokens");
    let config = tool_config(vec![format.clone()], 1);

    // Alone, one request at a time.
    let alone: Vec<Vec<Completion>> = requests
        .iter()
        .map(|r| {
            let mut engine = engine_with_tools(&model, &tokenizer, config.clone(), EngineConfig::default());
            generate_all(&mut engine, std::slice::from_ref(r)).unwrap().remove(0)
        })
        .collect();
    let c = &alone[0][sample];
    assert_eq!(c.token_ids[..=close], base[0][sample].token_ids[..=close], "the same tokens up to the call");
    assert_eq!(c.tool_calls.len(), 1, "{c:?}");
    let call = &c.tool_calls[0];
    assert_eq!(call.output_start, close + 1);
    assert!(call.output_tokens > 0);
    let mask = c.tool_output_mask();
    for (j, (&lp, &tool)) in c.logprobs.iter().zip(&mask).enumerate() {
        assert_eq!(tool, (close + 1..close + 1 + call.output_tokens).contains(&j));
        if tool {
            assert_eq!(lp, 0.0, "a result's token has no sampled log-prob");
        }
    }
    assert!(c.token_ids.len() > close + 1 + call.output_tokens, "the sequence went on after the result: {c:?}");

    // Truncation: the result shown is at most max_output_tokens, with the marker past it.
    let executor = ToolExecutor::new(config.clone()).unwrap();
    let full = executor.run(&call.code).text;
    let body = tokenizer.encode(&full).unwrap().len();
    assert_eq!(call.truncated, body > config.max_output_tokens, "{full:?}");
    let marker = if call.truncated { tokenizer.encode(&config.truncation_marker).unwrap().len() } else { 0 };
    let framing =
        tokenizer.encode(&config.output_open).unwrap().len() + tokenizer.encode(&config.output_close).unwrap().len();
    assert_eq!(call.output_tokens, framing + body.min(config.max_output_tokens) + marker);

    // The log-probs the sampler gave the model's tokens, after the result too, are the model's
    // own for the whole sequence: the resumed cache holds exactly the context.
    let prompt = &requests[0].prompt_ids;
    let batch = CompletionBatch::new(&[(&prompt[..], &c.token_ids[..], true)], model.device()).unwrap();
    let scored = Vec::<f32>::try_from(batch.logprobs(&model, 1.0, false).0.flatten(0, -1)).unwrap();
    let diff = scored.iter().zip(&c.logprobs).zip(&mask).filter(|(_, &t)| !t).map(|((p, q), _)| (p - q).abs());
    let diff = diff.fold(0.0, f32::max);
    assert!(diff < 1e-4, "sampled and recomputed log-probs differ by {diff}");

    // Together in one batch (at most 5 sequences: requests join while others are paused or
    // decoding), and on two shards: the same completions.
    let mut together =
        engine_with_tools(&model, &tokenizer, config.clone(), EngineConfig { max_sequences: 5, ..Default::default() });
    let start = Instant::now();
    let got = generate_all(&mut together, &requests).unwrap();
    let with_tools = start.elapsed().as_secs_f64();
    let mut plain = Engine::new(&model, params(), EngineConfig { max_sequences: 5, ..Default::default() }).unwrap();
    let start = Instant::now();
    let without = generate_all(&mut plain, &requests).unwrap();
    let without_tools = start.elapsed().as_secs_f64();
    let tokens = |g: &[Vec<Completion>]| g.iter().flatten().map(|c| c.token_ids.len()).sum::<usize>() as f64;
    eprintln!(
        "rollout throughput, max_sequences 5: tools on {:.0} tokens/s ({} calls, {:.3} s in calls), off {:.0} tokens/s",
        tokens(&got) / with_tools,
        together.stats().tool_calls,
        together.stats().tool_seconds,
        tokens(&without) / without_tools
    );
    for (i, (a, b)) in alone.iter().zip(&got).enumerate() {
        assert_same(a, b, &format!("request {i} together"));
    }
    let stats = together.stats();
    assert!(stats.tool_calls >= 1 && stats.tool_seconds > 0.0, "{stats:?}");
    let mut sharded = ShardedEngine::with_shards(&model, params(), EngineConfig::default(), 2)
        .unwrap()
        .with_tools(&tokenizer, ToolExecutor::new(config.clone()).unwrap());
    let got = generate_all(&mut sharded, &requests).unwrap();
    for (i, (a, b)) in alone.iter().zip(&got).enumerate() {
        assert_same(a, b, &format!("request {i} on 2 shards"));
    }
    for c in alone.iter().flatten() {
        assert!(c.tool_calls.len() <= 1, "max_calls = 1");
    }

    // max_calls: a second format that the continuation completes after the result. With
    // max_calls = 1 it is left as text (the same completion); with 2 it is a second call there.
    let after = call.output_start + call.output_tokens;
    let Some((second, close2)) = format_at(&tokenizer, &c.token_ids, after, std::slice::from_ref(&format)) else {
        eprintln!("no second call format in {:?}; max_calls is only checked as an upper bound", c.token_ids);
        return;
    };
    // The first call must still be the first one found with both formats.
    let two = vec![format.clone(), second];
    let text = tokenizer.decode(&c.token_ids[..=close], false).unwrap();
    if tool_config(two.clone(), 2).find_call(&text) != tool_config(vec![format], 2).find_call(&text)
        || (1..=close).any(|end| {
            tool_config(two.clone(), 2).find_call(&tokenizer.decode(&c.token_ids[..end], false).unwrap()).is_some()
        })
    {
        eprintln!("the second format would change the first call; max_calls is only checked as an upper bound");
        return;
    }
    let run = |max_calls: usize| {
        let mut engine =
            engine_with_tools(&model, &tokenizer, tool_config(two.clone(), max_calls), EngineConfig::default());
        generate_all(&mut engine, &requests[..1]).unwrap().remove(0).remove(sample)
    };
    let once = run(1);
    assert_eq!(once.token_ids, c.token_ids, "max_calls = 1 leaves the second block as text");
    assert_eq!(once.tool_calls.len(), 1);
    let twice = run(2);
    assert_eq!(twice.token_ids[..=close2], c.token_ids[..=close2]);
    assert_eq!(twice.tool_calls.len(), 2, "{twice:?}");
    assert_eq!(twice.tool_calls[1].output_start, close2 + 1);
}

#[test]
fn results_that_do_not_fit_end_the_completion() {
    let (model, tokenizer) = load();
    let requests = requests(&tokenizer);
    let base = generate_all(&mut Engine::new(&model, params(), EngineConfig::default()).unwrap(), &requests).unwrap();
    let (sample, (format, close)) = base[1]
        .iter()
        .enumerate()
        .find_map(|(i, c)| format_at(&tokenizer, &c.token_ids, 0, &[]).map(|f| (i, f)))
        .expect("some completion has two usable tokens");
    // Room for the call and two tokens of its result: the completion ends there, at the limit.
    let max_new_tokens = close + 3;
    let params = SamplingParams { max_new_tokens, ..params() };
    let mut engine = Engine::new(&model, params, EngineConfig::default())
        .unwrap()
        .with_tools(&tokenizer, ToolExecutor::new(tool_config(vec![format], 1)).unwrap());
    let start = Instant::now();
    let got = generate_all(&mut engine, &requests[1..2]).unwrap().remove(0);
    assert!(start.elapsed() < Duration::from_secs(60));
    let c = &got[sample];
    assert_eq!(c.token_ids.len(), max_new_tokens);
    assert_eq!(c.tool_calls.len(), 1);
    assert_eq!(c.tool_calls[0].output_tokens, 2);
    assert_eq!(c.finish_reason, aha_rollout::FinishReason::Length);
}
