//! LoRA adapters against PEFT: an adapter PEFT wrote loads unchanged and gives PEFT's log-probs,
//! adapter gradients and merged weights; what aha writes back is the same file. Fixtures:
//! tests/fixtures/lora/* made by scripts/make_lora_fixtures.py (PEFT, fp32, CPU) on the tiny
//! fixture models.

use std::path::{Path, PathBuf};

use aha_model::{CausalLM, LoadOptions, LoraConfig, TargetModules};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

const ARCHITECTURES: [&str; 3] = ["qwen2", "llama", "qwen3"];
/// PEFT and aha run the same fp32 products through different code (PEFT's module hooks, our
/// fused q/k/v); their sums differ only in rounding.
const TOLERANCE: f64 = 1e-5;
/// Gradients sum over every token and position in fp32, so they carry more rounding than one
/// log-prob: an AMD EPYC (AVX2, no AVX-512) got 1.4e-5 of the largest entry where the reference
/// machine got under 1e-5. A wrong gradient (a missing scale, a transposed factor) is off by far
/// more than this.
const GRADIENT_TOLERANCE: f64 = 5e-5;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn base(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

fn adapter(name: &str) -> PathBuf {
    fixtures().join("lora").join(name)
}

fn expected(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(adapter(name).join("expected.json")).unwrap()).unwrap()
}

fn sequences(expected: &Value) -> Vec<Vec<u32>> {
    let ids = |v: &Value| v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    expected["sequences"].as_array().unwrap().iter().map(ids).collect()
}

/// The safetensors file's tensors, sorted by name.
fn read(path: &Path) -> Vec<(String, Tensor)> {
    let mut tensors = Tensor::read_safetensors(path).unwrap();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[])
}

fn with_peft_adapter(name: &str, trainable: bool) -> CausalLM {
    let mut model = CausalLM::load(&base(name), LoadOptions::default()).unwrap();
    model.load_adapter(&adapter(name), trainable).unwrap();
    model
}

/// -(sum of the log-probs of every sequence) / (predicted tokens): the fixture script's loss.
fn loss(model: &CausalLM, sequences: &[Vec<u32>]) -> Tensor {
    let mut total = Tensor::zeros([], (Kind::Float, Device::Cpu));
    let mut tokens = 0;
    for ids in sequences {
        let n = ids.len() as i64;
        let input = Tensor::from_slice(&ids.iter().map(|&i| i64::from(i)).collect::<Vec<_>>()).view([1, n]);
        let positions = Tensor::arange(n, (Kind::Int64, Device::Cpu)).view([1, n]);
        let hidden = model.forward(&input, &positions, None, None);
        let logprobs = model.token_logprobs(&hidden.narrow(1, 0, n - 1), &input.narrow(1, 1, n - 1), 1.0);
        total = total - logprobs.sum(Kind::Float);
        tokens += n - 1;
    }
    total / tokens as f64
}

#[test]
fn a_peft_adapter_gives_pefts_logprobs() {
    for name in ARCHITECTURES {
        let expected = expected(name);
        let model = with_peft_adapter(name, false);
        let ours = model.sequence_logprobs(&sequences(&expected), 1.0).unwrap();
        for (ours, theirs) in ours.iter().zip(expected["logprobs"].as_array().unwrap()) {
            let theirs: Vec<f32> = theirs.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            // Relative to the log-prob (these reach -13): another CPU's kernels sum in another order.
            let worst = ours
                .iter()
                .zip(&theirs)
                .map(|(a, b)| f64::from((a - b).abs()) / f64::from(b.abs()).max(1.0))
                .fold(0.0, f64::max);
            assert!(worst < TOLERANCE, "{name}: log-probs differ from PEFT's by {worst}");
        }
        // The adapter changes the model: the base alone is far from PEFT's numbers.
        let base_logprobs = model.without_adapters(|| model.sequence_logprobs(&sequences(&expected), 1.0).unwrap());
        let moved = base_logprobs[0].iter().zip(&ours[0]).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(moved > 1e-2, "{name}: the adapter barely changes the model ({moved})");
    }
}

