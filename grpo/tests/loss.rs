//! The loss against hand-computed values and against TRL's formulas in PyTorch
//! (`fixtures/loss.json`, written by `make_fixtures.py`).

use aha_grpo::{policy_loss, LossInputs, LossParams, LossType, Normalizer};
use serde_json::Value;
use tch::{Kind, Tensor};

fn matrix(v: &Value) -> Vec<Vec<f64>> {
    serde_json::from_value(v.clone()).unwrap()
}

fn tensor2(rows: &[Vec<f64>]) -> Tensor {
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, rows[0].len() as i64])
}

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

fn assert_close(got: &[f64], expected: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert!((g - e).abs() <= tol, "{what}[{i}]: got {g}, expected {e}");
    }
}

fn params(loss_type: LossType, eps_low: f64, eps_high: f64, beta: f64) -> LossParams {
    LossParams { loss_type, epsilon_low: eps_low, epsilon_high: eps_high, beta, tis_cap: None }
}

/// Loss and gradient with respect to the log-probs.
fn loss_and_grad(
    logprobs: &Tensor,
    old: Option<&Tensor>,
    reference: Option<&Tensor>,
    advantages: &Tensor,
    mask: &Tensor,
    p: &LossParams,
    normalizer: &Normalizer,
) -> (f64, Vec<f64>, aha_grpo::LossStats) {
    let x = logprobs.detach().set_requires_grad(true);
    let out = policy_loss(
        &LossInputs {
            logprobs: &x,
            old_logprobs: old,
            ref_logprobs: reference,
            advantages,
            mask,
            entropies: None,
            behaviour_logprobs: None,
        },
        p,
        normalizer,
    )
    .unwrap();
    out.loss.backward();
    (out.loss.double_value(&[]), values(&x.grad()), out.stats)
}

#[test]
fn mu1_aggregations_by_hand() {
    // Two completions, T = 2: the first has 2 tokens and A = +1, the second 1 token and A = -2.
    // With mu = 1, rho = 1, so L_it = -A_i: tokens (-1, -1) and (+2).
    // grpo:    token means -1 and 2, mean over B = 2: 0.5. dL/dlogp_it = -A_i / (B |o_i|):
    //          -1/4 on the first row, +2/2 = 1 on the second.
    // bnpo/dapo: (-1 - 1 + 2) / 3 = 0; gradient -A_i / 3.
    // dr_grpo (max_len 4): 0 / (2 * 4) = 0; gradient -A_i / 8.
    let logprobs = tensor2(&[vec![-0.5, -1.5], vec![-0.7, -2.0]]);
    let mask = Tensor::from_slice(&[true, true, true, false]).view([2, 2]);
    let advantages = Tensor::from_slice(&[1.0f64, -2.0]);
    let norm = Normalizer::of_mask(&mask, 4);
    let cases = [
        (LossType::Grpo, 0.5, [-0.25, -0.25, 1.0, 0.0]),
        (LossType::Bnpo, 0.0, [-1.0 / 3.0, -1.0 / 3.0, 2.0 / 3.0, 0.0]),
        (LossType::Dapo, 0.0, [-1.0 / 3.0, -1.0 / 3.0, 2.0 / 3.0, 0.0]),
        (LossType::DrGrpo, 0.0, [-0.125, -0.125, 0.25, 0.0]),
    ];
    for (loss_type, loss, grad) in cases {
        let (l, g, stats) =
            loss_and_grad(&logprobs, None, None, &advantages, &mask, &params(loss_type, 0.2, 0.2, 0.0), &norm);
        assert!((l - loss).abs() < 1e-12, "{loss_type:?}: {l}");
        assert_close(&g, &grad, 1e-12, loss_type.name());
        assert_eq!(stats.tokens, 3.0);
        assert_eq!(stats.clipped_region, 0.0);
    }
}

