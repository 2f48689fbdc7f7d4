//! The training configuration: one TOML file, `--set key=value` overrides, validation, and the
//! resolved configuration written back to TOML for the run directory.
//!
//! Every section and key is documented here with its default; `docs/config.md` is the same
//! reference for readers of the file. Unknown keys are errors that name the key and its line:
//! `config.toml:12: unknown field `lr_rate`, expected one of `lr`, `betas`, ...`.
//!
//! The file is read (TOML, `--set key=value` overrides, errors with file and line) by
//! `config_file.rs`, which `aha sft`'s configuration shares.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use aha_model::{DTypeName, DeviceName, LoraConfig};
use aha_rollout::{EngineConfig, ToolsConfig};

use crate::advantages::ScaleRewards;
use crate::config_file::parse_toml;
use crate::error::{GrpoError, Result};
use crate::loss::{LossParams, LossType};
use crate::optim::{AdamWConfig, LrSchedule, ScheduleKind};

/// The whole configuration of `aha train`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// `[model]`: the policy checkpoint (required).
    pub model: ModelSource,
    /// `[data]`: the problems (required).
    pub data: DataConfig,
    /// `[sampling]`: how completions are generated.
    #[serde(default)]
    pub sampling: SamplingConfig,
    /// `[rollout]`: where completions are generated (this process, or vLLM/SGLang servers).
    #[serde(default)]
    pub rollout: RolloutConfig,
    /// `[rewards]`: the weighted checkers (required, at least one).
    pub rewards: RewardsConfig,
    /// `[grpo]`: advantages and the loss.
    #[serde(default)]
    pub grpo: GrpoConfig,
    /// `[optim]`: AdamW, schedule, clipping, micro-batches.
    #[serde(default)]
    pub optim: OptimConfig,
    /// `[run]`: length, seed, checkpoints, output.
    #[serde(default)]
    pub run: RunConfig,
    /// `[lora]`: train LoRA adapters on the frozen base instead of every weight. Absent: full
    /// fine-tuning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraConfig>,
    /// `[tools.python]`: let completions run Python in the sandbox mid-generation. Off by default.
    #[serde(default)]
    pub tools: ToolsConfig,
}

/// `[model]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSource {
    /// Folder of a Hugging Face checkpoint (config.json, safetensors, tokenizer.json). Required.
    /// The reference model (beta > 0) is loaded from the same folder.
    pub path: PathBuf,
    /// dtype of the weights and forward passes: `f32`, `bf16` or `f16`. Default `f32`.
    #[serde(default = "default_dtype")]
    pub dtype: DTypeName,
    /// dtype of the matrix products, when narrower than `dtype`: `bf16` over `f32` weights is
    /// mixed precision as `torch.autocast` (or TRL's `bf16 = true`) does it: fp32 weights,
    /// optimizer state, norms and log-softmax; bf16 linear layers, attention, LM head and KV
    /// cache. Several times faster where the CPU has bf16 units (AMX, AVX512-BF16) or on GPUs;
    /// slower on CPUs without them. Default: `dtype`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_dtype: Option<DTypeName>,
    /// `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when available). Default `auto`.
    #[serde(default = "default_device")]
    pub device: DeviceName,
    /// Where the weights come from: `pretrained` (the safetensors in `path`) or `random` (fresh
    /// weights for the architecture of `path/config.json`: then `path` needs only config.json and
    /// tokenizer.json). `random` is for `aha sft` (training from scratch); GRPO needs a policy
    /// that can already sample sensible completions. Default `pretrained`.
    #[serde(default)]
    pub init: ModelInit,
    /// A LoRA adapter folder (PEFT's `adapter_model.safetensors` and `adapter_config.json`) to
    /// continue training, on the frozen base in `path`, with its own rank, alpha and target
    /// modules (so without a `[lora]` section). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<PathBuf>,
}

/// `model.init`: load the checkpoint's weights, or start from fresh ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelInit {
    #[default]
    Pretrained,
    Random,
}

/// `[data]`: where problems come from and how they become prompts (read by aha-datasets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// The training problems: a JSONL, JSON or Parquet file, or a built-in synthetic task,
    /// `builtin:countdown` or `builtin:arithmetic[:key=value,...]` (see aha-datasets'
    /// `BuiltinSpec`: `count`, `seed`, `digits`, `ops`, `numbers`, `max`, ...). Required.
    pub source: String,
    /// The file's shape: `gsm8k`, `math`, `countdown` or `code` (where the question and the gold
    /// answer are). Default: your own data (`question`/`problem`/`prompt` and `answer` columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// Prompt template: `r1` (DeepSeek-R1-Zero's, for base models), `boxed`, `plain`, `chat` (the
    /// tokenizer's chat template around the question), or your own text with `{question}` and
    /// other `{field}` placeholders. Default `r1`.
    #[serde(default = "default_template")]
    pub template: String,
    /// Column overrides, problem field -> column: `question = "prompt"`, `answer = "solution"`,
    /// `id = "uid"`, or any problem field a checker reads. Default empty (the preset's columns).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
    /// A row without what its checker needs is an error instead of a skipped, counted row.
    /// Default `false`.
    #[serde(default)]
    pub strict: bool,
    /// Visit the problems in a new seeded order each epoch (seeded by `run.seed`); `false` keeps
    /// the file's order. Default `true`.
    #[serde(default = "yes")]
    pub shuffle: bool,
    /// Evaluation problems: a file or `builtin:` spec like `source`. Default: none, and then
    /// `eval_count` problems are held out of `source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_source: Option<String>,
    /// How many evaluation problems (held out of `source` when there is no `eval_source`, where
    /// they are never trained on). 0 = no evaluation set. Default 0.
    #[serde(default)]
    pub eval_count: usize,
}

