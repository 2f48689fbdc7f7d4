//! LoRA adapters on the decoder's linear layers (Hu et al. 2021, "LoRA: Low-Rank Adaptation of
//! Large Language Models"), read and written in PEFT's format.
//!
//! An adapted layer computes `y = x·Wᵀ + b + s·(dropout(x)·Aᵀ)·Bᵀ` with A `[r, in]`, B `[out, r]`
//! and s = alpha / r, or alpha / √r with rank-stabilised scaling (Kalajdzievski 2023, "A Rank
//! Stabilization Scaling Factor for Fine-Tuning with LoRA"). A fresh adapter starts as PEFT's
//! default initialisation: A as `kaiming_uniform_(a = √5)`, which is U(−1/√in, 1/√in), and B = 0,
//! so the adapted model starts equal to its base. Adapters are fp32 whatever the base's dtype: the
//! input is cast to fp32 for the adapter's products and the sum is cast back, as PEFT does.
//!
//! The base weights stay frozen (loaded without gradients) and unmerged: a pass can switch the
//! adapters off ([`CausalLM::without_adapters`]) and is then the base model, which is how GRPO's
//! KL term gets its reference log-probs without a second copy of the weights.
//!
//! Files: `adapter_model.safetensors` with PEFT's key names
//! (`base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight`, …) and
//! `adapter_config.json`, so that `peft.PeftModel.from_pretrained(base, dir)` loads what
//! [`CausalLM::save_adapter`] writes and [`CausalLM::load_adapter`] reads what PEFT's
//! `save_pretrained` writes. [`CausalLM::merge_adapters`] folds them into the base weights
//! (`W += s·B·A`, PEFT's `merge_and_unload`).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Kind, Tensor};

use crate::checkpoint::{write_safetensors_file, Checkpoint};
use crate::decoder::{CausalLM, Linear, LoadOptions};
use crate::error::{io_error, ModelError, Result};

/// The adapter's weights, as PEFT names the file.
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// The adapter's configuration, as PEFT names the file.
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
/// Prefix of every adapter tensor: PEFT's `PeftModel` wraps the transformers model
/// (`base_model.model`), whose decoder is `model`.
const KEY_PREFIX: &str = "base_model.model.model.layers";

/// `[lora]`: the adapters to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank of each adapter (at least 1). Default 8, as PEFT's.
    #[serde(default = "default_rank")]
    pub r: usize,
    /// The update is scaled by alpha / r (alpha / √r with `use_rslora`). Default 8, as PEFT's
    /// `lora_alpha`.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Dropout on the adapter's input in training passes (PEFT's `lora_dropout`), in [0, 1).
    /// Default 0.
    #[serde(default)]
    pub dropout: f64,
    /// The adapted layers, by PEFT's names (`q_proj`, `k_proj`, `v_proj`, `o_proj`, `gate_proj`,
    /// `up_proj`, `down_proj`) or `"all-linear"` (all of them; never the LM head, as in PEFT).
    /// Default `["q_proj", "v_proj"]`, PEFT's default for Qwen2, Llama and Qwen3.
    #[serde(default)]
    pub target_modules: TargetModules,
    /// Scale by alpha / √r instead of alpha / r. Default false.
    #[serde(default)]
    pub use_rslora: bool,
    /// Generate (GRPO's rollouts and evaluations) on a copy of the model with the adapters merged
    /// into its weights, refreshed after every update, instead of through the adapters. Default
    /// false: the fused decode step applies adapters itself, and at Qwen2.5-0.5B's size the copy
    /// cost more (its refresh, and 2.8 GB) than it saved (bench/compare_lora.sh). (Not part of
    /// PEFT's file.)
    #[serde(default)]
    pub merge_for_generation: bool,
}

fn default_rank() -> usize {
    8
}

fn default_alpha() -> f64 {
    8.0
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            r: default_rank(),
            alpha: default_alpha(),
            dropout: 0.0,
            target_modules: TargetModules::default(),
            use_rslora: false,
            merge_for_generation: false,
        }
    }
}

impl LoraConfig {
    /// s of `y = x·Wᵀ + s·x·Aᵀ·Bᵀ`.
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    /// The first value out of range, as `(key, message)`.
    pub fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        if self.r == 0 {
            return Err(("r", "must be at least 1, got 0".into()));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(("alpha", format!("must be a finite number > 0, got {}", self.alpha)));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(("dropout", format!("must be in [0, 1), got {}", self.dropout)));
        }
        if self.target_modules.0.is_empty() {
            return Err(("target_modules", "names no layer".into()));
        }
        Ok(())
    }
}

