//! The policy model against Hugging Face transformers, and against itself under batching,
//! caching and saving. Fixtures: tests/fixtures/models/* and tests/fixtures/expected.json, made
//! by scripts/make_fixtures.py (transformers, fp32, CPU).

use std::path::{Path, PathBuf};

use aha_model::{CausalLM, KvCache, LoadOptions, SaveOptions, Tokenizer};
use aha_rollout::{generate, FinishReason, GenerationRequest, SamplingParams};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

const ARCHITECTURES: [&str; 3] = ["qwen2", "llama", "qwen3"];
/// Every fixture checkpoint, including the sharded and the bf16 copies of qwen2.
const CHECKPOINTS: [&str; 5] = ["qwen2", "llama", "qwen3", "qwen2-sharded", "qwen2-bf16"];

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models").join(name)
}

fn expected() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/expected.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn load(dir: &Path) -> (CausalLM, Tokenizer) {
    let model = CausalLM::load(dir, LoadOptions::default()).unwrap();
    let tokenizer = Tokenizer::from_dir(dir, model.config().vocab_size).unwrap();
    (model, tokenizer)
}

fn ids(value: &Value) -> Vec<u32> {
    value.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

fn floats(value: &Value) -> Vec<f32> {
    value.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()
}

/// How far two fp32 computations of the same log-probs may differ when they differ only in
/// rounding: a row computed in a batch and alone (BLAS picks its micro-kernel by the number of
/// rows and the CPU's instruction set, so the row's products sum in another order), or a decode
/// step's fused attention against SDPA. Measured across MKL's SSE4.2, AVX2 and AVX-512 paths
/// (`MKL_ENABLE_INSTRUCTIONS`) and libtorch's (`ATEN_CPU_CAPABILITY`) on the fixtures: up to
/// 2.4e-5. A real mistake (padding attended to, a position or temperature off) moves log-probs
/// by 1e-2 or more. Bit equality holds only between runs of the same shapes on the same CPU.
const ROUNDING: f32 = 1e-4;

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn logprobs_match_transformers() {
    let expected = expected();
    for name in CHECKPOINTS {
        let (model, tokenizer) = load(&fixture_dir(name));
        for case in expected["models"][name]["logprobs"].as_array().unwrap() {
            let tokens = ids(&case["tokens"]);
            assert_eq!(tokenizer.encode(case["text"].as_str().unwrap()).unwrap(), tokens, "{name}: tokenization");
            let ours = model.sequence_logprobs(std::slice::from_ref(&tokens), 1.0).unwrap().remove(0);
            let diff = max_abs_diff(&ours, &floats(&case["logprobs"]));
            assert!(diff < 1e-4, "{name}: log-probs differ from transformers by {diff}");
        }
    }
}

#[test]
fn greedy_generation_matches_transformers() {
    let expected = expected();
    for name in CHECKPOINTS {
        let (model, tokenizer) = load(&fixture_dir(name));
        let cases = expected["models"][name]["greedy"].as_array().unwrap();
        let requests: Vec<GenerationRequest> = cases
            .iter()
            .map(|case| {
                let prompt_ids = ids(&case["prompt_tokens"]);
                assert_eq!(tokenizer.encode(case["prompt"].as_str().unwrap()).unwrap(), prompt_ids);
                GenerationRequest { prompt_ids, n: 1, seed: 0 }
            })
            .collect();
        let params = SamplingParams {
            temperature: 0.0,
            max_new_tokens: cases[0]["max_new_tokens"].as_u64().unwrap() as usize,
            stop_token_ids: model.config().eos_token_ids.clone(),
            ..Default::default()
        };
        // All prompts in one left-padded batch: the batch must not change any greedy choice.
        let outputs = generate(&model, &requests, &params).unwrap();
        for (case, output) in cases.iter().zip(outputs) {
            let want = ids(&case["new_tokens"]);
            let got = &output[0];
            assert_eq!(got.token_ids, want, "{name}: greedy continuation of {:?}", case["prompt"]);
            let stopped = want.last().is_some_and(|t| params.stop_token_ids.contains(t));
            assert_eq!(got.finish_reason, if stopped { FinishReason::Stop } else { FinishReason::Length });
        }
    }
}

#[test]
fn left_padded_batch_equals_each_row_alone() {
    let expected = expected();
    for name in ARCHITECTURES {
        let (model, _) = load(&fixture_dir(name));
        let sequences: Vec<Vec<u32>> =
            expected["models"][name]["logprobs"].as_array().unwrap().iter().map(|c| ids(&c["tokens"])).collect();
        assert!(sequences.windows(2).any(|w| w[0].len() != w[1].len()), "the cases must have different lengths");
        let batched = model.sequence_logprobs(&sequences, 1.0).unwrap();
        for (sequence, batched) in sequences.iter().zip(&batched) {
            let alone = model.sequence_logprobs(std::slice::from_ref(sequence), 1.0).unwrap().remove(0);
            let diff = max_abs_diff(batched, &alone);
            assert!(diff < ROUNDING, "{name}: padded row differs from the row alone by {diff}");
        }
    }
}

/// The logits of `batch` through `cache`: its first `prefill` columns in one pass, then one
/// column per step (through `forward`, then `logits`).
fn decode_step_by_step(model: &CausalLM, batch: &aha_model::PaddedBatch, prefill: i64, cache: &mut KvCache) -> Tensor {
    decode_steps(model, batch, prefill, cache, false)
}

/// `decode_step_by_step`, its one-token steps through `next_token_logits` if `next_token`.
fn decode_steps(
    model: &CausalLM,
    batch: &aha_model::PaddedBatch,
    prefill: i64,
    cache: &mut KvCache,
    next_token: bool,
) -> Tensor {
    let columns = |start, len| {
        (
            batch.input_ids.narrow(1, start, len),
            batch.positions.narrow(1, start, len),
            batch.attention_mask.narrow(1, start, len),
        )
    };
    let width = batch.input_ids.size()[1];
    let steps: Vec<Tensor> = std::iter::once((0, prefill))
        .chain((prefill..width).map(|t| (t, 1)))
        .map(|(start, len)| {
            let (ids, positions, mask) = columns(start, len);
            if next_token && len == 1 {
                return model.next_token_logits(&ids, &positions, Some(&mask), cache).unsqueeze(1);
            }
            model.logits(&model.forward(&ids, &positions, Some(&mask), Some(&mut *cache)))
        })
        .collect();
    Tensor::cat(&steps, 1)
}

#[test]
fn kv_cache_decoding_equals_full_forward() {
    let expected = expected();
    for (name, kind) in ARCHITECTURES.iter().flat_map(|n| [(n, Kind::Float), (n, Kind::Double)]) {
        let model = CausalLM::load(&fixture_dir(name), LoadOptions { kind, ..Default::default() }).unwrap();
        let cases = expected["models"][name]["logprobs"].as_array().unwrap();
        let sequences: Vec<Vec<u32>> = cases.iter().take(2).map(|c| ids(&c["tokens"])).collect();
        let batch = aha_model::PaddedBatch::left_padded(&sequences, 0, Device::Cpu).unwrap();
        let width = batch.input_ids.size()[1];
        tch::no_grad(|| {
            let full =
                model.logits(&model.forward(&batch.input_ids, &batch.positions, Some(&batch.attention_mask), None));
            // Prefill a few columns, then one token per step, starting from a small cache so
            // that it has to grow.
            let mut cache = model.new_cache(2, 4);
            let incremental = decode_step_by_step(&model, &batch, 3, &mut cache);
            assert_eq!(cache.len(), width);
            // Compare real tokens only: padding rows are computed but never used.
            let real = batch.attention_mask.unsqueeze(-1);
            let diff = (&full - &incremental).abs().masked_fill(&real.logical_not(), 0.0).max().double_value(&[]);
            // In f64 the two paths agree exactly (the cache logic is right); in fp32 they differ by
            // summation order only (different GEMM shapes), a few ulps of logits near 15.
            let tolerance = if kind == Kind::Double { 1e-9 } else { 1e-4 };
            assert!(diff < tolerance, "{name} {kind:?}: cached decoding differs from the full forward by {diff}");
        });
    }
}

/// A batch large enough that the fused decode step shares its attention out among threads
/// (from about 43 cached tokens on): decoded token by token, every row is as close to the exact
/// (f64) logits as the fp32 full forward is. Pseudo-random tokens give logits up to about 17,
/// where fp32 rounding alone reaches 1e-4.
#[test]
fn a_large_decode_batch_is_as_exact_as_the_full_forward() {
    for name in ARCHITECTURES {
        let (model, _) = load(&fixture_dir(name));
        let exact_model =
            CausalLM::load(&fixture_dir(name), LoadOptions { kind: Kind::Double, ..Default::default() }).unwrap();
        let vocab = model.config().vocab_size as u64;
        // 24 rows of 60 to 83 pseudo-random tokens, left-padded.
        let mut state = 12345u64;
        let sequences: Vec<Vec<u32>> = (0..24)
            .map(|row| {
                (0..60 + row)
                    .map(|_| {
                        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        ((state >> 33) % vocab) as u32
                    })
                    .collect()
            })
            .collect();
        let batch = aha_model::PaddedBatch::left_padded(&sequences, 0, Device::Cpu).unwrap();
        let width = batch.input_ids.size()[1];
        tch::no_grad(|| {
            let full_forward = |model: &CausalLM| {
                model.logits(&model.forward(&batch.input_ids, &batch.positions, Some(&batch.attention_mask), None))
            };
            let decoded = decode_step_by_step(&model, &batch, 8, &mut model.new_cache(24, width));
            let exact = full_forward(&exact_model).to_kind(Kind::Float);
            let padding = batch.attention_mask.unsqueeze(-1).logical_not();
            let error = |logits: &Tensor| {
                let error = (logits - &exact).abs().masked_fill(&padding, 0.0);
                (error.max().double_value(&[]), error.mean(Kind::Double).double_value(&[]))
            };
            let (full_max, full_mean) = error(&full_forward(&model));
            // Also through `next_token_logits`, whose split steps compute the LM head with the rows.
            let next_token = decode_steps(&model, &batch, 8, &mut model.new_cache(24, width), true);
            for (how, decoded) in [("forward", &decoded), ("next_token_logits", &next_token)] {
                let (decoded_max, decoded_mean) = error(decoded);
                assert!(
                    decoded_max < 2.0 * full_max && decoded_mean < 1.5 * full_mean,
                    "{name}: logits decoded by {how} are {decoded_max} (mean {decoded_mean}) from the exact ones, \
                     the full forward's {full_max} (mean {full_mean})"
                );
            }
        });
    }
}

#[test]
fn samples_of_a_group_do_not_depend_on_the_batch() {
    let (model, tokenizer) = load(&fixture_dir("qwen2"));
    let params = SamplingParams { temperature: 1.0, top_p: 0.95, max_new_tokens: 12, ..Default::default() };
    let request = |text: &str, n, seed| GenerationRequest { prompt_ids: tokenizer.encode(text).unwrap(), n, seed };
    let alone = generate(&model, &[request("12 + 35 =", 3, 11)], &params).unwrap().remove(0);
    let together =
        generate(&model, &[request("The cat sat on", 2, 5), request("12 + 35 =", 3, 11)], &params).unwrap().remove(1);
    for (a, b) in alone.iter().zip(&together) {
        assert_eq!((&a.token_ids, a.finish_reason), (&b.token_ids, b.finish_reason));
        let diff = max_abs_diff(&a.logprobs, &b.logprobs);
        assert!(diff < ROUNDING, "a group's log-probs alone and in a batch differ by {diff}");
    }
    assert!(alone.iter().any(|c| c.token_ids != alone[0].token_ids), "three samples should not all be equal");
    // The recorded log-probs are what the model gives the sampled tokens at that temperature.
    for completion in &alone {
        let mut sequence = request("12 + 35 =", 1, 0).prompt_ids;
        let prompt_len = sequence.len();
        sequence.extend(&completion.token_ids);
        let scored = model.sequence_logprobs(&[sequence], params.temperature).unwrap().remove(0);
        // Both in fp32, but by different kernels: a decode step runs fused (attention in Rust
        // over the cache), the scoring pass through SDPA.
        let diff = max_abs_diff(&scored[prompt_len - 1..], &completion.logprobs);
        assert!(diff < ROUNDING, "sampling-side log-probs differ from a scoring pass by {diff}");
    }
}

fn variables(model: &CausalLM) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = model.var_store().variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

fn assert_same_weights(a: &CausalLM, b: &CausalLM, kind: Kind) {
    let (a, b) = (variables(a), variables(b));
    assert_eq!(a.iter().map(|v| &v.0).collect::<Vec<_>>(), b.iter().map(|v| &v.0).collect::<Vec<_>>());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x.to_kind(kind).equal(y), "{name} changed in the round trip");
    }
}