/// `[sampling]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    /// Completions per prompt, G. Default 8; at least 2 (advantages are relative to the group).
    pub group_size: usize,
    /// Prompts per training step; a step trains on `prompts_per_step * group_size` completions.
    /// Default 8.
    pub prompts_per_step: usize,
    /// Sampling temperature T; the trainer divides logits by the same T. Default 1.0; must be > 0.
    pub temperature: f64,
    /// Nucleus sampling: keep the smallest set of tokens with this much probability. Default 1.0
    /// (off).
    pub top_p: f64,
    /// Keep only the k most likely tokens; 0 = off. Default 0.
    pub top_k: usize,
    /// Drop tokens less likely than `min_p` times the most likely one; 0 = off. Default 0.0.
    pub min_p: f64,
    /// Longest completion; a completion that reaches it is truncated. Also dr_grpo's constant
    /// normaliser. Default 256.
    pub max_new_tokens: usize,
    /// Longest prompt, in tokens; longer prompts are skipped (with a warning), not cut. Default 512.
    pub max_prompt_tokens: usize,
    /// Completions also end after any of these strings (kept in the completion), besides the
    /// model's eos tokens: `["</answer>"]` for the R1 format. Default none.
    pub stop_strings: Vec<String>,
    /// Memory the KV cache of all sequences generated together may take at their longest, in
    /// GiB (the generation engine admits sequences up to it). Default 4.
    pub kv_cache_gib: f64,
    /// Most sequences decoded together. Default 256.
    pub max_sequences: usize,
    /// Most (padded) prompt tokens prefilled in one forward pass: bounds a prefill's
    /// activations. Default 16384.
    pub max_prefill_tokens: usize,
}

/// `[rollout]`: the generation backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutConfig {
    /// `engine` (aha's own, in this process, sharing the policy's weights) | `vllm` | `sglang`
    /// (servers started separately; see the README's "Scaling out"). Default `engine`.
    pub backend: BackendKind,
    /// The servers' base URLs, e.g. `["http://10.0.0.5:8000", "http://10.0.0.6:8000"]`.
    /// Required for `vllm` and `sglang`; groups go to the least loaded one.
    pub servers: Vec<String>,
    /// How the servers get each update: `disk` (default: a folder they all read, `sync_dir`) or
    /// `nccl` (broadcast from the trainer's GPU into vLLM's; aha built with `--features nccl`).
    pub sync_method: SyncMethodName,
    /// A folder every server can read at the same path (a shared filesystem): the trainer
    /// writes the policy there after each update and the servers load it. Required for `vllm`
    /// and `sglang` with `sync_method = "disk"`. Only the latest weights are kept.
    pub sync_dir: PathBuf,
    /// Hand the servers the new weights every this many optimizer steps. Default 1 (on-policy up
    /// to the truncated importance sampling of `grpo.tis_cap`).
    pub sync_every: u64,
    /// After each sync every server scores a fixed token sequence; a log-prob further than this
    /// from the trainer's own stops the run (the server is not serving the policy). Default 1e-3
    /// (fp32 on both sides agrees to ~1e-5; bf16 servers need ~0.1).
    pub sync_max_logprob_diff: f64,
    /// The longest one group's request may take on a server, in seconds. Default 600.
    pub request_timeout_s: f64,
    /// 0: every group is generated by the current policy. 1: the servers generate the next
    /// step's groups while the trainer trains on this step's (one update behind; `grpo.tis_cap`
    /// corrects for it). Needs `vllm` or `sglang`. Default 0.
    pub max_staleness: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    #[default]
    Engine,
    Vllm,
    Sglang,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMethodName {
    #[default]
    Disk,
    Nccl,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        Self {
            backend: BackendKind::Engine,
            servers: Vec::new(),
            sync_method: SyncMethodName::Disk,
            sync_dir: PathBuf::new(),
            sync_every: 1,
            sync_max_logprob_diff: 1e-3,
            request_timeout_s: 600.0,
            max_staleness: 0,
        }
    }
}

/// `[rewards]`: the same shape as aha-rewards' `RewardConfig` (`[[rewards.checkers]]` tables),
/// and how many threads judge completions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardsConfig {
    /// Threads that run the checkers while the model generates; 0 = one per CPU. Default 0.
    #[serde(default)]
    pub workers: usize,
    /// The checkers whose weighted sum is the reward. Required, at least one.
    pub checkers: Vec<CheckerConfig>,
}

/// One `[[rewards.checkers]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckerConfig {
    /// A registered checker: `math`, `countdown`, `format`, `format_tags`, `length`, `code`,
    /// `python`, `wasi`, or your own. Required.
    pub name: String,
    /// Weight in the sum. Default 1.0.
    #[serde(default = "one")]
    pub weight: f64,
    /// The checker's options table (see the checker's documentation). Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<toml::Table>,
    /// Name under which the part is reported. Default `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl CheckerConfig {
    /// The name its part is reported under: `label`, else `name`.
    pub fn reported_label(&self) -> String {
        self.label.clone().unwrap_or_else(|| self.name.clone())
    }
}

