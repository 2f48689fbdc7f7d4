//! AdamW, gradient clipping and the schedule against torch.optim.AdamW, clip_grad_norm_ and
//! transformers' schedules (`fixtures/adamw.json`, written by `make_fixtures.py`), and the
//! optimizer state's save/restore.

use aha_grpo::{AdamW, AdamWConfig, LrSchedule, ScheduleKind};
use serde_json::Value;
use tch::{Kind, Tensor};

fn tensor(v: &Value, shape: &[i64]) -> Tensor {
    fn flatten(v: &Value, out: &mut Vec<f32>) {
        match v {
            Value::Array(items) => items.iter().for_each(|x| flatten(x, out)),
            x => out.push(x.as_f64().unwrap() as f32),
        }
    }
    let mut flat = Vec::new();
    flatten(v, &mut flat);
    Tensor::from_slice(&flat).view(shape)
}

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.detach().flatten(0, -1)).unwrap()
}

/// Gives `param` exactly the gradient `grad` (the gradient of sum(param * grad)).
fn set_grad(param: &Tensor, grad: &Tensor) {
    (param * grad).sum(Kind::Float).backward();
}

struct Case {
    value: Value,
    names: Vec<String>,
    shapes: Vec<Vec<i64>>,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/adamw.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let shapes = c["shapes"].as_object().unwrap();
            let mut names: Vec<String> = shapes.keys().cloned().collect();
            names.sort();
            let shapes = names.iter().map(|n| serde_json::from_value(shapes[n].clone()).unwrap()).collect();
            Case { value: c.clone(), names, shapes }
        })
        .collect()
}

impl Case {
    fn params(&self) -> Vec<(String, Tensor)> {
        self.names
            .iter()
            .zip(&self.shapes)
            .map(|(n, s)| (n.clone(), tensor(&self.value["initial"][n], s).set_requires_grad(true)))
            .collect()
    }

    fn config(&self) -> AdamWConfig {
        let c = &self.value;
        AdamWConfig {
            beta1: c["betas"][0].as_f64().unwrap(),
            beta2: c["betas"][1].as_f64().unwrap(),
            eps: c["eps"].as_f64().unwrap(),
            weight_decay: c["weight_decay"].as_f64().unwrap(),
        }
    }

    fn schedule(&self) -> LrSchedule {
        let c = &self.value;
        LrSchedule {
            lr: c["lr"].as_f64().unwrap(),
            warmup_steps: c["warmup_steps"].as_u64().unwrap(),
            kind: serde_json::from_value(c["schedule"].clone()).unwrap(),
            min_lr_ratio: c["min_lr_ratio"].as_f64().unwrap(),
            total_steps: c["total_steps"].as_u64().unwrap(),
        }
    }

    /// Runs steps `range` of the fixture on `opt`, checking lr, norm and parameters after each
    /// against torch's, within the rounding that another CPU's kernels may change (see
    /// [`within_ulps`]).
    fn run(&self, opt: &mut AdamW, params: &[(String, Tensor)], range: std::ops::Range<usize>) {
        let name = self.value["name"].as_str().unwrap();
        let max_norm = self.value["max_grad_norm"].as_f64().unwrap();
        let lr_peak = self.value["lr"].as_f64().unwrap() as f32;
        let elements: usize = self.shapes.iter().map(|s| s.iter().product::<i64>() as usize).sum();
        let schedule = self.schedule();
        for step in range {
            let record = &self.value["steps"][step];
            opt.zero_grad();
            for ((n, p), s) in params.iter().zip(&self.shapes) {
                set_grad(p, &tensor(&record["grads"][n], s));
            }
            let lr = schedule.lr_at(step as u64);
            assert_eq!(lr, record["lr"].as_f64().unwrap(), "{name} step {step}: lr");
            let norm = if max_norm > 0.0 { opt.clip_grad_norm(max_norm) } else { opt.grad_norm() };
            let expected_norm = record["grad_norm"].as_f64().unwrap() as f32;
            // A sum of n squares in fp32, in whatever order the CPU's vector width gives: within
            // n units of rounding of each other (the bound of recursive summation), relative.
            let norm_error = ((norm as f32) - expected_norm).abs();
            assert!(
                norm_error <= elements as f32 * f32::EPSILON / 2.0 * expected_norm,
                "{name} step {step}: gradient norm {norm} vs torch's {expected_norm}"
            );
            opt.step(lr);
            for ((n, p), s) in params.iter().zip(&self.shapes) {
                let expected = values(&tensor(&record["params_after"][n], s));
                for (i, (g, e)) in values(p).iter().zip(&expected).enumerate() {
                    assert!(
                        within_ulps(*g, *e, lr_peak, step + 1),
                        "{name} step {step}: {n}[{i}] = {g}, torch {e} (off by {:e})",
                        (g - e).abs()
                    );
                }
            }
        }
    }
}

/// Units of rounding one AdamW step may move an element by on another CPU. Each step runs a
/// handful of elementwise operations (lerp, addcmul, sqrt, addcdiv, the decay) whose vector and
/// scalar versions round differently, with or without fused multiply-adds, depending on the
/// CPU's vector width: each may differ by an ulp of the value or of the update, whose scale is
/// the learning rate. A difference stays in the weights and moments, so `steps` steps may carry
/// `steps` times as much. Any real mistake (a wrong bias correction, decay or clip) is off by
/// far more than this: thousands of ulps from the first step.
const ULPS_PER_STEP: f32 = 4.0;