/// A linear layer of a decoder layer that LoRA can adapt, by PEFT's (and transformers') name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Projection {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Projection {
    pub const ALL: [Projection; 7] = [
        Projection::Q,
        Projection::K,
        Projection::V,
        Projection::O,
        Projection::Gate,
        Projection::Up,
        Projection::Down,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Projection::Q => "q_proj",
            Projection::K => "k_proj",
            Projection::V => "v_proj",
            Projection::O => "o_proj",
            Projection::Gate => "gate_proj",
            Projection::Up => "up_proj",
            Projection::Down => "down_proj",
        }
    }

    /// The sub-module of a decoder layer that holds it.
    fn module(self) -> &'static str {
        match self {
            Projection::Q | Projection::K | Projection::V | Projection::O => "self_attn",
            Projection::Gate | Projection::Up | Projection::Down => "mlp",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// The layers `[lora]` adapts (see [`LoraConfig::target_modules`]): a list of names or
/// `"all-linear"`, kept sorted and without repeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TargetModulesRepr", into = "Vec<String>")]
pub struct TargetModules(Vec<Projection>);

#[derive(Deserialize)]
#[serde(untagged)]
enum TargetModulesRepr {
    One(String),
    Many(Vec<String>),
}

impl TargetModules {
    pub fn all() -> Self {
        Self(Projection::ALL.to_vec())
    }

    pub fn projections(&self) -> &[Projection] {
        &self.0
    }

    /// Parses PEFT's names, or `"all-linear"`.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> std::result::Result<Self, String> {
        let mut projections = Vec::new();
        for name in names {
            match (name.as_ref(), Projection::from_name(name.as_ref())) {
                ("all-linear", _) => projections.extend(Projection::ALL),
                (_, Some(p)) => projections.push(p),
                (name, None) => {
                    let known: Vec<&str> = Projection::ALL.iter().map(|p| p.name()).collect();
                    return Err(format!(
                        "target module \"{name}\" matches no layer of these models (expected {} or \"all-linear\")",
                        known.join(", ")
                    ));
                }
            }
        }
        projections.sort();
        projections.dedup();
        Ok(Self(projections))
    }
}

impl Default for TargetModules {
    fn default() -> Self {
        Self(vec![Projection::Q, Projection::V])
    }
}

impl TryFrom<TargetModulesRepr> for TargetModules {
    type Error = String;
    fn try_from(repr: TargetModulesRepr) -> std::result::Result<Self, String> {
        match repr {
            TargetModulesRepr::One(name) => Self::parse(&[name]),
            TargetModulesRepr::Many(names) => Self::parse(&names),
        }
    }
}

impl From<TargetModules> for Vec<String> {
    fn from(targets: TargetModules) -> Vec<String> {
        targets.0.iter().map(|p| p.name().to_string()).collect()
    }
}

/// One layer's adapter: A `[r, in]`, B `[out, r]` (fp32, the variables of [`Adapters::vars`])
/// and the scaling and dropout they apply with.
pub(crate) struct Adapter {
    a: Tensor,
    b: Tensor,
    scaling: f64,
    dropout: f64,
    /// Where its dropout masks come from (shared by the model's adapters).
    masks: Arc<DropoutStream>,
}

impl Adapter {
    /// `y + s·(dropout(x)·Aᵀ)·Bᵀ`, `y` being the base layer's output for `x`; `y` itself when
    /// adapters are off on this thread. Dropout only in passes that record gradients.
    pub(crate) fn add_to(&self, y: Tensor, x: &Tensor, grad_enabled: bool) -> Tensor {
        if !adapters_on() {
            return y;
        }
        let mut x = x.to_kind(Kind::Float);
        if self.dropout > 0.0 && grad_enabled && self.a.requires_grad() {
            x = self.masks.draw(|| x.dropout(self.dropout, true));
        }
        let delta = self.delta(&x);
        if y.kind() == Kind::Float {
            y + delta
        } else {
            (y.to_kind(Kind::Float) + delta).to_kind(y.kind())
        }
    }