/// `[grpo]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpoConfig {
    /// `grpo` | `bnpo` | `dr_grpo` | `dapo` (see the loss documentation). Default `dapo`, as in
    /// TRL. In aha `bnpo` normalises by the tokens of the whole batch, which makes it equal to
    /// `dapo` (TRL's per-micro-batch `bnpo` would depend on the micro-batch size).
    pub loss_type: LossType,
    /// `group` | `batch` | `none`: what centred rewards are divided by. Default `group`.
    pub scale_rewards: ScaleRewards,
    /// Lower clip range (rho >= 1 - epsilon). Default 0.2.
    pub epsilon: f64,
    /// Upper clip range (rho <= 1 + epsilon_high); DAPO's clip-higher uses 0.28. Default: equal to
    /// `epsilon` (written out in the resolved config).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epsilon_high: Option<f64>,
    /// Weight of the k3 KL penalty against the initial model; 0 loads no reference model.
    /// Default 0.0.
    pub beta: f64,
    /// Updates per generated batch (mu); old log-probs are computed once before the first.
    /// Default 1.
    pub num_iterations: usize,
    /// Exclude truncated completions (those that hit `max_new_tokens`) from the loss; they still
    /// count in the group statistics. Default `false`.
    pub mask_truncated_completions: bool,
    /// DAPO's dynamic sampling: drop groups whose rewards are all equal and sample more prompts
    /// until the step has `prompts_per_step` groups with signal. Default `false`.
    pub dynamic_sampling: bool,
    /// With dynamic sampling, at most this many extra generation batches per step; when they are
    /// spent the step trains on the groups it has. Default 4.
    pub max_extra_batches: usize,
    /// DAPO's soft overlong penalty, added to the reward; absent = off. Default off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overlong_penalty: Option<OverlongPenalty>,
    /// Truncated importance sampling: each token's loss is weighted by
    /// min(pi_old / pi_sampler, tis_cap), where pi_sampler is what the generation backend
    /// reported. Corrects the gap between a remote server's sampler and the trainer (TRL's vLLM
    /// importance-sampling correction; 2 to 3 is usual). Absent = off. Default off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tis_cap: Option<f64>,
}

/// `[grpo.overlong_penalty]`: 0 up to `max_new_tokens - cache_tokens` tokens, then a linear ramp
/// to `-factor` at `max_new_tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverlongPenalty {
    /// Length of the ramp, in tokens. Required; at most `sampling.max_new_tokens`.
    pub cache_tokens: usize,
    /// Size of the penalty at the maximum length. Default 1.0.
    #[serde(default = "one")]
    pub factor: f64,
}

/// `[optim]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Peak learning rate. Default 1e-6 (TRL's GRPO default).
    pub lr: f64,
    /// AdamW's beta1 and beta2. Default `[0.9, 0.999]`.
    pub betas: [f64; 2],
    /// AdamW's epsilon. Default 1e-8.
    pub eps: f64,
    /// Decoupled weight decay (not applied to biases and norm weights). Default 0.0.
    pub weight_decay: f64,
    /// Linear warm-up from 0 over this many steps. Default 0.
    pub warmup_steps: u64,
    /// `constant` | `cosine` (to `min_lr_ratio * lr` at `run.steps`). Default `constant`.
    pub schedule: ScheduleKind,
    /// Final learning rate of the cosine schedule, as a fraction of `lr`. Default 0.0.
    pub min_lr_ratio: f64,
    /// Clip the global gradient norm to this; 0 = no clipping (the norm is still logged).
    /// Default 1.0.
    pub max_grad_norm: f64,
    /// Completions per forward/backward pass. Gradients are accumulated over micro-batches and
    /// the result does not depend on this (only memory and speed do). Default 8.
    pub micro_batch_size: usize,
}

/// `[run]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Training steps (generation batches). Default 100.
    pub steps: u64,
    /// Seed of everything random: data order, sampling, initialisation of anything new.
    /// Default 42.
    pub seed: u64,
    /// Save a checkpoint every this many steps (and always at the end); 0 = only at the end.
    /// Default 50.
    pub save_every: u64,
    /// Keep the last this many checkpoints; 0 = keep all. Default 3.
    pub keep_last: usize,
    /// The run directory (config, metrics.jsonl, traces.sqlite, checkpoints). Default `runs/aha`.
    pub output_dir: PathBuf,
    /// Every this many steps (and at the last), evaluate on the held-out problems
    /// (`data.eval_count` / `data.eval_source`) and log `eval_accuracy` etc. with that step's
    /// metrics; 0 = never. Default 0.
    pub eval_every: u64,
    /// Temperature of those evaluations; 0 = greedy. Default 0.
    pub eval_temperature: f64,
    /// Completions per held-out problem when `eval_temperature > 0` (accuracy is their mean,
    /// pass@1); greedy evaluation samples one. Default 1.
    pub eval_samples: usize,
    /// Held-out problem i samples from `eval_seed + i`. Default 0.
    pub eval_seed: u64,
}

fn default_dtype() -> DTypeName {
    DTypeName::F32
}

fn default_device() -> DeviceName {
    DeviceName::Auto
}

fn default_template() -> String {
    "r1".into()
}

fn yes() -> bool {
    true
}

fn one() -> f64 {
    1.0
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            group_size: 8,
            prompts_per_step: 8,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            max_new_tokens: 256,
            max_prompt_tokens: 512,
            stop_strings: Vec::new(),
            kv_cache_gib: EngineConfig::default().kv_cache_bytes as f64 / GIB,
            max_sequences: EngineConfig::default().max_sequences,
            max_prefill_tokens: EngineConfig::default().max_prefill_tokens,
        }
    }
}

const GIB: f64 = (1u64 << 30) as f64;

impl SamplingConfig {
    /// The generation engine's limits.
    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            kv_cache_bytes: (self.kv_cache_gib * GIB) as u64,
            max_sequences: self.max_sequences,
            max_prefill_tokens: self.max_prefill_tokens,
        }
    }
}

impl Default for GrpoConfig {
    fn default() -> Self {
        Self {
            loss_type: LossType::Dapo,
            scale_rewards: ScaleRewards::Group,
            epsilon: 0.2,
            epsilon_high: None,
            beta: 0.0,
            num_iterations: 1,
            mask_truncated_completions: false,
            dynamic_sampling: false,
            max_extra_batches: 4,
            overlong_penalty: None,
            tis_cap: None,
        }
    }
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 1e-6,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.0,
            warmup_steps: 0,
            schedule: ScheduleKind::Constant,
            min_lr_ratio: 0.0,
            max_grad_norm: 1.0,
            micro_batch_size: 8,
        }
    }
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            steps: 100,
            seed: 42,
            save_every: 50,
            keep_last: 3,
            output_dir: PathBuf::from("runs/aha"),
            eval_every: 0,
            eval_temperature: 0.0,
            eval_samples: 1,
            eval_seed: 0,
        }
    }
}

