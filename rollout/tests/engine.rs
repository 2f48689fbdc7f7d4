//! The engine's scheduling must not change what is generated: continuous batching, memory-limited
//! admission, stop strings, and the rollout pool's scoring, on the tiny fixture checkpoint.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aha_model::{CausalLM, KvCache, LoadOptions, Tokenizer};
use aha_rewards::{Registry, RewardConfig};
use aha_rollout::{
    generate, generate_all, Backend, Completion, Engine, EngineConfig, FinishReason, GenerationRequest, PoolConfig,
    RolloutPool, RolloutPrompt, SamplingParams, ShardedEngine,
};
use serde_json::json;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models/qwen2")
}

fn load() -> (CausalLM, Tokenizer) {
    let model = CausalLM::load(&fixture(), LoadOptions::default()).unwrap();
    let tokenizer = Tokenizer::from_dir(&fixture(), model.config().vocab_size).unwrap();
    (model, tokenizer)
}

/// Sampling whose completions end at many different lengths: a quarter of the vocabulary stops.
fn ragged_params() -> SamplingParams {
    SamplingParams { temperature: 1.0, max_new_tokens: 24, stop_token_ids: (0..100).collect(), ..Default::default() }
}

fn requests(tokenizer: &Tokenizer) -> Vec<GenerationRequest> {
    ["12 + 35 =", "The cat sat on the", "a", "Once upon a time, in a land far", "7 * 8 = 56. 9 * 9 ="]
        .iter()
        .enumerate()
        .map(|(i, text)| GenerationRequest {
            prompt_ids: tokenizer.encode(text).unwrap(),
            n: 2 + i % 2,
            seed: 100 + i as u64,
        })
        .collect()
}

/// The same completions from two schedules: the same tokens, log-probs equal up to rounding.
///
/// Where the CPU's BLAS gives a row the same products whatever the number of rows (MKL's AVX2
/// and AVX-512 paths), the tokens are identical. Where it does not (MKL's SSE4.2 path,
/// `MKL_ENABLE_INSTRUCTIONS=SSE4_2`), rounding may move a draw that lands within ~1e-6 of a
/// boundary of the cumulative distribution to the token on the other side of it: with no
/// top-k/p filter, the next token id. From there the two completions are different sequences, so the comparison
/// stops. Any real difference (another row's logits, another random stream) changes tokens
/// that are not neighbours, and in more than one completion of a group.
fn assert_same(a: &[Completion], b: &[Completion], what: &str) {
    assert_eq!(a.len(), b.len());
    let mut splits = 0;
    for (x, y) in a.iter().zip(b) {
        let common = x.token_ids.iter().zip(&y.token_ids).take_while(|(p, q)| p == q).count();
        let split = common < x.token_ids.len().max(y.token_ids.len());
        if split {
            let (p, q) = (x.token_ids.get(common), y.token_ids.get(common));
            let neighbours = matches!((p, q), (Some(&p), Some(&q)) if p.abs_diff(q) == 1);
            assert!(neighbours, "{what}: {:?} and {:?} differ at token {common}", x.token_ids, y.token_ids);
            splits += 1;
            assert!(splits <= 1, "{what}: more than one completion of the group took another token");
        } else {
            assert_eq!(x.finish_reason, y.finish_reason, "{what}");
        }
        let compared = if split { common } else { x.logprobs.len() };
        let diff = x.logprobs[..compared].iter().zip(&y.logprobs).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max);
        assert!(diff < 1e-4, "{what}: log-probs differ by {diff}");
    }
}