#[test]
fn save_then_load_round_trips_bit_identically() {
    for name in ARCHITECTURES {
        let (model, _) = load(&fixture_dir(name));
        let out = tempfile::tempdir().unwrap();
        model.save(out.path(), SaveOptions::default()).unwrap();
        assert!(out.path().join("model.safetensors").is_file());
        for copied in ["tokenizer.json", "tokenizer_config.json"] {
            assert!(out.path().join(copied).is_file(), "{copied} was not copied");
        }
        let reloaded = CausalLM::load(out.path(), LoadOptions::default()).unwrap();
        assert_same_weights(&model, &reloaded, Kind::Float);

        let header = safetensors_header(&out.path().join("model.safetensors"));
        assert_eq!(header["__metadata__"]["format"], "pt");
        let has_lm_head = header.get("lm_head.weight").is_some();
        assert_eq!(has_lm_head, !model.config().tie_word_embeddings, "{name}: a tied lm_head is not written");
    }
}

#[test]
fn sharded_bf16_and_f16_saves_round_trip() {
    let (model, _) = load(&fixture_dir("qwen2"));
    let out = tempfile::tempdir().unwrap();
    // Small shards: several files plus an index, as transformers writes them.
    model.save(out.path(), SaveOptions { kind: None, max_shard_bytes: 64 << 10 }).unwrap();
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("model.safetensors.index.json")).unwrap())
            .unwrap();
    let shards: std::collections::BTreeSet<&str> =
        index["weight_map"].as_object().unwrap().values().map(|v| v.as_str().unwrap()).collect();
    assert!(shards.len() >= 2, "expected several shards, got {shards:?}");
    assert!(!out.path().join("model.safetensors").exists());
    assert_same_weights(&model, &CausalLM::load(out.path(), LoadOptions::default()).unwrap(), Kind::Float);

    // Saving again unsharded into the same folder replaces the shards.
    model.save(out.path(), SaveOptions { kind: Some(Kind::BFloat16), ..Default::default() }).unwrap();
    assert!(!out.path().join("model.safetensors.index.json").exists());
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(config.get("dtype").or(config.get("torch_dtype")).unwrap(), "bfloat16");
    let options = LoadOptions { kind: Kind::BFloat16, ..Default::default() };
    let bf16 = CausalLM::load(out.path(), options).unwrap();
    assert_same_weights(&model, &bf16, Kind::BFloat16);

    // An f16 file loads into f32 weights (widened exactly).
    model.save(out.path(), SaveOptions { kind: Some(Kind::Half), ..Default::default() }).unwrap();
    let widened = CausalLM::load(out.path(), LoadOptions::default()).unwrap();
    for ((name, original), (_, loaded)) in variables(&model).iter().zip(&variables(&widened)) {
        assert_eq!(loaded.kind(), Kind::Float);
        assert!(original.to_kind(Kind::Half).to_kind(Kind::Float).equal(loaded), "{name}");
    }
}