#[test]
fn clipping_by_hand() {
    // Completion 1 (A = +1): rho = 1.5 and 0.5. Completion 2 (A = -1): rho = 0.5 and 1.5.
    // eps_low = 0.2, eps_high = 0.28, so clip(rho) is 1.28 or 0.8.
    //   rho 1.5, A +1: -min(1.5, 1.28)   = -1.28, clipped above: gradient 0
    //   rho 0.5, A +1: -min(0.5, 0.8)    = -0.5,  unclipped: d/dlogp = -A * rho = -0.5
    //   rho 0.5, A -1: -min(-0.5, -0.8)  =  0.8,  clipped below: gradient 0
    //   rho 1.5, A -1: -min(-1.5, -1.28) =  1.5,  unclipped: d/dlogp = -A * rho = 1.5
    // grpo: token means (-1.28 - 0.5) / 2 = -0.89 and (0.8 + 1.5) / 2 = 1.15; loss (-0.89 +
    // 1.15) / 2 = 0.13; gradients divided by B * |o_i| = 4: [0, -0.125, 0, 0.375].
    // Clip fractions over 4 tokens: low 1/4, high 1/4, region 2/4.
    let old = tensor2(&[vec![0.0, 0.0], vec![0.0, 0.0]]);
    let (a, b) = (1.5f64.ln(), 0.5f64.ln());
    let logprobs = tensor2(&[vec![a, b], vec![b, a]]);
    let mask = Tensor::ones([2, 2], (Kind::Bool, tch::Device::Cpu));
    let advantages = Tensor::from_slice(&[1.0f64, -1.0]);
    let p = params(LossType::Grpo, 0.2, 0.28, 0.0);
    let (l, g, stats) =
        loss_and_grad(&logprobs, Some(&old), None, &advantages, &mask, &p, &Normalizer::of_mask(&mask, 8));
    assert!((l - 0.13).abs() < 1e-12, "{l}");
    assert_close(&g, &[0.0, -0.125, 0.0, 0.375], 1e-12, "grad");
    assert_eq!(
        (stats.clip_low_fraction(), stats.clip_high_fraction(), stats.clip_region_fraction()),
        (0.25, 0.25, 0.5)
    );
}

#[test]
fn kl_by_hand() {
    // One token, mu = 1, A = 0, ref - theta = ln 2: KL = 2 - ln 2 - 1 = 0.3068528194400547,
    // dKL/dtheta = 1 - exp(ref - theta) = -1. With beta = 0.5: loss 0.15342640972002735,
    // gradient -0.5.
    let logprobs = tensor2(&[vec![-1.0]]);
    let reference = tensor2(&[vec![-1.0 + 2f64.ln()]]);
    let mask = Tensor::ones([1, 1], (Kind::Bool, tch::Device::Cpu));
    let advantages = Tensor::from_slice(&[0.0f64]);
    let p = params(LossType::Dapo, 0.2, 0.2, 0.5);
    let (l, g, stats) =
        loss_and_grad(&logprobs, None, Some(&reference), &advantages, &mask, &p, &Normalizer::of_mask(&mask, 1));
    assert!((l - 0.5 * (1.0 - 2f64.ln())).abs() < 1e-12, "{l}");
    assert_close(&g, &[-0.5], 1e-12, "grad");
    assert!((stats.kl_mean() - (1.0 - 2f64.ln())).abs() < 1e-12);
}

#[test]
fn garbage_at_masked_positions_never_leaks() {
    // Padding may hold anything: -inf log-probs, NaN reference values. Neither the loss nor the
    // gradient may see them, and an all-empty batch gives 0, not NaN.
    let logprobs = tensor2(&[vec![-1.0, f64::NEG_INFINITY], vec![-0.5, -0.25]]);
    let old = tensor2(&[vec![-1.1, 50.0], vec![-0.4, -0.3]]);
    let reference = tensor2(&[vec![-0.9, f64::NAN], vec![-0.5, -0.2]]);
    let mask = Tensor::from_slice(&[1.0f64, 0.0, 1.0, 1.0]).view([2, 2]);
    let advantages = Tensor::from_slice(&[0.5f64, -0.5]);
    for loss_type in LossType::ALL {
        let p = params(loss_type, 0.2, 0.28, 0.1);
        let (l, g, stats) = loss_and_grad(
            &logprobs,
            Some(&old),
            Some(&reference),
            &advantages,
            &mask,
            &p,
            &Normalizer::of_mask(&mask, 4),
        );
        assert!(l.is_finite() && g.iter().all(|x| x.is_finite()), "{loss_type:?}: {l} {g:?}");
        assert_eq!(g[1], 0.0);
        assert!(stats.kl_sum.is_finite());
        let empty = Tensor::zeros([2, 2], (Kind::Double, tch::Device::Cpu));
        let (l, g, _) = loss_and_grad(
            &logprobs,
            Some(&old),
            Some(&reference),
            &advantages,
            &empty,
            &p,
            &Normalizer::of_mask(&empty, 4),
        );
        assert_eq!(l, 0.0, "{loss_type:?}");
        assert!(g.iter().all(|&x| x == 0.0));
    }
}