#[test]
fn adapter_gradients_equal_pefts_and_only_adapters_get_one() {
    for name in ARCHITECTURES {
        let expected = expected(name);
        let model = with_peft_adapter(name, true);
        let loss = loss(&model, &sequences(&expected));
        let their_loss = expected["loss"].as_f64().unwrap();
        assert!((loss.double_value(&[]) - their_loss).abs() < TOLERANCE, "{name}: loss {loss:?} vs {their_loss}");
        loss.backward();
        let theirs = read(&adapter(name).join("gradients.safetensors"));
        let mut ours: Vec<(String, Tensor)> =
            model.parameters().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        ours.sort_by(|a, b| a.0.cmp(&b.0));
        let names = |v: &[(String, Tensor)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        assert_eq!(names(&ours), names(&theirs), "{name}: the trainable parameters are PEFT's");
        for ((key, ours), (_, theirs)) in ours.iter().zip(&theirs) {
            // Relative to the gradient's largest entry (portable kernels round differently).
            let diff = max_diff(&ours.grad(), theirs) / theirs.abs().max().double_value(&[]).max(1.0);
            assert!(diff < GRADIENT_TOLERANCE, "{name}: gradient of {key} differs from PEFT's by {diff}");
        }
        for (key, weight) in model.var_store().variables() {
            assert!(!weight.grad().defined(), "{name}: base weight {key} got a gradient");
        }
    }
}

#[test]
fn merged_weights_equal_pefts_merge_and_unload() {
    for name in ARCHITECTURES {
        let mut model = with_peft_adapter(name, false);
        let sequences = sequences(&expected(name));
        let unmerged = model.sequence_logprobs(&sequences, 1.0).unwrap();
        model.merge_adapters();
        assert!(model.lora().is_none());
        let weights = model.var_store().variables();
        for (key, theirs) in read(&adapter(name).join("merged.safetensors")) {
            let diff = max_diff(&weights[&key], &theirs);
            assert!(diff < 1e-6, "{name}: merged {key} differs from PEFT's by {diff}");
        }
        let merged = model.sequence_logprobs(&sequences, 1.0).unwrap();
        for (a, b) in merged.iter().flatten().zip(unmerged.iter().flatten()) {
            // Relative: the products now sum in another order, and these log-probs reach -13.
            let moved = f64::from((a - b).abs()) / f64::from(b.abs()).max(1.0);
            assert!(moved < TOLERANCE, "{name}: merging moved a log-prob from {b} to {a}");
        }
    }
}

#[test]
fn aha_writes_back_the_adapter_peft_wrote() {
    let dir = tempfile::tempdir().unwrap();
    for name in ARCHITECTURES {
        let model = with_peft_adapter(name, false);
        let out = dir.path().join(name);
        model.save_adapter(&out).unwrap();
        let (ours, theirs) =
            (read(&out.join("adapter_model.safetensors")), read(&adapter(name).join("adapter_model.safetensors")));
        assert_eq!(ours.len(), theirs.len());
        for ((a, x), (b, y)) in ours.iter().zip(&theirs) {
            assert_eq!(a, b, "{name}: key names");
            assert!(x.equal(y), "{name}: {a} changed on the round trip");
        }
        let config: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap()).unwrap();
        let peft: Value =
            serde_json::from_str(&std::fs::read_to_string(adapter(name).join("adapter_config.json")).unwrap()).unwrap();
        for key in ["r", "lora_alpha", "use_rslora", "peft_type", "bias"] {
            assert_eq!(config[key], peft[key], "{name}: adapter_config.json's {key}");
        }
        // PEFT writes "all-linear" as module paths (model.layers.0.self_attn.q_proj); aha as names.
        let targets = |v: &Value| {
            let mut t: Vec<&str> =
                v["target_modules"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
            t = t.into_iter().map(|n| n.rsplit('.').next().unwrap()).collect();
            t.sort();
            t.dedup();
            t.into_iter().map(String::from).collect::<Vec<_>>()
        };
        assert_eq!(targets(&config), targets(&peft), "{name}: target modules");
        // And it loads again into the same numbers.
        let sequences = sequences(&expected(name));
        let mut again = CausalLM::load(&base(name), LoadOptions::default()).unwrap();
        again.load_adapter(&out, false).unwrap();
        assert_eq!(
            again.sequence_logprobs(&sequences, 1.0).unwrap(),
            model.sequence_logprobs(&sequences, 1.0).unwrap()
        );
    }
}

#[test]
fn a_fresh_adapter_starts_as_the_base_and_trains_alone() {
    let name = "qwen2";
    let mut model = CausalLM::load(&base(name), LoadOptions::default()).unwrap();
    let sequences = sequences(&expected(name));
    let before = model.sequence_logprobs(&sequences, 1.0).unwrap();
    let config = LoraConfig { r: 8, alpha: 16.0, target_modules: TargetModules::all(), ..LoraConfig::default() };
    model.add_lora(&config, 7).unwrap();
    // B = 0: the adapted model is the base, exactly.
    assert_eq!(model.sequence_logprobs(&sequences, 1.0).unwrap(), before);
    let trainable = model.trainable_parameters();
    assert_eq!(trainable.len(), 2 * 7 * model.config().num_hidden_layers);
    for (key, t) in model.parameters() {
        if key.contains("lora_A") {
            // PEFT's kaiming_uniform_(a = sqrt(5)): U(-1/sqrt(in), 1/sqrt(in)), in = hidden or intermediate.
            let bound = 1.0 / (t.size()[1] as f64).sqrt();
            let largest = t.abs().max().double_value(&[]);
            assert!(largest <= bound && largest > 0.5 * bound, "{key}: |A| up to {largest}, bound {bound}");
        } else if key.contains("lora_B") {
            assert_eq!(t.abs().max().double_value(&[]), 0.0, "{key}: B starts at zero");
        }
    }
    // The same seed draws the same adapter.
    let mut again = CausalLM::load(&base(name), LoadOptions::default()).unwrap();
    again.add_lora(&config, 7).unwrap();
    for ((a, x), (b, y)) in model.parameters().iter().zip(again.parameters().iter()) {
        assert_eq!(a, b);
        assert!(x.equal(y), "{a} differs between two adapters drawn from the same seed");
    }
}

#[test]
fn adapters_for_another_model_or_a_bad_config_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    // qwen3's adapter on llama: its k_proj is 64 wide there (head_dim 32), 32 here.
    let mut llama = CausalLM::load(&base("llama"), LoadOptions::default()).unwrap();
    let error = llama.load_adapter(&adapter("qwen3"), false).unwrap_err().to_string();
    assert!(error.contains("another base model") && error.contains("k_proj.lora_B.weight"), "{error}");
    assert!(llama.lora().is_none(), "a failed load leaves no adapter behind");

    // A config PEFT can write but aha does not honour.
    let dora = dir.path().join("dora");
    std::fs::create_dir_all(&dora).unwrap();
    std::fs::copy(adapter("qwen2").join("adapter_model.safetensors"), dora.join("adapter_model.safetensors")).unwrap();
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(adapter("qwen2").join("adapter_config.json")).unwrap()).unwrap();
    config["use_dora"] = true.into();
    std::fs::write(dora.join("adapter_config.json"), config.to_string()).unwrap();
    let mut qwen2 = CausalLM::load(&base("qwen2"), LoadOptions::default()).unwrap();
    let error = qwen2.load_adapter(&dora, false).unwrap_err().to_string();
    assert!(error.contains("adapter_config.json") && error.contains("use_dora"), "{error}");

    // A layer the model does not have.
    let extra = dir.path().join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    let mut tensors = read(&adapter("qwen2").join("adapter_model.safetensors"));
    let (key, tensor) = (tensors[0].0.clone(), tensors[0].1.copy());
    tensors.push((key.replace("layers.0.", "layers.7."), tensor));
    Tensor::write_safetensors(&tensors, extra.join("adapter_model.safetensors")).unwrap();
    std::fs::copy(adapter("qwen2").join("adapter_config.json"), extra.join("adapter_config.json")).unwrap();
    let error = qwen2.load_adapter(&extra, false).unwrap_err().to_string();
    assert!(error.contains("layers.7.") && error.contains("2 layers"), "{error}");

    let error = qwen2.load_adapter(&dir.path().join("missing"), false).unwrap_err().to_string();
    assert!(error.contains("adapter_config.json"), "{error}");

    let zero = LoraConfig { r: 0, ..LoraConfig::default() };
    let error = qwen2.add_lora(&zero, 1).unwrap_err().to_string();
    assert!(error.contains("lora.r"), "{error}");
    let error = serde_json::from_str::<LoraConfig>(r#"{"target_modules": ["qproj"]}"#).unwrap_err().to_string();
    assert!(error.contains("\"qproj\" matches no layer"), "{error}");
}