fn safetensors_header(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    serde_json::from_slice(&bytes[8..8 + len]).unwrap()
}

// Mixed precision: fp32 weights, forward passes in bf16 (`LoadOptions::compute`). Reference:
// transformers' model converted with `.to(torch.bfloat16)`, tests/fixtures/expected_bf16.json,
// made by scripts/make_bf16_fixture.py.

fn load_mixed(name: &str, trainable: bool) -> CausalLM {
    let options = LoadOptions { compute: Some(Kind::BFloat16), trainable, ..Default::default() };
    CausalLM::load(&fixture_dir(name), options).unwrap()
}

fn mean_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs())).sum::<f64>() / a.len() as f64
}

#[test]
fn bf16_compute_is_the_bf16_model_and_matches_transformers_in_bf16() {
    let fp32_reference = expected();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/expected_bf16.json");
    let bf16_reference: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for name in ARCHITECTURES {
        let mixed = load_mixed(name, false);
        assert_eq!((mixed.kind(), mixed.compute_kind()), (Kind::Float, Kind::BFloat16));
        // The same forward pass as the model whose weights are stored in bf16, bit for bit.
        let converted =
            CausalLM::load(&fixture_dir(name), LoadOptions { kind: Kind::BFloat16, ..Default::default() }).unwrap();
        let (mut to_sdpa, mut to_eager, mut eager_to_sdpa, mut to_fp32) = (0.0, 0.0, 0.0, 0.0);
        let cases = bf16_reference["models"][name]["logprobs"].as_array().unwrap();
        for (case, fp32) in cases.iter().zip(fp32_reference["models"][name]["logprobs"].as_array().unwrap()) {
            let tokens = ids(&case["tokens"]);
            let ours = mixed.sequence_logprobs(std::slice::from_ref(&tokens), 1.0).unwrap().remove(0);
            let theirs = converted.sequence_logprobs(std::slice::from_ref(&tokens), 1.0).unwrap().remove(0);
            assert_eq!(ours, theirs, "{name}: mixed precision differs from the bf16 model");
            let (eager, sdpa) = (floats(&case["eager"]), floats(&case["sdpa"]));
            to_sdpa += mean_abs_diff(&ours, &sdpa);
            to_eager += mean_abs_diff(&ours, &eager);
            eager_to_sdpa += mean_abs_diff(&eager, &sdpa);
            to_fp32 += mean_abs_diff(&ours, &floats(&fp32["logprobs"]));
        }
        let n = cases.len() as f64;
        let (to_sdpa, to_eager, noise, to_fp32) = (to_sdpa / n, to_eager / n, eager_to_sdpa / n, to_fp32 / n);
        eprintln!(
            "{name}: mean |diff| to sdpa {to_sdpa:.4}, eager {to_eager:.4}, eager-sdpa {noise:.4}, fp32 {to_fp32:.4}"
        );
        // As close to transformers' bf16 runs as they are to each other, and closer than to fp32.
        assert!(to_sdpa.min(to_eager) <= 1.5 * noise, "{name}: {to_sdpa} / {to_eager} against noise {noise}");
        assert!(to_sdpa.max(to_eager) < to_fp32, "{name}: nearer fp32 ({to_fp32}) than bf16 ({to_sdpa})");
    }
}