impl GrpoConfig {
    /// The upper clip range (`epsilon_high`, or `epsilon` when unset).
    pub fn epsilon_high(&self) -> f64 {
        self.epsilon_high.unwrap_or(self.epsilon)
    }

    pub fn loss_params(&self) -> LossParams {
        LossParams {
            loss_type: self.loss_type,
            epsilon_low: self.epsilon,
            epsilon_high: self.epsilon_high(),
            beta: self.beta,
            tis_cap: self.tis_cap,
        }
    }
}

impl OverlongPenalty {
    /// The amount added to the reward of a completion of `completion_tokens` tokens, in
    /// [-factor, 0].
    pub fn penalty(&self, completion_tokens: usize, max_new_tokens: usize) -> f64 {
        let (len, max, cache) = (completion_tokens as u64, max_new_tokens as u64, self.cache_tokens as u64);
        self.factor * aha_rewards::length::soft_overlong_penalty(len, max, cache)
    }
}

impl ModelSource {
    /// Checks `[model]` with `[lora]`, the rule `aha train` and `aha sft` share.
    pub fn validate_with(&self, lora: Option<&LoraConfig>) -> Result<(), Invalid> {
        if let Some(lora) = lora {
            lora.check().map_err(|(key, message)| Invalid { key: format!("lora.{key}"), message })?;
        }
        check(lora.is_none() || self.adapter.is_none(), "model.adapter", || {
            "continues an adapter with its own r, alpha and target modules: leave [lora] out".into()
        })?;
        check(self.init == ModelInit::Pretrained || (lora.is_none() && self.adapter.is_none()), "model.init", || {
            "= \"random\" trains every weight from scratch, LoRA adapts a pretrained base: drop [lora] or model.adapter"
                .into()
        })
    }

    /// How to load the model: device, dtypes, and whether the weights are trained. (The names
    /// were checked when the file was read.)
    pub fn load_options(&self, trainable: bool) -> aha_model::LoadOptions {
        aha_model::LoadOptions {
            device: self.device.device(),
            kind: self.dtype.kind(),
            compute: self.compute_dtype.map(DTypeName::kind),
            trainable,
        }
    }
}

impl RolloutConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        let remote = self.backend != BackendKind::Engine;
        check(!remote || !self.servers.is_empty(), "rollout.servers", || {
            "needs at least one server URL with backend = \"vllm\" or \"sglang\"".into()
        })?;
        for (i, url) in self.servers.iter().enumerate() {
            check(url.starts_with("http://") || url.starts_with("https://"), &format!("rollout.servers.{i}"), || {
                format!("`{url}` is not an http:// URL")
            })?;
        }
        let nccl = self.sync_method == SyncMethodName::Nccl;
        check(!nccl || aha_rollout::remote::nccl::BUILT_WITH_NCCL, "rollout.sync_method", || {
            aha_rollout::remote::nccl::NOT_BUILT.into()
        })?;
        check(!nccl || self.backend == BackendKind::Vllm, "rollout.sync_method", || {
            "= \"nccl\" needs backend = \"vllm\" (vLLM's weight-transfer engine)".into()
        })?;
        check(!remote || nccl || !self.sync_dir.as_os_str().is_empty(), "rollout.sync_dir", || {
            "needs a folder the servers can read (they load each update from it)".into()
        })?;
        check(self.sync_every >= 1, "rollout.sync_every", || "must be at least 1".into())?;
        check(self.sync_max_logprob_diff > 0.0, "rollout.sync_max_logprob_diff", || {
            format!("must be > 0, got {}", self.sync_max_logprob_diff)
        })?;
        check(self.request_timeout_s > 0.0 && self.request_timeout_s.is_finite(), "rollout.request_timeout_s", || {
            format!("must be a finite number > 0, got {}", self.request_timeout_s)
        })?;
        check(self.max_staleness <= 1, "rollout.max_staleness", || {
            format!(
                "must be 0 or 1, got {} (more would need the servers to take new weights with requests in flight)",
                self.max_staleness
            )
        })?;
        check(self.max_staleness == 0 || remote, "rollout.max_staleness", || {
            "= 1 needs backend = \"vllm\" or \"sglang\" (the engine shares the trainer's weights and thread)".into()
        })
    }

    /// The remote backend's settings, or `None` for the in-process engine.
    pub fn remote(&self, stop_strings: &[String]) -> Option<aha_rollout::RemoteConfig> {
        let kind = match self.backend {
            BackendKind::Engine => return None,
            BackendKind::Vllm => aha_rollout::ServerKind::Vllm,
            BackendKind::Sglang => aha_rollout::ServerKind::Sglang,
        };
        let mut remote = aha_rollout::RemoteConfig::new(kind, self.servers.clone());
        remote.request_timeout = std::time::Duration::from_secs_f64(self.request_timeout_s);
        remote.stop_strings = stop_strings.to_vec();
        remote.max_logprob_diff = self.sync_max_logprob_diff;
        remote.sync_method = self.sync_method();
        Some(remote)
    }

    /// How the servers get each update.
    pub fn sync_method(&self) -> aha_rollout::SyncMethod {
        match self.sync_method {
            SyncMethodName::Disk => aha_rollout::SyncMethod::Disk,
            SyncMethodName::Nccl => aha_rollout::SyncMethod::Nccl,
        }
    }
}