    /// `s·(x·Aᵀ)·Bᵀ` of an fp32 `x`: the adapter's update of the layer's output.
    pub(crate) fn delta(&self, x: &Tensor) -> Tensor {
        x.linear::<&Tensor>(&self.a, None).linear::<&Tensor>(&self.b, None) * self.scaling
    }

    /// s·B·A, the change of the base weight the adapter amounts to, `[out, in]` fp32.
    fn delta_weight(&self) -> Tensor {
        self.b.matmul(&self.a) * self.scaling
    }
}

/// A model's adapters: their configuration and their variables, under PEFT's key names.
pub(crate) struct Adapters {
    pub(crate) config: LoraConfig,
    pub(crate) vars: VarStore,
    masks: Arc<DropoutStream>,
}

/// The dropout masks of a model's adapters: each draw runs on libtorch's generator seeded from
/// the stream's seed and the draw's number, so that the masks depend neither on what other
/// threads draw nor on the past of the process, and a resumed run that sets the same seed for a
/// step draws the same masks (see [`CausalLM::seed_dropout`]).
#[derive(Default)]
struct DropoutStream {
    seed: AtomicU64,
    draws: AtomicU64,
}

impl DropoutStream {
    fn draw<T>(&self, f: impl FnOnce() -> T) -> T {
        let draw = self.draws.fetch_add(1, Ordering::Relaxed);
        seeded(splitmix64(self.seed.load(Ordering::Relaxed) ^ splitmix64(draw)), f)
    }
}

/// One step of the splitmix64 generator (Steele, Lea & Flood 2014): a well-mixed 64-bit hash.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Runs `f` on libtorch's global generator seeded with `seed`, holding a process-wide lock, so
/// that what `f` draws depends on `seed` alone whatever other threads do: every draw aha makes
/// from that generator goes through here.
pub(crate) fn seeded<T>(seed: u64, f: impl FnOnce() -> T) -> T {
    static GENERATOR: Mutex<()> = Mutex::new(());
    let _lock = GENERATOR.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    tch::manual_seed(seed as i64);
    f()
}

thread_local! {
    /// Set while [`CausalLM::without_adapters`] runs on this thread.
    static ADAPTERS_OFF: Cell<bool> = const { Cell::new(false) };
}

fn adapters_on() -> bool {
    !ADAPTERS_OFF.with(Cell::get)
}

/// PEFT's key of one adapter matrix.
fn key(layer: usize, projection: Projection, matrix: char) -> String {
    format!("{KEY_PREFIX}.{layer}.{}.{}.lora_{matrix}.weight", projection.module(), projection.name())
}

/// `(layer, projection, 'A' | 'B')` of a PEFT key, `None` if it is not one of a decoder layer's
/// linear adapters.
fn parse_key(name: &str) -> Option<(usize, Projection, char)> {
    let rest = name.strip_prefix(KEY_PREFIX)?.strip_prefix('.')?;
    let mut parts = rest.split('.');
    let layer = parts.next()?.parse().ok()?;
    let module = parts.next()?;
    let projection = Projection::from_name(parts.next()?)?;
    let matrix = match parts.next()? {
        "lora_A" => 'A',
        "lora_B" => 'B',
        _ => return None,
    };
    (module == projection.module() && parts.next()? == "weight" && parts.next().is_none())
        .then_some((layer, projection, matrix))
}