#[test]
fn continuous_batching_gives_what_each_request_gives_alone() {
    let (model, tokenizer) = load();
    let params = ragged_params();
    let requests = requests(&tokenizer);
    let alone: Vec<Vec<Completion>> =
        requests.iter().map(|r| generate(&model, std::slice::from_ref(r), &params).unwrap().remove(0)).collect();
    let lengths: Vec<usize> = alone.iter().flatten().map(|c| c.token_ids.len()).collect();
    assert!(lengths.iter().min() < lengths.iter().max(), "the workload should be ragged: {lengths:?}");

    // At most 5 sequences at a time: requests wait, and join the batch while others decode.
    let config = EngineConfig { max_sequences: 5, ..Default::default() };
    let mut engine = Engine::new(&model, params.clone(), config).unwrap();
    let together = generate_all(&mut engine, &requests).unwrap();
    for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
        assert_same(a, b, &format!("request {i}"));
    }
    let stats = engine.stats();
    assert!(stats.prefills >= 3, "requests should have joined a running batch: {stats:?}");
    assert_eq!(stats.completion_tokens, lengths.iter().sum::<usize>() as u64);
    // Fewer decode steps than running the requests one after another.
    let sequential: u64 = alone.iter().map(|g| g.iter().map(|c| c.token_ids.len()).max().unwrap() as u64 - 1).sum();
    assert!(stats.decode_steps < sequential, "{} decode steps, {sequential} one by one", stats.decode_steps);
}

/// Shards run side by side (each stopping when another has finished requests) and give what one
/// engine gives: small groups, and groups of 8 whose steps one engine splits among threads.
#[test]
fn shards_give_what_one_engine_gives() {
    let (model, tokenizer) = load();
    let params = ragged_params();
    let small = requests(&tokenizer);
    let large: Vec<GenerationRequest> = small.iter().map(|r| GenerationRequest { n: 8, ..r.clone() }).collect();
    for (what, requests) in [("small groups", small), ("groups of 8", large)] {
        let mut one = Engine::new(&model, params.clone(), EngineConfig::default()).unwrap();
        let want = generate_all(&mut one, &requests).unwrap();
        for shards in [2, 3] {
            let mut sharded =
                ShardedEngine::with_shards(&model, params.clone(), EngineConfig::default(), shards).unwrap();
            assert_eq!(sharded.shard_count(), shards);
            let got = generate_all(&mut sharded, &requests).unwrap();
            for (i, (a, b)) in want.iter().zip(&got).enumerate() {
                assert_same(a, b, &format!("{what}, {shards} shards, request {i}"));
            }
            assert_eq!(sharded.stats().completion_tokens, one.stats().completion_tokens, "{what}, {shards} shards");
            assert_eq!(sharded.in_flight(), 0);
        }
    }
}

#[test]
fn the_cache_stays_within_its_budget() {
    let (model, tokenizer) = load();
    let params = ragged_params();
    let requests = requests(&tokenizer);
    let per_token = KvCache::bytes_per_token(model.config(), model.compute_kind());
    let longest = requests.iter().map(|r| r.prompt_ids.len()).max().unwrap() + params.max_new_tokens;
    // Room for 4 sequences at their longest: never more than one or two groups at a time.
    let budget = 4 * longest as u64 * per_token;
    let config = EngineConfig { kv_cache_bytes: budget, ..Default::default() };
    let mut engine = Engine::new(&model, params.clone(), config).unwrap();
    let limited = generate_all(&mut engine, &requests).unwrap();
    assert!(engine.stats().peak_kv_cache_bytes <= budget, "{} > {budget}", engine.stats().peak_kv_cache_bytes);
    let unlimited = generate(&model, &requests, &params).unwrap();
    for (a, b) in limited.iter().zip(&unlimited) {
        assert_same(a, b, "limited vs unlimited");
    }

    // A group that can never fit is refused up front, with the numbers.
    let too_big = GenerationRequest { n: 5, ..requests[3].clone() };
    let error = engine.submit(too_big).unwrap_err().to_string();
    assert!(error.contains("5 samples") && error.contains("KV cache"), "{error}");
}