impl OptimConfig {
    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig { beta1: self.betas[0], beta2: self.betas[1], eps: self.eps, weight_decay: self.weight_decay }
    }

    /// The learning rate of each step of a run of `total_steps`.
    pub fn lr_schedule(&self, total_steps: u64) -> LrSchedule {
        LrSchedule {
            lr: self.lr,
            warmup_steps: self.warmup_steps,
            kind: self.schedule,
            min_lr_ratio: self.min_lr_ratio,
            total_steps,
        }
    }

    /// Checks the ranges of `[optim]`; the first problem found, with its key.
    pub fn validate(&self) -> Result<(), Invalid> {
        let o = self;
        check_finite_non_negative(o.lr, "optim.lr")?;
        for (i, b) in o.betas.iter().enumerate() {
            check((0.0..1.0).contains(b), "optim.betas", || format!("must be in [0, 1), got beta{} = {b}", i + 1))?;
        }
        check(o.eps > 0.0 && o.eps.is_finite(), "optim.eps", || format!("must be a finite number > 0, got {}", o.eps))?;
        check_finite_non_negative(o.weight_decay, "optim.weight_decay")?;
        check((0.0..=1.0).contains(&o.min_lr_ratio), "optim.min_lr_ratio", || {
            format!("must be in [0, 1], got {}", o.min_lr_ratio)
        })?;
        check(o.max_grad_norm >= 0.0, "optim.max_grad_norm", || {
            format!("must be >= 0 (0 = no clipping), got {}", o.max_grad_norm)
        })?;
        check(o.micro_batch_size >= 1, "optim.micro_batch_size", || "must be at least 1".into())
    }
}

impl RewardsConfig {
    /// The same checkers as aha-rewards' config, ready for `Registry::build_combined`.
    pub fn to_reward_config(&self) -> aha_rewards::RewardConfig {
        aha_rewards::RewardConfig {
            checkers: self
                .checkers
                .iter()
                .map(|c| aha_rewards::CheckerSpec {
                    name: c.name.clone(),
                    weight: c.weight,
                    options: c.options.as_ref().map_or(serde_json::Value::Null, |table| {
                        serde_json::to_value(table).expect("a TOML table converts to JSON")
                    }),
                    label: c.label.clone(),
                })
                .collect(),
        }
    }
}

/// A problem found by [`TrainConfig::validate`]: the dotted key and what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub key: String,
    pub message: String,
}

/// `value` must be finite and at least 0 (`inf` and `NaN` are no learning rate or weight).
pub(crate) fn check_finite_non_negative(value: f64, key: &str) -> Result<(), Invalid> {
    check(value.is_finite() && value >= 0.0, key, || format!("must be a finite number >= 0, got {value}"))
}

pub(crate) fn check(ok: bool, key: &str, message: impl FnOnce() -> String) -> Result<(), Invalid> {
    if ok {
        Ok(())
    } else {
        Err(Invalid { key: key.to_string(), message: format!("{key} {}", message()) })
    }
}

impl TrainConfig {
    /// Reads `path`, applies `overrides` (`key=value` strings), deserialises, fills resolved
    /// defaults and validates. Errors are one line naming the file and line, or the override.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|error| GrpoError::Io { path: path.to_path_buf(), error })?;
        Self::from_toml(&text, &path.display().to_string(), overrides)
    }

    /// As [`TrainConfig::load`], from the text of a file; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        parse_toml(text, origin, overrides, &[], |config: &mut Self| {
            config.resolve();
            config.validate()
        })
    }

    /// Fills defaults that depend on other keys (`grpo.epsilon_high`), so that the saved config
    /// says everything explicitly.
    pub fn resolve(&mut self) {
        if self.grpo.epsilon_high.is_none() {
            self.grpo.epsilon_high = Some(self.grpo.epsilon);
        }
    }

    /// Checks ranges and combinations; the first problem found, with its key.
    pub fn validate(&self) -> Result<(), Invalid> {
        let (s, g, r) = (&self.sampling, &self.grpo, &self.run);
        check(self.model.init == ModelInit::Pretrained, "model.init", || {
            "= \"random\" is for `aha sft`: GRPO samples from the policy, so it starts from trained weights".into()
        })?;
        self.model.validate_with(self.lora.as_ref())?;
        check(!self.data.source.trim().is_empty(), "data.source", || {
            "needs a problem file or a built-in task such as \"builtin:countdown\"".into()
        })?;
        check(s.group_size >= 2, "sampling.group_size", || {
            format!("must be at least 2 (advantages compare completions of a group), got {}", s.group_size)
        })?;
        check(s.prompts_per_step >= 1, "sampling.prompts_per_step", || "must be at least 1".into())?;
        check(s.temperature > 0.0 && s.temperature.is_finite(), "sampling.temperature", || {
            format!("must be a finite number > 0 (the loss needs log-probs at this temperature), got {}", s.temperature)
        })?;
        check(s.top_p > 0.0 && s.top_p <= 1.0, "sampling.top_p", || format!("must be in (0, 1], got {}", s.top_p))?;
        check((0.0..1.0).contains(&s.min_p), "sampling.min_p", || format!("must be in [0, 1), got {}", s.min_p))?;
        check(s.max_new_tokens >= 1, "sampling.max_new_tokens", || "must be at least 1".into())?;
        check(s.max_prompt_tokens >= 1, "sampling.max_prompt_tokens", || "must be at least 1".into())?;
        check(s.kv_cache_gib > 0.0 && s.kv_cache_gib.is_finite(), "sampling.kv_cache_gib", || {
            format!("must be a finite number > 0, got {}", s.kv_cache_gib)
        })?;
        check(s.max_sequences >= 1, "sampling.max_sequences", || "must be at least 1".into())?;
        check(s.max_prefill_tokens >= 1, "sampling.max_prefill_tokens", || "must be at least 1".into())?;

        check(!self.rewards.checkers.is_empty(), "rewards.checkers", || "needs at least one checker".into())?;
        for (i, c) in self.rewards.checkers.iter().enumerate() {
            let key = format!("rewards.checkers.{i}.weight");
            check(c.weight.is_finite(), &key, || format!("must be finite, got {}", c.weight))?;
        }

        check(g.epsilon > 0.0 && g.epsilon < 1.0, "grpo.epsilon", || format!("must be in (0, 1), got {}", g.epsilon))?;
        let high = g.epsilon_high();
        check(high > 0.0 && high.is_finite(), "grpo.epsilon_high", || {
            format!("must be a finite number > 0, got {high}")
        })?;
        check_finite_non_negative(g.beta, "grpo.beta")?;
        check(g.num_iterations >= 1, "grpo.num_iterations", || "must be at least 1".into())?;
        if let Some(p) = &g.overlong_penalty {
            check(p.cache_tokens <= s.max_new_tokens, "grpo.overlong_penalty.cache_tokens", || {
                format!("({}) must not exceed sampling.max_new_tokens ({})", p.cache_tokens, s.max_new_tokens)
            })?;
            check_finite_non_negative(p.factor, "grpo.overlong_penalty.factor")?;
        }

        if let Some(cap) = g.tis_cap {
            check(cap >= 1.0 && cap.is_finite(), "grpo.tis_cap", || {
                format!("must be a finite number >= 1, got {cap}")
            })?;
        }
        self.rollout.validate()?;

        self.tools.python.check().map_err(|(key, message)| Invalid { key: format!("tools.python.{key}"), message })?;
        self.optim.validate()?;
        check(r.steps >= 1, "run.steps", || "must be at least 1".into())?;
        check(r.eval_temperature >= 0.0 && r.eval_temperature.is_finite(), "run.eval_temperature", || {
            format!("must be a finite number >= 0 (0 = greedy), got {}", r.eval_temperature)
        })?;
        check(r.eval_samples >= 1, "run.eval_samples", || "must be at least 1".into())?;
        Ok(())
    }

    /// The learning rate of each training step.
    pub fn lr_schedule(&self) -> LrSchedule {
        self.optim.lr_schedule(self.run.steps)
    }

    /// The resolved configuration as TOML (what the run directory keeps as `config.toml`).
    pub fn to_toml_string(&self) -> String {
        toml::to_string(self).expect("every field of the configuration serialises to TOML")
    }
}