/// Whether `ours` is within the rounding of `steps` AdamW steps of `torch` (see [`ULPS_PER_STEP`]).
fn within_ulps(ours: f32, torch: f32, lr: f32, steps: usize) -> bool {
    let scale = torch.abs().max(lr);
    let ulp = f32::from_bits(scale.to_bits() + 1) - scale;
    (ours - torch).abs() <= ULPS_PER_STEP * steps as f32 * ulp
}

#[test]
fn matches_torch_adamw_clip_and_schedule() {
    for case in cases() {
        let params = case.params();
        let mut opt = AdamW::new(params.iter().map(|(n, t)| (n.clone(), t.shallow_clone())), case.config());
        let steps = case.value["steps"].as_array().unwrap().len();
        case.run(&mut opt, &params, 0..steps);
        assert_eq!(opt.step_count(), steps as i64);
    }
}

#[test]
fn saved_state_resumes_exactly() {
    // 3 steps, save the state to a file, rebuild the optimizer over the same weights, load the state and
    // run the remaining steps: bit for bit the weights of the uninterrupted run on this machine
    // (and both near torch's).
    let dir = tempfile::tempdir().unwrap();
    for case in cases() {
        let steps = case.value["steps"].as_array().unwrap().len();
        let straight = case.params();
        let mut opt = AdamW::new(straight.iter().map(|(n, t)| (n.clone(), t.shallow_clone())), case.config());
        case.run(&mut opt, &straight, 0..steps);

        let params = case.params();
        let path = dir.path().join("optimizer.safetensors");
        {
            let mut opt = AdamW::new(params.iter().map(|(n, t)| (n.clone(), t.shallow_clone())), case.config());
            case.run(&mut opt, &params, 0..3);
            opt.save(&path).unwrap();
        }
        let mut resumed = AdamW::new(params.iter().map(|(n, t)| (n.clone(), t.shallow_clone())), case.config());
        resumed.load(&path).unwrap();
        assert_eq!(resumed.step_count(), 3);
        case.run(&mut resumed, &params, 3..steps);
        for ((n, a), (_, b)) in straight.iter().zip(&params) {
            assert_eq!(values(a), values(b), "{n}: the resumed run differs from the straight one");
        }
    }
}

#[test]
fn load_state_rejects_mismatches() {
    let case = &cases()[0];
    let params = case.params();
    let mut opt = AdamW::new(params.iter().map(|(n, t)| (n.clone(), t.shallow_clone())), case.config());
    let state = opt.state_tensors();
    assert_eq!(state.len(), 1 + 2 * params.len());
    assert!(state.iter().any(|(n, _)| n == "exp_avg_sq.model.norm.weight"));

    let missing: Vec<(String, Tensor)> = state.iter().skip(1).map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
    assert!(opt.load_state(&missing).unwrap_err().to_string().contains("no `step` tensor"));

    let mut wrong_shape: Vec<(String, Tensor)> = state.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
    wrong_shape[1].1 = Tensor::zeros([2], (Kind::Float, tch::Device::Cpu));
    let e = opt.load_state(&wrong_shape).unwrap_err().to_string();
    assert!(e.contains("has shape [2]"), "{e}");

    let mut extra: Vec<(String, Tensor)> = state.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
    extra.push(("exp_avg.lm_head.weight".into(), Tensor::zeros([1], (Kind::Float, tch::Device::Cpu))));
    let e = opt.load_state(&extra).unwrap_err().to_string();
    assert!(e.contains("unknown: exp_avg.lm_head.weight"), "{e}");
    assert_eq!(opt.step_count(), 0);
}

#[test]
fn lr_zero_and_no_gradient_leave_weights_alone() {
    let case = &cases()[0];
    let params = case.params();
    let before: Vec<Vec<f32>> = params.iter().map(|(_, p)| values(p)).collect();
    let mut opt = AdamW::new(params.iter().map(|(n, t)| (n.clone(), t.shallow_clone())), case.config());
    opt.step(1.0); // no gradients yet: nothing moves
    for ((n, p), s) in params.iter().zip(&case.shapes) {
        set_grad(p, &tensor(&case.value["steps"][0]["grads"][n], s));
    }
    opt.step(0.0); // weight decay times lr 0 is no decay either
    let after: Vec<Vec<f32>> = params.iter().map(|(_, p)| values(p)).collect();
    assert_eq!(before, after);
    assert_eq!(opt.step_count(), 2);
}

#[test]
fn constant_schedule_with_warmup() {
    let s = LrSchedule { lr: 2e-5, warmup_steps: 3, kind: ScheduleKind::Constant, min_lr_ratio: 0.0, total_steps: 9 };
    let got: Vec<f64> = (0..5).map(|i| s.lr_at(i)).collect();
    assert_eq!(got, vec![0.0, 2e-5 * (1.0 / 3.0), 2e-5 * (2.0 / 3.0), 2e-5, 2e-5]);
}