#[test]
fn a_merged_copy_samples_what_the_adapters_give_and_follows_their_updates() {
    let name = "qwen2";
    let sequences = sequences(&expected(name));
    let model = with_peft_adapter(name, true);
    let copy = model.merged_copy().unwrap();
    assert!(copy.lora().is_none() && copy.trainable_parameters().is_empty());
    let close = |a: &[Vec<f32>], b: &[Vec<f32>]| {
        a.iter()
            .flatten()
            .zip(b.iter().flatten())
            .all(|(x, y)| f64::from((x - y).abs()) < TOLERANCE * f64::from(y.abs()).max(1.0))
    };
    let before = model.sequence_logprobs(&sequences, 1.0).unwrap();
    assert!(close(&copy.sequence_logprobs(&sequences, 1.0).unwrap(), &before));
    // An update of the adapters (as the optimizer's, in place) reaches the copy at the next merge.
    tch::no_grad(|| {
        for (key, mut t) in model.parameters() {
            if key.contains("lora_B") {
                let _ = t.g_mul_scalar_(-1.0);
            }
        }
    });
    let after = model.sequence_logprobs(&sequences, 1.0).unwrap();
    assert!(!close(&after, &before), "flipping B changes the model");
    model.merge_into(&copy);
    assert!(close(&copy.sequence_logprobs(&sequences, 1.0).unwrap(), &after));
    // The base weights themselves are untouched.
    assert!(close(
        &model.without_adapters(|| model.sequence_logprobs(&sequences, 1.0).unwrap()),
        &CausalLM::load(&base(name), LoadOptions::default()).unwrap().sequence_logprobs(&sequences, 1.0).unwrap()
    ));
}