/// The fields of PEFT's `adapter_config.json` that aha reads; other fields are ignored unless
/// they ask for something aha does not do (checked in [`PeftConfig::check`]).
#[derive(Deserialize)]
struct PeftConfig {
    #[serde(default)]
    peft_type: Option<String>,
    r: usize,
    #[serde(default = "default_alpha")]
    lora_alpha: f64,
    #[serde(default)]
    lora_dropout: f64,
    #[serde(default)]
    target_modules: Option<serde_json::Value>,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    bias: Option<String>,
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

/// Fields of PEFT's LoRA config that change what an adapter computes in ways aha does not
/// implement: an adapter with any of them set (anything but null, false or empty) is refused
/// rather than run wrong.
const UNSUPPORTED_PEFT_FIELDS: [&str; 13] = [
    "use_dora",
    "fan_in_fan_out",
    "lora_bias",
    "use_qalora",
    "use_bdlora",
    "modules_to_save",
    "layers_to_transform",
    "layer_replication",
    "rank_pattern",
    "alpha_pattern",
    "target_parameters",
    "trainable_token_indices",
    "alora_invocation_tokens",
];

impl PeftConfig {
    /// What in the file aha cannot honour, as one message.
    fn check(&self) -> std::result::Result<(), String> {
        use serde_json::Value;
        if let Some(kind) = self.peft_type.as_deref().filter(|t| *t != "LORA") {
            return Err(format!("peft_type \"{kind}\": only LORA adapters are supported"));
        }
        if self.r == 0 {
            return Err("r = 0: an adapter needs a rank of at least 1".into());
        }
        if let Some(bias) = self.bias.as_deref().filter(|b| *b != "none") {
            return Err(format!("bias = \"{bias}\": only adapters without bias terms (\"none\") are supported"));
        }
        for key in UNSUPPORTED_PEFT_FIELDS {
            let set = match self.other.get(key) {
                None | Some(Value::Null) | Some(Value::Bool(false)) => false,
                Some(Value::Array(items)) => !items.is_empty(),
                Some(Value::Object(fields)) => !fields.is_empty(),
                Some(_) => true,
            };
            if set {
                return Err(format!("{key} = {}: not supported by aha's LoRA", self.other[key]));
            }
        }
        Ok(())
    }
}

impl CausalLM {
    /// The adapters' configuration, when the model has adapters.
    pub fn lora(&self) -> Option<&LoraConfig> {
        self.adapters.as_ref().map(|a| &a.config)
    }

    /// Runs `f` with this thread's passes on the base weights alone (the adapters switched off):
    /// the base model, without a copy of it.
    pub fn without_adapters<T>(&self, f: impl FnOnce() -> T) -> T {
        struct Restore(bool);
        impl Drop for Restore {
            fn drop(&mut self) {
                ADAPTERS_OFF.with(|off| off.set(self.0));
            }
        }
        let _restore = Restore(ADAPTERS_OFF.with(|off| off.replace(true)));
        f()
    }

    /// Starts the adapters' dropout masks anew from `seed`: the training loop calls it before
    /// each step with a seed made of the run's and the step's, so that a resumed run draws the
    /// masks the uninterrupted one drew. No effect without adapters.
    pub fn seed_dropout(&self, seed: u64) {
        if let Some(adapters) = &self.adapters {
            adapters.masks.seed.store(seed, Ordering::Relaxed);
            adapters.masks.draws.store(0, Ordering::Relaxed);
        }
    }

    /// Whether this thread's passes use adapters.
    pub(crate) fn adapters_active(&self) -> bool {
        self.adapters.is_some() && adapters_on()
    }

    /// Adds fresh trainable adapters (PEFT's initialisation, A drawn from `seed`) to the layers
    /// `config` names. The base weights are not touched; load them frozen
    /// (`LoadOptions::trainable = false`) so that only the adapters train.
    pub fn add_lora(&mut self, config: &LoraConfig, seed: u64) -> Result<()> {
        config.check().map_err(|(key, message)| ModelError::Input(format!("lora.{key}: {message}")))?;
        let device = self.device();
        let targets = config.target_modules.clone();
        let adapted = |_, projection| targets.0.contains(&projection);
        seeded(seed, || {
            self.attach(config.clone(), true, adapted, |_, _, linear| {
                let (out, inp) = linear.weight_shape();
                let bound = 1.0 / (inp as f64).sqrt();
                let mut a = Tensor::empty([config.r as i64, inp], (Kind::Float, device));
                let _ = a.uniform_(-bound, bound);
                Ok((a, Tensor::zeros([out, config.r as i64], (Kind::Float, device))))
            })
        })
    }