#[test]
fn bf16_compute_gradients_reach_the_fp32_weights() {
    let tokens = ids(&expected()["models"]["qwen2"]["logprobs"][0]["tokens"]);
    let batch = aha_model::PaddedBatch::left_padded(std::slice::from_ref(&tokens), 0, Device::Cpu).unwrap();
    let gradients = |model: &CausalLM| {
        let hidden = model.forward(&batch.input_ids, &batch.positions, None, None);
        let n = tokens.len() as i64;
        let logprobs = model.token_logprobs(&hidden.narrow(1, 0, n - 1), &batch.input_ids.narrow(1, 1, n - 1), 1.0);
        logprobs.sum(Kind::Float).backward();
        variables(model).into_iter().map(|(name, v)| (name, v.grad())).collect::<Vec<_>>()
    };
    let trainable = |kind| LoadOptions { kind, trainable: true, ..Default::default() };
    let mixed = gradients(&load_mixed("qwen2", true));
    let converted = gradients(&CausalLM::load(&fixture_dir("qwen2"), trainable(Kind::BFloat16)).unwrap());
    let fp32 = gradients(&CausalLM::load(&fixture_dir("qwen2"), trainable(Kind::Float)).unwrap());
    for ((name, ours), (_, bf16)) in mixed.iter().zip(&converted) {
        assert_eq!(ours.kind(), Kind::Float, "{name}");
        // The bf16 model's gradient, which the cast hands back widened; the embedding's rows add
        // up in fp32 here (the lookup is done before the cast), in bf16 there.
        if name == "model.embed_tokens.weight" {
            let scale = bf16.abs().max().double_value(&[]);
            let worst = (ours - bf16.to_kind(Kind::Float)).abs().max().double_value(&[]);
            assert!(worst <= 1e-2 * scale, "{name}: {worst} (largest {scale})");
        } else {
            assert!(ours.equal(&bf16.to_kind(Kind::Float)), "{name}: not the bf16 model's gradient");
        }
    }
    // And it points where fp32's does (these sharp fixture weights make bf16 coarse).
    let flat =
        |grads: &[(String, Tensor)]| Tensor::cat(&grads.iter().map(|(_, g)| g.flatten(0, -1)).collect::<Vec<_>>(), 0);
    let (ours, reference) = (flat(&mixed), flat(&fp32));
    let cosine = (&ours * &reference).sum(Kind::Double).double_value(&[])
        / (ours.norm().double_value(&[]) * reference.norm().double_value(&[]));
    assert!(cosine > 0.95, "cosine with the fp32 gradient {cosine}");
}

#[test]
fn bf16_compute_sees_every_in_place_update_of_the_weights() {
    let tokens = ids(&expected()["models"]["qwen2"]["logprobs"][0]["tokens"]);
    let score = |model: &CausalLM| model.sequence_logprobs(std::slice::from_ref(&tokens), 1.0).unwrap().remove(0);
    // What an optimizer step does: in-place updates of the variables (the q/k/v and gate/up
    // parts alias rows of fused matrices, which hold casts of their own).
    let update = |model: &CausalLM, factor: f64| {
        tch::no_grad(|| {
            for (_, mut v) in variables(model) {
                let _ = v.g_mul_scalar_(factor);
            }
        })
    };
    let model = load_mixed("qwen2", true);
    let before = score(&model);
    update(&model, 1.25);
    let after = score(&model);
    assert_ne!(after, before, "a forward pass after the update used stale casts");
    let fresh = load_mixed("qwen2", true);
    update(&fresh, 1.25);
    assert_eq!(after, score(&fresh), "the update is not seen as a fresh model sees it");
    update(&model, 0.8);
    update(&fresh, 0.8);
    assert_eq!(score(&model), score(&fresh));
}