#[test]
fn generation_through_adapters_samples_what_their_merge_samples() {
    use aha_rollout::{generate, GenerationRequest, SamplingParams};
    for name in ARCHITECTURES {
        let sequences = sequences(&expected(name));
        let model = with_peft_adapter(name, false);
        let mut merged = with_peft_adapter(name, false);
        merged.merge_adapters();
        let params = SamplingParams { temperature: 1.0, max_new_tokens: 10, ..Default::default() };
        let requests: Vec<GenerationRequest> = sequences
            .iter()
            .enumerate()
            .map(|(i, ids)| GenerationRequest { prompt_ids: ids[..4].to_vec(), n: 3, seed: i as u64 })
            .collect();
        // The fused decode step adds the adapters' updates (the unmerged model); the merged one
        // has them in its weights: the same draws, log-probs equal up to rounding.
        let through = generate(&model, &requests, &params).unwrap();
        let folded = generate(&merged, &requests, &params).unwrap();
        let base = model.without_adapters(|| generate(&model, &requests, &params).unwrap());
        let mut differs_from_base = false;
        for ((a, b), c) in through.iter().flatten().zip(folded.iter().flatten()).zip(base.iter().flatten()) {
            assert_eq!(a.token_ids, b.token_ids, "{name}: a sample differs between adapters and their merge");
            for (x, y) in a.logprobs.iter().zip(&b.logprobs) {
                assert!(f64::from((x - y).abs()) < 1e-4, "{name}: sampled log-prob {x} vs {y} merged");
            }
            differs_from_base |= a.token_ids != c.token_ids;
        }
        assert!(differs_from_base, "{name}: the adapters change no sample");
    }
}