    /// Loads the adapter PEFT's `save_pretrained` (or [`CausalLM::save_adapter`]) wrote in
    /// `dir`, trainable or not. An adapter for another model (a layer or shape this model does
    /// not have) is an error naming the tensor.
    pub fn load_adapter(&mut self, dir: &Path, trainable: bool) -> Result<()> {
        let config_path = dir.join(ADAPTER_CONFIG_FILE);
        let text = std::fs::read_to_string(&config_path).map_err(io_error(&config_path))?;
        let bad = |message: String| ModelError::Config { path: config_path.clone(), message };
        let peft: PeftConfig =
            serde_json::from_str(&text).map_err(|e| bad(format!("not a PEFT adapter config: {e}")))?;
        peft.check().map_err(bad)?;
        let weights_path = dir.join(ADAPTER_WEIGHTS_FILE);
        let checkpoint = Checkpoint::open_file(&weights_path)?;
        let mut found: BTreeMap<(usize, Projection), [bool; 2]> = BTreeMap::new();
        for name in checkpoint.names() {
            let (layer, projection, matrix) = parse_key(name).ok_or_else(|| ModelError::Weights {
                path: weights_path.clone(),
                message: format!(
                    "tensor {name} is not an adapter of a decoder layer's {} (only those are supported)",
                    Projection::ALL.map(Projection::name).join("/")
                ),
            })?;
            if layer >= self.config().num_hidden_layers {
                return Err(ModelError::Weights {
                    path: weights_path.clone(),
                    message: format!(
                        "tensor {name} adapts layer {layer}, but the model has {} layers: an adapter for another base model",
                        self.config().num_hidden_layers
                    ),
                });
            }
            found.entry((layer, projection)).or_default()[usize::from(matrix == 'B')] = true;
        }
        if let Some((&(layer, projection), both)) = found.iter().find(|(_, both)| !both[0] || !both[1]) {
            let missing = if both[0] { 'B' } else { 'A' };
            return Err(ModelError::MissingTensor { name: key(layer, projection, missing), dir: dir.to_path_buf() });
        }
        let mut projections: Vec<Projection> = found.keys().map(|(_, p)| *p).collect();
        projections.sort();
        projections.dedup();
        // PEFT writes short names (`q_proj`) or, for "all-linear", module paths
        // (`model.layers.0.self_attn.q_proj`): a module matches by its last component.
        if let Some(names) = peft.target_modules.as_ref().and_then(serde_json::Value::as_array) {
            let names: Vec<&str> =
                names.iter().filter_map(serde_json::Value::as_str).map(|n| n.rsplit('.').next().unwrap_or(n)).collect();
            TargetModules::parse(&names).map_err(bad)?;
        }
        let config = LoraConfig {
            r: peft.r,
            alpha: peft.lora_alpha,
            dropout: peft.lora_dropout,
            target_modules: TargetModules(projections),
            use_rslora: peft.use_rslora,
            merge_for_generation: false,
        };
        let device = self.device();
        let r = config.r as i64;
        self.attach(config, trainable, |layer, projection| found.contains_key(&(layer, projection)), |layer, projection, linear| {
            let (out, inp) = linear.weight_shape();
            let read = |matrix: char, shape: &[i64]| {
                checkpoint.tensor(&key(layer, projection, matrix), shape, Kind::Float, device).map_err(|e| match e {
                    ModelError::ShapeMismatch { name, expected, found } => ModelError::Weights {
                        path: weights_path.clone(),
                        message: format!(
                            "tensor {name} has shape {found:?}, but this model needs {expected:?} (r = {r}): an adapter for another base model"
                        ),
                    },
                    other => other,
                })
            };
            Ok((read('A', &[r, inp])?, read('B', &[out, r])?))
        })
    }

    /// Writes the adapters as PEFT does: `adapter_model.safetensors` (fp32) and
    /// `adapter_config.json`, and the tokenizer files the model came with.
    pub fn save_adapter(&self, dir: &Path) -> Result<()> {
        let adapters =
            self.adapters.as_ref().ok_or_else(|| ModelError::Input("the model has no adapters to save".into()))?;
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let tensors: Vec<(String, Tensor)> = adapters.vars.variables().into_iter().collect();
        write_safetensors_file(&dir.join(ADAPTER_WEIGHTS_FILE), &tensors, Kind::Float)?;
        let c = &adapters.config;
        let config = serde_json::json!({
            "alpha_pattern": {},
            "auto_mapping": null,
            "base_model_name_or_path": self.source_dir().display().to_string(),
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "layers_pattern": null,
            "layers_to_transform": null,
            // An int, as PEFT types it, when it is one.
            "lora_alpha": if c.alpha.fract() == 0.0 && c.alpha.abs() < 1e15 { serde_json::json!(c.alpha as i64) } else { serde_json::json!(c.alpha) },
            "lora_dropout": c.dropout,
            "modules_to_save": null,
            "peft_type": "LORA",
            "r": c.r,
            "rank_pattern": {},
            "revision": null,
            "target_modules": Vec::<String>::from(c.target_modules.clone()),
            "task_type": "CAUSAL_LM",
            "use_dora": false,
            "use_rslora": c.use_rslora,
        });
        let path = dir.join(ADAPTER_CONFIG_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(&config).expect("json") + "\n").map_err(io_error(&path))?;
        self.write_companion_files(dir)
    }