struct Fixture {
    logprobs: Tensor,
    old: Tensor,
    reference: Tensor,
    advantages: Tensor,
    mask: Tensor,
    max_len: usize,
    cases: Vec<Value>,
}

fn fixture() -> Fixture {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/loss.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let advantages: Vec<f64> = serde_json::from_value(v["advantages"].clone()).unwrap();
    Fixture {
        logprobs: tensor2(&matrix(&v["logprobs"])),
        old: tensor2(&matrix(&v["old_logprobs"])),
        reference: tensor2(&matrix(&v["ref_logprobs"])),
        advantages: Tensor::from_slice(&advantages),
        mask: tensor2(&matrix(&v["mask"])),
        max_len: v["max_completion_length"].as_u64().unwrap() as usize,
        cases: v["cases"].as_array().unwrap().clone(),
    }
}

fn case_params(case: &Value) -> LossParams {
    let loss_type: LossType = serde_json::from_value(case["loss_type"].clone()).unwrap();
    params(
        loss_type,
        case["epsilon_low"].as_f64().unwrap(),
        case["epsilon_high"].as_f64().unwrap(),
        case["beta"].as_f64().unwrap(),
    )
}

#[test]
fn matches_trl_reference_loss_gradient_and_metrics() {
    let f = fixture();
    assert_eq!(f.cases.len(), 16);
    let norm = Normalizer::of_mask(&f.mask, f.max_len);
    for case in &f.cases {
        let name = case["name"].as_str().unwrap();
        let p = case_params(case);
        let old = case["with_old"].as_bool().unwrap().then_some(&f.old);
        let reference = case["with_ref"].as_bool().unwrap().then_some(&f.reference);
        let (l, g, stats) = loss_and_grad(&f.logprobs, old, reference, &f.advantages, &f.mask, &p, &norm);
        let expected_grad: Vec<f64> = matrix(&case["expected_grad"]).concat();
        assert!((l - case["expected_loss"].as_f64().unwrap()).abs() < 1e-6, "{name}: loss {l}");
        assert_close(&g, &expected_grad, 1e-6, name);
        let m = &case["expected_metrics"];
        assert!((stats.clip_low_fraction() - m["clip_low"].as_f64().unwrap()).abs() < 1e-12, "{name}");
        assert!((stats.clip_high_fraction() - m["clip_high"].as_f64().unwrap()).abs() < 1e-12, "{name}");
        assert!((stats.clip_region_fraction() - m["clip_region"].as_f64().unwrap()).abs() < 1e-12, "{name}");
        if let Some(kl) = m["kl"].as_f64() {
            assert!((stats.kl_mean() - kl).abs() < 1e-12, "{name}: kl {}", stats.kl_mean());
        }
    }
}