/// Settings a resumed run may change and still continue as a straight run with the new values
/// would have: when to save, keep, evaluate and (under a schedule that does not depend on the
/// run's length) stop.
const RESUME_NEUTRAL_KEYS: &[&str] = &[
    "run.save_every",
    "run.keep_last",
    "run.eval_every",
    "run.eval_temperature",
    "run.eval_samples",
    "run.eval_seed",
    // Generation limits and reward threads change when and where work runs, not what a group's
    // tokens or rewards are (a group's tokens depend only on its seed).
    "sampling.kv_cache_gib",
    "sampling.max_sequences",
    "sampling.max_prefill_tokens",
    "rewards.workers",
    // Where generation runs does not change what is generated (the servers' samplers do differ
    // from the engine's, so switching backends changes the run, but the servers themselves and
    // how patient aha is with them do not).
    "rollout.servers",
    "rollout.request_timeout_s",
    // The same weights reach the servers either way (the probe check says so after each sync).
    "rollout.sync_method",
];

/// The settings that differ between a run's stored configuration and the one a resume runs
/// with, as `(dotted key, stored value, new value)`, leaving out those that cannot change the
/// training (`RESUME_NEUTRAL_KEYS`, and `run.steps` unless the schedule is cosine, whose decay
/// depends on it). A resumed run that changes one of these does not continue exactly.
pub fn changed_on_resume<C: Serialize>(stored: &C, resumed: &C) -> Vec<(String, String, String)> {
    fn flatten(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
        match value {
            toml::Value::Table(table) => {
                for (key, value) in table {
                    let key = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                    flatten(&key, value, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let flat = |config: &C| {
        let mut out = BTreeMap::new();
        flatten("", &toml::Value::try_from(config).expect("a configuration serialises to TOML"), &mut out);
        out
    };
    let (stored, resumed) = (flat(stored), flat(resumed));
    let cosine = resumed.get("optim.schedule").is_some_and(|s| s.contains("cosine"));
    let keys: std::collections::BTreeSet<&String> = stored.keys().chain(resumed.keys()).collect();
    keys.into_iter()
        .filter(|key| !RESUME_NEUTRAL_KEYS.contains(&key.as_str()) && (key.as_str() != "run.steps" || cosine))
        .filter_map(|key| {
            let (old, new) = (stored.get(key), resumed.get(key));
            let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(unset)".into());
            (old != new).then(|| (key.clone(), show(old), show(new)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[model]
path = "tests/fixtures/models/qwen2"

[data]
source = "builtin:countdown"

[[rewards.checkers]]
name = "countdown"
"#;

    fn err(text: &str, overrides: &[&str]) -> String {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        TrainConfig::from_toml(text, "config.toml", &overrides).unwrap_err().to_string()
    }

    #[test]
    fn minimal_config_gets_the_defaults() {
        let c = TrainConfig::from_toml(MINIMAL, "config.toml", &[]).unwrap();
        assert_eq!(c.model.dtype, DTypeName::F32);
        assert_eq!(c.model.device, DeviceName::Auto);
        assert_eq!(c.sampling, SamplingConfig::default());
        assert_eq!(c.optim, OptimConfig::default());
        assert_eq!(c.run, RunConfig::default());
        assert_eq!(c.grpo.loss_type, LossType::Dapo);
        assert_eq!(c.grpo.epsilon_high, Some(0.2));
        assert_eq!(c.rewards.checkers[0].weight, 1.0);
        assert_eq!(c.data.template, "r1");
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let text = format!("{MINIMAL}\n[optim]\nlr_rate = 1e-5\n");
        let line = text.lines().position(|l| l.starts_with("lr_rate")).unwrap() + 1;
        let e = err(&text, &[]);
        assert!(e.starts_with(&format!("config.toml:{line}: unknown field `lr_rate`, expected one of")), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = err(&format!("{MINIMAL}\n[optimizer]\nlr = 1\n"), &[]);
        assert!(e.contains("unknown field `optimizer`"), "{e}");
    }

    #[test]
    fn bad_value_names_its_line() {
        let text = format!("{MINIMAL}\n[grpo]\nloss_type = \"ppo\"\n");
        let line = text.lines().position(|l| l.starts_with("loss_type")).unwrap() + 1;
        let e = err(&text, &[]);
        assert_eq!(
            e,
            format!("config.toml:{line}: unknown variant `ppo`, expected one of `grpo`, `bnpo`, `dr_grpo`, `dapo`")
        );
        let e = err(&format!("{MINIMAL}\n[sampling]\ngroup_size = \"eight\"\n"), &[]);
        assert!(e.contains("invalid type: string \"eight\""), "{e}");
        let e = err("[model\n", &[]);
        assert!(e.starts_with("config.toml:1: "), "{e}");
    }

    #[test]
    fn missing_required_keys() {
        let e = err("[data]\nsource = \"builtin:countdown\"\n[[rewards.checkers]]\nname = \"math\"\n", &[]);
        assert_eq!(e, "config.toml: missing field `model`");
        let e = err(&MINIMAL.replace("path = ", "# path = "), &[]);
        assert_eq!(e, "config.toml:2: missing field `path`");
        let e = err(&MINIMAL.replace("source = \"builtin:countdown\"", "source = \" \""), &[]);
        assert!(e.contains("data.source needs a problem file"), "{e}");
    }

    #[test]
    fn overrides_apply_and_parse_values() {
        let sets = [
            "optim.lr=1e-5",
            "grpo.loss_type=dr_grpo",
            "grpo.scale_rewards=\"none\"",
            "optim.betas=[0.9, 0.95]",
            "rewards.checkers.0.weight=0.5",
            "run.output_dir=runs/x y",
            "grpo.overlong_penalty.cache_tokens=16",
            "data.eval_count=50",
        ];
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let c = TrainConfig::from_toml(MINIMAL, "config.toml", &sets).unwrap();
        assert_eq!(c.optim.lr, 1e-5);
        assert_eq!(c.grpo.loss_type, LossType::DrGrpo);
        assert_eq!(c.grpo.scale_rewards, ScaleRewards::None);
        assert_eq!(c.optim.betas, [0.9, 0.95]);
        assert_eq!(c.rewards.checkers[0].weight, 0.5);
        assert_eq!(c.run.output_dir, PathBuf::from("runs/x y"));
        assert_eq!(c.grpo.overlong_penalty, Some(OverlongPenalty { cache_tokens: 16, factor: 1.0 }));
        assert_eq!(c.data.eval_count, 50);
        // An override may supply a required key the file lacks.
        let c = TrainConfig::from_toml(&MINIMAL.replace("path = ", "# path = "), "c", &["model.path=m".to_string()])
            .unwrap();
        assert_eq!(c.model.path, PathBuf::from("m"));
    }

    #[test]
    fn bad_overrides_are_reported_against_the_override() {
        let e = err(MINIMAL, &["optim.lr_rate=1"]);
        assert!(e.starts_with("--set optim.lr_rate=1: unknown field `lr_rate`"), "{e}");
        let e = err(MINIMAL, &["grpo.loss_type=ppo"]);
        assert!(e.starts_with("--set grpo.loss_type=ppo: unknown variant `ppo`"), "{e}");
        let e = err(MINIMAL, &["optim.lr"]);
        assert!(e.contains("no `=`"), "{e}");
        let e = err(MINIMAL, &["model.path.x=1"]);
        assert!(e.starts_with("--set model.path.x=1: `model.path` is a string, not a table"), "{e}");
        let e = err(MINIMAL, &["grpo.epsilon=-0.1"]);
        assert!(e.starts_with("--set grpo.epsilon=-0.1: grpo.epsilon must be in (0, 1), got -0.1"), "{e}");
        let e = err(MINIMAL, &["rewards.checkers.3.weight=1"]);
        assert!(e.contains("has 1 entries, no index 3"), "{e}");
    }

    #[test]
    fn validation_names_key_and_line() {
        let text = format!("{MINIMAL}\n[sampling]\ngroup_size = 1\n");
        let line = text.lines().position(|l| l.starts_with("group_size")).unwrap() + 1;
        let e = err(&text, &[]);
        assert!(e.starts_with(&format!("config.toml:{line}: sampling.group_size must be at least 2")), "{e}");
        let e = err(&format!("{MINIMAL}\n[model]\n"), &[]);
        assert!(e.contains("config.toml"), "{e}");
        for (set, needle) in [
            ("sampling.temperature=0", "sampling.temperature must be a finite number > 0"),
            ("optim.lr=inf", "optim.lr must be a finite number >= 0, got inf"),
            ("optim.lr=nan", "optim.lr must be a finite number >= 0, got NaN"),
            ("optim.betas=[0.9, 1.0]", "optim.betas must be in [0, 1), got beta2 = 1"),
            ("optim.micro_batch_size=0", "optim.micro_batch_size must be at least 1"),
            ("grpo.beta=-1", "grpo.beta must be a finite number >= 0, got -1"),
            ("model.dtype=f64", "--set model.dtype=f64: unknown dtype \"f64\" (expected f32, bf16 or f16)"),
            ("model.compute_dtype=f8", "unknown dtype \"f8\""),
            ("model.device=tpu", "--set model.device=tpu: unknown device \"tpu\""),
            ("grpo.overlong_penalty.cache_tokens=1000", "must not exceed sampling.max_new_tokens (256)"),
            ("model.init=random", "model.init = \"random\" is for `aha sft`"),
        ] {
            let e = err(MINIMAL, &[set]);
            assert!(e.contains(needle), "{set}: {e}");
        }
    }

    #[test]
    fn nccl_sync_is_checked_in_one_line() {
        let vllm = ["rollout.backend=\"vllm\"", "rollout.servers=[\"http://127.0.0.1:8000\"]"];
        let with = |extra: &[&str]| -> Vec<String> { vllm.iter().chain(extra).map(|s| s.to_string()).collect() };
        // The folder is what the disk sync needs, not NCCL.
        let e = err(MINIMAL, &with(&[]).iter().map(String::as_str).collect::<Vec<_>>());
        assert!(e.contains("rollout.sync_dir needs a folder"), "{e}");
        let nccl = with(&["rollout.sync_method=\"nccl\""]);
        let result = TrainConfig::from_toml(MINIMAL, "config.toml", &nccl);
        if aha_rollout::remote::nccl::BUILT_WITH_NCCL {
            let c = result.unwrap();
            assert_eq!(c.rollout.remote(&[]).unwrap().sync_method, aha_rollout::SyncMethod::Nccl);
        } else {
            let e = result.unwrap_err().to_string();
            assert!(e.contains("rollout.sync_method = \"nccl\" needs aha built with `--features nccl`"), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let sglang = [
            "rollout.backend=\"sglang\"",
            "rollout.servers=[\"http://127.0.0.1:8000\"]",
            "rollout.sync_method=\"nccl\"",
        ];
        let e = err(MINIMAL, &sglang);
        assert!(e.contains("rollout.sync_method = \"nccl\" needs"), "{e}");
        let e = err(MINIMAL, &["rollout.sync_method=\"ipc\""]);
        assert!(e.contains("unknown variant `ipc`"), "{e}");
    }

    #[test]
    fn the_reference_page_example_is_valid() {
        let page = include_str!("../../docs/config.md");
        let example = page.split("```toml\n").nth(1).and_then(|rest| rest.split("```").next()).unwrap();
        let c = TrainConfig::from_toml(example, "docs/config.md", &[]).unwrap();
        assert_eq!(c.grpo.loss_type, LossType::DrGrpo);
        assert_eq!(c.rewards.checkers.len(), 2);
        assert_eq!(c.data.preset.as_deref(), Some("gsm8k"));
    }

    #[test]
    fn resolved_config_round_trips_through_toml() {
        let sets: Vec<String> = ["grpo.overlong_penalty.cache_tokens=16", "data.fields.prompt=question"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut text = MINIMAL.to_string();
        text.push_str("[rewards.checkers.options]\nformat_score = 0.1\n");
        let c = TrainConfig::from_toml(&text, "config.toml", &sets).unwrap();
        let saved = c.to_toml_string();
        assert!(saved.contains("epsilon_high = 0.2"), "{saved}");
        let again = TrainConfig::from_toml(&saved, "saved.toml", &[]).unwrap();
        assert_eq!(again, c);
        let rewards = c.rewards.to_reward_config();
        assert_eq!(rewards.checkers[0].options, serde_json::json!({"format_score": 0.1}));
    }

    #[test]
    fn generation_limits_evaluation_and_reward_threads_are_settings() {
        let c = TrainConfig::from_toml(MINIMAL, "config.toml", &[]).unwrap();
        assert_eq!(c.sampling.engine(), EngineConfig::default(), "the defaults are the engine's own");
        assert_eq!((c.rewards.workers, c.run.eval_temperature, c.run.eval_samples, c.run.eval_seed), (0, 0.0, 1, 0));
        let sets: Vec<String> = [
            "sampling.kv_cache_gib=0.5",
            "sampling.max_sequences=32",
            "sampling.max_prefill_tokens=2048",
            "rewards.workers=3",
            "run.eval_temperature=1.0",
            "run.eval_samples=4",
            "run.eval_seed=7",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let changed = TrainConfig::from_toml(MINIMAL, "config.toml", &sets).unwrap();
        assert_eq!(
            changed.sampling.engine(),
            EngineConfig { kv_cache_bytes: 512 << 20, max_sequences: 32, max_prefill_tokens: 2048 }
        );
        assert_eq!(changed.rewards.workers, 3);
        assert_eq!((changed.run.eval_temperature, changed.run.eval_samples, changed.run.eval_seed), (1.0, 4, 7));
        // None of them changes what a resumed run trains.
        assert_eq!(changed_on_resume(&c, &changed), vec![]);
        for (set, message) in [
            ("sampling.kv_cache_gib=0", "sampling.kv_cache_gib must be a finite number > 0"),
            ("sampling.max_sequences=0", "sampling.max_sequences must be at least 1"),
            ("sampling.max_prefill_tokens=0", "sampling.max_prefill_tokens must be at least 1"),
            ("run.eval_temperature=-1", "run.eval_temperature must be a finite number >= 0"),
            ("run.eval_samples=0", "run.eval_samples must be at least 1"),
        ] {
            let e = err(MINIMAL, &[set]);
            assert!(e.contains(message), "{set}: {e}");
        }
    }

    #[test]
    fn tools_python_section() {
        let c = TrainConfig::from_toml(MINIMAL, "config.toml", &[]).unwrap();
        assert!(!c.tools.python.enable, "off by default");
        let text = format!(
            "{MINIMAL}\n[tools.python]\nenable = true\nmax_calls = 2\ncalls = [{{ open = \"<tool_call>\", close = \"</tool_call>\" }}]\n"
        );
        let c = TrainConfig::from_toml(&text, "config.toml", &[]).unwrap();
        assert!(c.tools.python.enable);
        assert_eq!(c.tools.python.max_calls, 2);
        assert_eq!(c.tools.python.calls[0].open, "<tool_call>");
        // The resolved configuration reads back the same.
        assert_eq!(TrainConfig::from_toml(&c.to_toml_string(), "resolved", &[]).unwrap(), c);
        let e = err(&text, &["tools.python.max_calls=0"]);
        assert!(e.contains("tools.python.max_calls"), "{e}");
        let e = err(&format!("{MINIMAL}\n[tools.python]\nenable = true\nmax_call = 2\n"), &[]);
        assert!(e.contains("max_call"), "{e}");
    }
}