    /// Folds the adapters into the base weights (`W += s·B·A` in fp32, then cast to the
    /// weights' dtype: PEFT's `merge_and_unload`) and drops them.
    pub fn merge_adapters(&mut self) {
        let Some(adapters) = self.adapters.take() else { return };
        drop(adapters);
        tch::no_grad(|| {
            self.for_each_linear(|_, _, linear| {
                if let Some(adapter) = linear.lora.take() {
                    let mut weight = linear.weight.stored.shallow_clone();
                    let delta = adapter.delta_weight().to_kind(weight.kind());
                    let _ = weight.g_add_(&delta);
                }
                Ok(())
            })
            .expect("merging cannot fail");
        });
    }

    /// A copy of the model for generation, with its adapters merged into the copy's weights and
    /// no adapters of its own, so that generation runs at the base model's speed (the fused
    /// decode step). [`CausalLM::merge_into`] refreshes it after the adapters change. Without
    /// adapters, a plain copy.
    pub fn merged_copy(&self) -> Result<CausalLM> {
        let weights = self.var_store().variables();
        let options = LoadOptions {
            device: self.device(),
            kind: self.kind(),
            compute: Some(self.compute_kind()),
            trainable: false,
        };
        let copy =
            CausalLM::build(&self.source_dir().to_path_buf(), self.config().clone(), options, |name, _, _, _| {
                Ok(tch::no_grad(|| weights[name].detach().copy()))
            })?;
        self.merge_into(&copy);
        Ok(copy)
    }

    /// Writes `W + s·B·A` (in fp32, cast to the weights' dtype) into each adapted layer of
    /// `target`, a [`CausalLM::merged_copy`] of this model: the layers without adapters are the
    /// frozen base's already.
    pub fn merge_into(&self, target: &CausalLM) {
        tch::no_grad(|| {
            for ((_, _, mine), (_, _, theirs)) in self.linears().into_iter().zip(target.linears()) {
                if let Some(adapter) = &mine.lora {
                    let merged = mine.weight.stored.to_kind(Kind::Float) + adapter.delta_weight();
                    let mut weight = theirs.weight.stored.shallow_clone();
                    weight.copy_(&merged);
                }
            }
        });
    }

    /// Adds an adapter to each layer `adapted(layer, projection)` chooses, `(A, B)` from
    /// `make`; on an error, to none.
    fn attach(
        &mut self,
        config: LoraConfig,
        trainable: bool,
        adapted: impl Fn(usize, Projection) -> bool,
        mut make: impl FnMut(usize, Projection, &Linear) -> Result<(Tensor, Tensor)>,
    ) -> Result<()> {
        if self.adapters.is_some() {
            return Err(ModelError::Input("the model already has adapters".into()));
        }
        let vars = VarStore::new(self.device());
        let root = vars.root();
        let (scaling, dropout) = (config.scaling(), config.dropout);
        let masks = Arc::new(DropoutStream::default());
        let mut made = Vec::new();
        let attached = self.for_each_linear(|layer, projection, linear| {
            if adapted(layer, projection) {
                let (a, b) = make(layer, projection, linear)?;
                let path = root
                    .sub("base_model")
                    .sub("model")
                    .sub("model")
                    .sub("layers")
                    .sub(layer)
                    .sub(projection.module())
                    .sub(projection.name());
                let a = path.sub("lora_A").add("weight", a, trainable);
                let b = path.sub("lora_B").add("weight", b, trainable);
                made.push((layer, projection));
                linear.lora = Some(Adapter { a, b, scaling, dropout, masks: Arc::clone(&masks) });
            }
            Ok(())
        });
        if let Err(error) = attached {
            // Leave the model as it was: no layer half adapted.
            self.for_each_linear(|_, _, linear| Ok(linear.lora = None)).expect("clearing cannot fail");
            return Err(error);
        }
        if made.is_empty() {
            return Err(ModelError::Input("lora.target_modules: no layer of this model matches".into()));
        }
        self.adapters = Some(Adapters { config, vars, masks });
        Ok(())
    }
}