#[test]
fn micro_batches_with_the_batch_normalizer_add_up_to_the_batch() {
    // Rows {0, 1} and {2, 3, 4} as two micro-batches, each divided by the whole batch's sizes:
    // the losses add up to the batch loss and the gradients are the batch gradient, for every
    // loss type (bnpo included: with the batch normaliser it is the batch's bnpo).
    let f = fixture();
    let norm = Normalizer::of_mask(&f.mask, f.max_len);
    for case in &f.cases {
        let name = case["name"].as_str().unwrap();
        let p = case_params(case);
        let with_old = case["with_old"].as_bool().unwrap();
        let with_ref = case["with_ref"].as_bool().unwrap();
        let (full_loss, full_grad, full_stats) = loss_and_grad(
            &f.logprobs,
            with_old.then_some(&f.old),
            with_ref.then_some(&f.reference),
            &f.advantages,
            &f.mask,
            &p,
            &norm,
        );
        let (mut loss, mut grad, mut stats) = (0.0, Vec::new(), aha_grpo::LossStats::default());
        for (start, len) in [(0, 2), (2, 3)] {
            let rows = |t: &Tensor| t.narrow(0, start, len);
            let (old, reference) = (rows(&f.old), rows(&f.reference));
            let (l, g, s) = loss_and_grad(
                &rows(&f.logprobs),
                with_old.then_some(&old),
                with_ref.then_some(&reference),
                &rows(&f.advantages),
                &rows(&f.mask),
                &p,
                &norm,
            );
            loss += l;
            grad.extend(g);
            stats.add(&s);
        }
        assert!((loss - full_loss).abs() < 1e-12, "{name}: {loss} vs {full_loss}");
        assert_close(&grad, &full_grad, 1e-12, name);
        assert_eq!(stats.tokens, full_stats.tokens);
        assert_eq!(stats.clipped_region, full_stats.clipped_region);
    }
}

#[test]
fn fp32_inputs_agree_with_the_fp64_reference() {
    let f = fixture();
    let to32 = |t: &Tensor| t.to_kind(Kind::Float);
    let mask = to32(&f.mask);
    let norm = Normalizer::of_mask(&mask, f.max_len);
    for case in &f.cases {
        let name = case["name"].as_str().unwrap();
        let (old, reference) = (to32(&f.old), to32(&f.reference));
        let (l, g, _) = loss_and_grad(
            &to32(&f.logprobs),
            case["with_old"].as_bool().unwrap().then_some(&old),
            case["with_ref"].as_bool().unwrap().then_some(&reference),
            &to32(&f.advantages),
            &mask,
            &case_params(case),
            &norm,
        );
        assert!((l - case["expected_loss"].as_f64().unwrap()).abs() < 1e-5, "{name}: loss {l}");
        assert_close(&g, &matrix(&case["expected_grad"]).concat(), 1e-5, name);
    }
}

/// Truncated importance sampling (`tis_cap`) against TRL's vLLM importance-sampling correction
/// ("token_truncate": each token's clipped term times min(exp(old - sampler), cap), the KL term
/// not reweighted), on the fixture's batch with the sampler's log-probs ~0.4 away.
#[test]
fn truncated_importance_sampling_matches_trl() {
    let f = fixture();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/loss.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let cases = v["tis_cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    let norm = Normalizer::of_mask(&f.mask, f.max_len);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let p = LossParams { tis_cap: case["tis_cap"].as_f64(), ..case_params(case) };
        let old = case["with_old"].as_bool().unwrap().then_some(&f.old);
        let reference = case["with_ref"].as_bool().unwrap().then_some(&f.reference);
        let behaviour = tensor2(&matrix(&case["behaviour_logprobs"]));
        let x = f.logprobs.detach().set_requires_grad(true);
        let inputs = LossInputs {
            logprobs: &x,
            old_logprobs: old,
            ref_logprobs: reference,
            advantages: &f.advantages,
            mask: &f.mask,
            entropies: None,
            behaviour_logprobs: Some(&behaviour),
        };
        let out = policy_loss(&inputs, &p, &norm).unwrap();
        out.loss.backward();
        let l = out.loss.double_value(&[]);
        assert!((l - case["expected_loss"].as_f64().unwrap()).abs() < 1e-6, "{name}: loss {l}");
        assert_close(&values(&x.grad()), &matrix(&case["expected_grad"]).concat(), 1e-6, name);
        // Without the cap the loss differs: the weights mattered.
        let plain = policy_loss(&LossInputs { behaviour_logprobs: None, ..inputs }, &p, &norm).unwrap();
        assert!((plain.loss.double_value(&[]) - l).abs() > 1e-3, "{name}");
    }
}