#[test]
fn stop_strings_end_a_completion_at_the_token_that_completes_them() {
    let (model, tokenizer) = load();
    let params = SamplingParams { temperature: 0.0, max_new_tokens: 40, ..Default::default() };
    let prompt = GenerationRequest { prompt_ids: tokenizer.encode("Once upon a time").unwrap(), n: 1, seed: 0 };
    let free = generate(&model, std::slice::from_ref(&prompt), &params).unwrap().remove(0).remove(0);
    let text = tokenizer.decode(&free.token_ids, false).unwrap();
    // A stop string from the middle of the unconstrained text, two characters wide.
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() > 12, "fixture text too short: {text:?}");
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let cut = text.find(&stop).unwrap() + stop.len();

    let mut engine = Engine::new(&model, params, EngineConfig::default())
        .unwrap()
        .with_stop_strings(&tokenizer, vec![stop.clone(), "never appears \u{1F600}".into()])
        .unwrap();
    let stopped = generate_all(&mut engine, &[prompt]).unwrap().remove(0).remove(0);
    assert_eq!(stopped.finish_reason, FinishReason::Stop);
    assert_eq!(stopped.token_ids[..], free.token_ids[..stopped.token_ids.len()], "a prefix of the free run");
    let stopped_text = tokenizer.decode(&stopped.token_ids, false).unwrap();
    assert!(stopped_text.len() >= cut && stopped_text.contains(&stop), "{stopped_text:?} should reach {stop:?}");
    let before = tokenizer.decode(&stopped.token_ids[..stopped.token_ids.len() - 1], false).unwrap();
    assert!(!before.contains(&stop), "it stopped late: {before:?} already holds {stop:?}");
}

#[test]
fn the_pool_scores_every_completion_with_its_problem() {
    let (model, tokenizer) = load();
    let tokenizer = Arc::new(tokenizer);
    let params = SamplingParams { temperature: 1.0, max_new_tokens: 10, ..Default::default() };
    let engine = Engine::new(&model, params, EngineConfig::default()).unwrap();
    let config: RewardConfig = serde_json::from_value(json!({ "checkers": [
        { "name": "math", "weight": 1.0 },
        { "name": "length", "weight": 0.5, "options": { "max_tokens": 10, "cache_tokens": 5 } },
    ]}))
    .unwrap();
    let checker = Arc::new(Registry::with_builtins().build_combined(&config).unwrap());
    let prompts = (0..5).map(|i| {
        let mut fields = serde_json::Map::new();
        fields.insert("answer".into(), json!(i.to_string()));
        let text = if i == 2 { "x ".repeat(100) } else { format!("{i} + 0 =") };
        RolloutPrompt { id: format!("p{i}"), text, fields }
    });
    let pool_config = PoolConfig {
        group_size: 3,
        seed: 7,
        reward_workers: 2,
        max_prompt_tokens: 50,
        distinct_prompts: None,
        tool_output_in_length: false,
    };
    let mut pool =
        RolloutPool::new(engine, prompts, Arc::clone(&tokenizer), Arc::clone(&checker), pool_config, 40).unwrap();

    let first = pool.next_groups(3).unwrap();
    // p2 is longer than max_prompt_tokens: skipped, and p3 takes its place.
    assert_eq!(first.iter().map(|g| g.prompt.id.as_str()).collect::<Vec<_>>(), ["p0", "p1", "p3"]);
    assert_eq!(first.iter().map(|g| (g.index, g.seed)).collect::<Vec<_>>(), [(40, 47), (41, 48), (42, 49)]);
    assert_eq!(pool.stats().skipped_long_prompts, 1);
    for group in &first {
        assert_eq!(group.completions.len(), 3);
        for completion in &group.completions {
            assert_eq!(completion.text, tokenizer.decode(&completion.token_ids, true).unwrap());
            let mut fields = group.prompt.fields.clone();
            fields.insert("completion_tokens".into(), json!(completion.token_ids.len()));
            let finish = if completion.finish_reason == FinishReason::Length { "length" } else { "stop" };
            fields.insert("finish_reason".into(), json!(finish));
            let expected = checker.breakdown(&completion.text, &fields).unwrap();
            assert_eq!(completion.reward, expected.total);
            assert_eq!(completion.rewards["math"], expected.parts[0].2.reward_value());
            // Ten tokens hit the length limit: the penalty is visible in the total.
            if completion.token_ids.len() == 10 {
                assert_eq!(completion.rewards["length"], Some(-1.0));
            }
        }
    }
    // The same seeds give the same completions as the engine alone.
    let again = generate(
        &model,
        &[GenerationRequest { prompt_ids: first[1].prompt_ids.clone(), n: 3, seed: 48 }],
        &SamplingParams { temperature: 1.0, max_new_tokens: 10, ..Default::default() },
    )
    .unwrap()
    .remove(0);
    let tokens: Vec<&Vec<u32>> = first[1].completions.iter().map(|c| &c.token_ids).collect();
    assert_eq!(tokens, again.iter().map(|c| &c.token_ids).collect::<Vec<_>>());

    // Only p4 is left: fewer groups than asked, then none.
    assert_eq!(pool.next_groups(2).unwrap().len(), 1);
    assert!(pool.next_groups(2).unwrap().is_empty());
    assert_eq!(pool.next_index(), 44);
}

#[test]
fn a_missing_answer_field_is_an_error_naming_the_prompt() {
    let (model, tokenizer) = load();
    let engine =
        Engine::new(&model, SamplingParams { max_new_tokens: 3, ..Default::default() }, EngineConfig::default())
            .unwrap();
    let config: RewardConfig =
        serde_json::from_value(json!({ "checkers": [{ "name": "math", "weight": 1.0 }] })).unwrap();
    let checker = Arc::new(Registry::with_builtins().build_combined(&config).unwrap());
    let prompts =
        std::iter::once(RolloutPrompt { id: "row-17".into(), text: "1 + 1 =".into(), fields: Default::default() });
    let mut pool = RolloutPool::new(engine, prompts, Arc::new(tokenizer), checker, PoolConfig::default(), 0).unwrap();
    let error = pool.next_groups(1).unwrap_err().to_string();
    assert!(error.contains("row-17") && error.contains("answer"), "{error}");
}

#[test]
fn a_repeating_source_without_a_usable_prompt_is_an_error_not_an_endless_loop() {
    let (model, tokenizer) = load();
    let tokenizer = Arc::new(tokenizer);
    let config: RewardConfig =
        serde_json::from_value(json!({ "checkers": [{ "name": "math", "weight": 1.0 }] })).unwrap();
    let checker = Arc::new(Registry::with_builtins().build_combined(&config).unwrap());
    let prompt =
        |i: usize| RolloutPrompt { id: format!("p{i}"), text: "x ".repeat(20 + i), fields: Default::default() };
    // Three prompts, all too long, cycled forever (as epochs do); with repeated ids too.
    for ids in [vec![0, 1, 2], vec![0, 0, 1]] {
        let engine = Engine::new(&model, SamplingParams::default(), EngineConfig::default()).unwrap();
        let prompts = ids.into_iter().map(prompt).collect::<Vec<_>>().into_iter().cycle();
        let pool_config = PoolConfig { max_prompt_tokens: 10, distinct_prompts: Some(3), ..PoolConfig::default() };
        let mut pool =
            RolloutPool::new(engine, prompts, Arc::clone(&tokenizer), Arc::clone(&checker), pool_config, 0).unwrap();
        let error = pool.next_groups(2).unwrap_err().to_string();
        assert!(error.contains("no usable prompt") && error.contains("(10)"), "{error}");
        assert!(pool.stats().skipped_long_prompts <= 6, "stopped within two passes");
    }
    // One usable prompt among them is found, wherever it is.
    let engine =
        Engine::new(&model, SamplingParams { max_new_tokens: 2, ..Default::default() }, EngineConfig::default())
            .unwrap();
    let mut usable = prompt(0);
    usable.text = "1 + 1 =".into();
    usable.fields.insert("answer".into(), json!("2"));
    let prompts = vec![prompt(1), prompt(2), usable].into_iter().cycle();
    let pool_config = PoolConfig { max_prompt_tokens: 10, distinct_prompts: Some(3), ..PoolConfig::default() };
    let mut pool = RolloutPool::new(engine, prompts, tokenizer, checker, pool_config, 0).unwrap();
    assert_eq!(pool.next_groups(3).unwrap().len(), 3);
}
