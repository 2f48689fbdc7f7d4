//! Supervised fine-tuning (`aha sft CONFIG.toml`): next-token cross-entropy on given text, with
//! the training machinery of `aha train` (the run skeleton of `run_loop.rs`: run directory,
//! checkpoints, resume, evaluation and metrics; AdamW, schedule, clipping, exact micro-batch
//! accumulation).
//!
//! What it is for: warm-starting a base model on the format of its task before GRPO (R1's
//! "cold start"), distilling the correct completions of a GRPO run back into a model (`aha traces
//! RUN export` writes exactly the JSON lines read here), or training a small model from scratch
//! (`model.init = "random"`).
//!
//! Data (`[data] source`):
//! - JSON lines `{"prompt": ..., "completion": ...}` (other keys ignored): the loss is on the
//!   completion's tokens only. Prompt and completion are tokenized separately and their ids
//!   concatenated, so the boundary is exactly where the text says (and where GRPO's sampler put
//!   it, for exported traces). An empty prompt makes the line a `text` line.
//! - JSON lines `{"text": ...}`: the loss is on every token after the first.
//! - A `.txt` file: one document, tokenized whole and cut into windows of `max_length` tokens that
//!   overlap by one token, so that every token after the file's first is predicted exactly once.
//!
//! With `add_eos` the model's first eos id is appended after each completion or text (once, at
//! the end, for a `.txt` file), so that the model learns to stop. An example longer than
//! `max_length` is cut at the end (counted, with a warning: it then teaches no stop); one whose
//! prompt alone fills `max_length` is skipped (counted).
//!
//! The loss of a step is the mean cross-entropy over all target tokens of its batch: each
//! micro-batch adds its token sum divided by the token count of the whole batch, so the loss and
//! its gradient do not depend on `optim.micro_batch_size`. Examples are visited in a new seeded
//! order each epoch (the order of aha-datasets' `Dataset::epochs`), and `TrainerState`'s
//! `problems_drawn` counts the examples used, so a resumed run continues with the same batches.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tch::Kind;

use aha_model::{CausalLM, CompletionBatch, LoraConfig, Tokenizer};

use crate::config::{check, Invalid, ModelSource, OptimConfig};
use crate::config_file::parse_toml;
use crate::error::{GrpoError, Result};
use crate::optim::AdamW;
use crate::run_dir::TrainerState;
use crate::run_loop::{Run, RunSchedule, TrainOutcome, Training};

/// `aha sft`'s learning rate when `optim.lr` is not given: TRL's `SFTConfig` default, a usual
/// rate for fully fine-tuning a pretrained model (GRPO's 1e-6 would barely move it). A model
/// trained from scratch wants more (1e-3 for the tiny fixtures).
pub const DEFAULT_SFT_LR: f64 = 2e-5;

/// The whole configuration of `aha sft`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftConfig {
    /// `[model]`: the model to train (required); `init = "random"` trains from scratch.
    pub model: ModelSource,
    /// `[data]`: the examples (required).
    pub data: SftDataConfig,
    /// `[optim]`: as `aha train`'s, except that `lr` defaults to [`DEFAULT_SFT_LR`].
    #[serde(default)]
    pub optim: OptimConfig,
    /// `[run]`: length, batch size, seed, checkpoints, output.
    #[serde(default)]
    pub run: SftRunConfig,
    /// `[lora]`: train LoRA adapters on the frozen base, as `aha train`'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraConfig>,
}

/// `[data]` of `aha sft`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftDataConfig {
    /// JSON lines of `{"prompt", "completion"}` or `{"text"}`, or a `.txt` file (see the module
    /// documentation). Required.
    pub source: PathBuf,
    /// Longest example, in tokens (prompt and completion together); longer ones are cut at the
    /// end, and a `.txt` file is cut into windows of this length. Default 1024.
    #[serde(default = "default_max_length")]
    pub max_length: usize,
    /// Examples held out (drawn at random from `run.seed`, never trained on) to compute
    /// `eval_loss` every `run.eval_every` steps. Default 0 (none).
    #[serde(default)]
    pub eval_count: usize,
    /// Visit the examples in a new seeded order each epoch; `false` keeps the file's order.
    /// Default `true`.
    #[serde(default = "yes")]
    pub shuffle: bool,
    /// Append the model's first eos id to each completion or text, so the model learns to stop.
    /// Default `true`.
    #[serde(default = "yes")]
    pub add_eos: bool,
}

/// `[run]` of `aha sft`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SftRunConfig {
    /// Optimizer steps. Default 100.
    pub steps: u64,
    /// Examples per step (split into micro-batches of `optim.micro_batch_size`). Default 32.
    pub batch_size: usize,
    /// Seed of the data order, the held-out examples and `model.init = "random"`. Default 42.
    pub seed: u64,
    /// Save a checkpoint every this many steps (and always at the end); 0 = only at the end.
    /// Default 50.
    pub save_every: u64,
    /// Keep the last this many checkpoints; 0 = keep all. Default 3.
    pub keep_last: usize,
    /// The run directory (config, metrics.jsonl, checkpoints). Default `runs/sft`.
    pub output_dir: PathBuf,
    /// Every this many steps (and at the last), compute `eval_loss` on the held-out examples;
    /// 0 = never. Default 0.
    pub eval_every: u64,
}

impl Default for SftRunConfig {
    fn default() -> Self {
        Self {
            steps: 100,
            batch_size: 32,
            seed: 42,
            save_every: 50,
            keep_last: 3,
            output_dir: PathBuf::from("runs/sft"),
            eval_every: 0,
        }
    }
}

fn default_max_length() -> usize {
    1024
}

fn yes() -> bool {
    true
}

impl SftConfig {
    /// Reads `path`, applies `overrides` (`key=value` strings), deserialises and validates.
    /// Errors are one line naming the file and line, or the override.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|error| GrpoError::Io { path: path.to_path_buf(), error })?;
        Self::from_toml(&text, &path.display().to_string(), overrides)
    }

    /// As [`SftConfig::load`], from the text of a file; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        let lr = DEFAULT_SFT_LR.to_string();
        parse_toml(text, origin, overrides, &[("optim.lr", &lr)], |config: &mut Self| config.validate())
    }

    /// Checks ranges; the first problem found, with its key.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.model.validate_with(self.lora.as_ref())?;
        check(!self.data.source.as_os_str().is_empty(), "data.source", || {
            "needs a JSON-lines file of {\"prompt\", \"completion\"} or {\"text\"}, or a .txt file".into()
        })?;
        check(self.data.max_length >= 2, "data.max_length", || {
            format!("must be at least 2 (a token to read and one to predict), got {}", self.data.max_length)
        })?;
        self.optim.validate()?;
        check(self.run.steps >= 1, "run.steps", || "must be at least 1".into())?;
        check(self.run.batch_size >= 1, "run.batch_size", || "must be at least 1".into())
    }

    /// The resolved configuration as TOML (the run directory's `config.toml`).
    pub fn to_toml_string(&self) -> String {
        toml::to_string(self).expect("every field of the configuration serialises to TOML")
    }
}

/// One training example: the loss is on `target_ids`, predicted after `prompt_ids`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftExample {
    /// The context (at least one token), not trained on.
    pub prompt_ids: Vec<u32>,
    /// The tokens the loss is on (at least one).
    pub target_ids: Vec<u32>,
}

/// The examples of `[data]`, split into training and held-out ones.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SftData {
    pub train: Vec<SftExample>,
    pub eval: Vec<SftExample>,
    /// Examples cut to `max_length`.
    pub truncated: usize,
    /// Examples left out: nothing to learn (an empty completion without eos), or a prompt that
    /// fills `max_length` alone.
    pub skipped: usize,
}

/// Reads and tokenizes `[data]`; `eos` is appended when `data.add_eos`. The held-out examples
/// (`eval_count`) are drawn from `seed`; both parts keep the file's order.
pub fn load_data(data: &SftDataConfig, tokenizer: &Tokenizer, eos: Option<u32>, seed: u64) -> Result<SftData> {
    let path = &data.source;
    let eos = match (data.add_eos, eos) {
        (false, _) => None,
        (true, Some(id)) => Some(id),
        (true, None) => {
            return Err(GrpoError::Config(
                "data.add_eos: the model's config.json names no eos_token_id; set data.add_eos = false".into(),
            ))
        }
    };
    let text = std::fs::read_to_string(path).map_err(|error| GrpoError::Io { path: path.clone(), error })?;
    let mut out = SftData::default();
    let mut examples = Vec::new();
    let is_txt = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("txt"));
    if is_txt {
        let mut ids = tokenizer.encode(&text)?;
        ids.extend(eos);
        // Windows of max_length overlapping by one token: each window's first token is the last
        // target of the window before.
        let stride = data.max_length - 1;
        let mut start = 0;
        while start + 1 < ids.len() {
            let end = (start + data.max_length).min(ids.len());
            examples.push(SftExample { prompt_ids: vec![ids[start]], target_ids: ids[start + 1..end].to_vec() });
            start += stride;
        }
    } else {
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = |message: String| GrpoError::Data(format!("{}:{}: {message}", path.display(), index + 1));
            let (prompt, completion) = parse_line(line).map_err(at)?;
            let mut prompt = match prompt {
                Some(prompt) => tokenizer.encode(&prompt)?,
                None => Vec::new(),
            };
            let mut target = tokenizer.encode(&completion)?;
            target.extend(eos);
            if prompt.is_empty() && !target.is_empty() {
                // Nothing comes before the first token: it is read, not predicted.
                prompt.push(target.remove(0));
            }
            if target.is_empty() || prompt.len() >= data.max_length {
                out.skipped += 1;
                continue;
            }
            if prompt.len() + target.len() > data.max_length {
                target.truncate(data.max_length - prompt.len());
                out.truncated += 1;
            }
            examples.push(SftExample { prompt_ids: prompt, target_ids: target });
        }
    }
    if examples.is_empty() {
        let why = match out.skipped {
            0 => "no text".to_string(),
            n => format!(
                "all {n} skipped: an empty completion, or a prompt of data.max_length = {} tokens or more",
                data.max_length
            ),
        };
        return Err(GrpoError::Data(format!("{}: no examples to train on ({why})", path.display())));
    }
    if data.eval_count >= examples.len() {
        return Err(GrpoError::Data(format!(
            "data.eval_count ({}) must be smaller than the number of examples in {} ({})",
            data.eval_count,
            path.display(),
            examples.len()
        )));
    }
    let mut held_out = vec![false; examples.len()];
    for &i in &aha_datasets::epoch_order(examples.len(), seed, 0)[..data.eval_count] {
        held_out[i] = true;
    }
    for (example, held_out) in examples.into_iter().zip(held_out) {
        if held_out { &mut out.eval } else { &mut out.train }.push(example);
    }
    Ok(out)
}

/// The prompt (if any) and the text to learn of one JSON line.
fn parse_line(line: &str) -> std::result::Result<(Option<String>, String), String> {
    const SHAPE: &str = "each line is {\"prompt\": ..., \"completion\": ...} or {\"text\": ...}";
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON ({e}); {SHAPE}"))?;
    let Value::Object(object) = value else { return Err(format!("not a JSON object; {SHAPE}")) };
    let string = |key: &str| -> std::result::Result<Option<String>, String> {
        match object.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!("\"{key}\" must be a string, got {other}")),
        }
    };
    match (string("prompt")?, string("completion")?, string("text")?) {
        (Some(prompt), Some(completion), _) => Ok((Some(prompt), completion)),
        (Some(_), None, _) => Err(format!("missing key \"completion\" (the line has \"prompt\"); {SHAPE}")),
        (None, Some(_), _) => Err(format!("missing key \"prompt\" (the line has \"completion\"); {SHAPE}")),
        (None, None, Some(text)) => Ok((None, text)),
        (None, None, None) => Err(format!("missing key \"prompt\"/\"completion\" or \"text\"; {SHAPE}")),
    }
}

/// The result of a pass over a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SftPass {
    /// Mean cross-entropy (nats) per target token.
    pub loss: f64,
    /// Target tokens in the batch.
    pub tokens: usize,
}

/// Zeroes `model`'s gradients, then runs forward and backward over `examples` in micro-batches
/// of `micro_batch_size`, leaving the gradient of the batch loss in the parameters' `.grad`. A
/// NaN or infinite loss stops with [`GrpoError::NonFinite`].
pub fn sft_gradients(model: &CausalLM, examples: &[SftExample], micro_batch_size: usize) -> Result<SftPass> {
    for mut var in model.trainable_parameters() {
        var.zero_grad();
    }
    pass(model, examples, micro_batch_size, true)
}

/// The batch loss of `examples` at the current weights, without gradient.
pub fn sft_loss(model: &CausalLM, examples: &[SftExample], micro_batch_size: usize) -> Result<SftPass> {
    tch::no_grad(|| pass(model, examples, micro_batch_size, false))
}

fn pass(model: &CausalLM, examples: &[SftExample], micro_batch_size: usize, backward: bool) -> Result<SftPass> {
    if examples.is_empty() || micro_batch_size == 0 {
        return Err(GrpoError::Input("an SFT pass needs examples and a micro_batch_size of at least 1".into()));
    }
    for (i, e) in examples.iter().enumerate() {
        if e.prompt_ids.is_empty() || e.target_ids.is_empty() {
            return Err(GrpoError::Input(format!("example {i} needs at least one prompt and one target token")));
        }
        model.check_token_ids(std::slice::from_ref(&e.prompt_ids))?;
        model.check_token_ids(std::slice::from_ref(&e.target_ids))?;
    }
    let tokens: usize = examples.iter().map(|e| e.target_ids.len()).sum();
    // Micro-batches of similar lengths pad less; the loss is a sum over tokens, so the grouping
    // does not change it.
    let mut by_length: Vec<&SftExample> = examples.iter().collect();
    by_length.sort_by_key(|e| e.prompt_ids.len() + e.target_ids.len());
    let mut loss = 0.0;
    for chunk in by_length.chunks(micro_batch_size) {
        let rows: Vec<(&[u32], &[u32], bool)> =
            chunk.iter().map(|e| (&e.prompt_ids[..], &e.target_ids[..], true)).collect();
        let layout = CompletionBatch::new(&rows, model.device())?;
        let scored = layout.train_pass(model, 1.0, false);
        let logprobs = &scored.logprobs;
        let mask = layout.loss_mask().to_device(logprobs.device());
        let masked = logprobs.where_self(&mask, &logprobs.zeros_like());
        let micro_loss = -masked.sum(Kind::Float) / tokens as f64;
        let value = micro_loss.double_value(&[]);
        if !value.is_finite() {
            return Err(GrpoError::NonFinite { what: "loss", value });
        }
        loss += value;
        if backward {
            scored.backward(model, &micro_loss);
        }
    }
    Ok(SftPass { loss, tokens })
}

/// Runs `aha sft` as `config` says, in a new run directory, or continues the run in
/// `config.run.output_dir` when `resume`. `on_step` sees each step's metrics line.
pub fn train(config: SftConfig, resume: bool, on_step: impl FnMut(&Value)) -> Result<TrainOutcome> {
    let schedule = RunSchedule {
        steps: config.run.steps,
        eval_every: config.run.eval_every,
        save_every: config.run.save_every,
        keep_last: config.run.keep_last,
        lr: config.optim.lr_schedule(config.run.steps),
        seed: config.run.seed,
    };
    let run = Run::begin(&config.run.output_dir, &config.to_toml_string(), resume, schedule)?;
    if let Some(done) = run.already_done() {
        return Ok(done);
    }
    let model = run.model(&config.model, config.lora.as_ref(), config.run.seed)?;
    let tokenizer = Tokenizer::from_dir(&config.model.path, model.config().vocab_size)?;
    let data = load_data(&config.data, &tokenizer, model.config().eos_token_ids.first().copied(), config.run.seed)?;
    warn_about(&config.data, &data, model.config().max_position_embeddings as usize);
    let optimizer = run.optimizer(&model, config.optim.adamw())?;
    let training = SftTraining {
        config: &config,
        order: DataOrder::new(data.train.len(), config.data.shuffle, config.run.seed),
        drawn: run.state().problems_drawn,
        model,
        optimizer,
        data,
    };
    run.train(training, on_step)
}

/// Warns of examples cut or skipped, and of examples longer than the model's positions.
fn warn_about(config: &SftDataConfig, data: &SftData, positions: usize) {
    let source = config.source.display();
    if data.truncated > 0 {
        tracing::warn!("{source}: {} examples cut to data.max_length = {} tokens", data.truncated, config.max_length);
    }
    if data.skipped > 0 {
        tracing::warn!(
            "{source}: {} examples skipped (nothing to learn, or a prompt of data.max_length tokens or more)",
            data.skipped
        );
    }
    if data.train.iter().chain(&data.eval).any(|e| e.prompt_ids.len() + e.target_ids.len() > positions) {
        tracing::warn!("{source}: some examples are longer than the model's max_position_embeddings ({positions})");
    }
}

/// SFT's part of the run loop: the model, its optimizer and the examples, drawn in the run's order.
struct SftTraining<'a> {
    config: &'a SftConfig,
    model: CausalLM,
    optimizer: AdamW,
    data: SftData,
    order: DataOrder,
    /// Training examples drawn so far (the data cursor a checkpoint saves).
    drawn: u64,
}

impl SftTraining<'_> {
    /// The next `run.batch_size` training examples.
    fn next_batch(&mut self) -> Vec<SftExample> {
        let first = self.drawn;
        self.drawn += self.config.run.batch_size as u64;
        (first..self.drawn).map(|k| self.data.train[self.order.index(k)].clone()).collect()
    }
}

impl Training for SftTraining<'_> {
    type Record = ();

    fn step(&mut self, step: u64, lr: f64) -> Result<(Value, ())> {
        let step_started = Instant::now();
        let batch = self.next_batch();
        let optim = &self.config.optim;
        let pass = sft_gradients(&self.model, &batch, optim.micro_batch_size)?;
        let grad_norm = self.optimizer.clip_and_step(lr, optim.max_grad_norm)?;
        let step_seconds = step_started.elapsed().as_secs_f64();
        let metrics = json!({
            "step": step,
            "loss": pass.loss,
            "tokens": pass.tokens,
            "examples": batch.len(),
            "lr": lr,
            "grad_norm": grad_norm,
            "epoch": self.drawn as f64 / self.data.train.len() as f64,
            "tokens_per_s": pass.tokens as f64 / step_seconds.max(1e-9),
            "step_s": step_seconds,
        });
        Ok((metrics, ()))
    }

    /// The loss on the held-out examples.
    fn evaluate(&mut self) -> Result<Map<String, Value>> {
        let mut fields = Map::new();
        if self.data.eval.is_empty() {
            return Ok(fields);
        }
        let started = Instant::now();
        let eval = sft_loss(&self.model, &self.data.eval, self.config.optim.micro_batch_size)?;
        fields.insert("eval_loss".into(), json!(eval.loss));
        fields.insert("eval_tokens".into(), json!(eval.tokens));
        fields.insert("eval_s".into(), json!(started.elapsed().as_secs_f64()));
        Ok(fields)
    }

    fn state(&mut self, step: u64) -> Result<TrainerState> {
        Ok(TrainerState { step, problems_drawn: self.drawn, ..TrainerState::start() })
    }

    fn model(&self) -> &CausalLM {
        &self.model
    }

    fn optimizer(&self) -> &AdamW {
        &self.optimizer
    }
}

/// Which training example the k-th drawn one is (k counts from the start of the run): epoch
/// k / n in the order of aha-datasets' `epoch_order`, so a resumed run finds its place without
/// replaying the epochs before.
struct DataOrder {
    len: usize,
    shuffle: bool,
    seed: u64,
    epoch: Option<(u64, Vec<usize>)>,
}

impl DataOrder {
    fn new(len: usize, shuffle: bool, seed: u64) -> Self {
        Self { len, shuffle, seed, epoch: None }
    }

    fn index(&mut self, k: u64) -> usize {
        let (epoch, position) = (k / self.len as u64, (k % self.len as u64) as usize);
        if !self.shuffle {
            return position;
        }
        if self.epoch.as_ref().is_none_or(|(e, _)| *e != epoch) {
            self.epoch = Some((epoch, aha_datasets::epoch_order(self.len, self.seed, epoch)));
        }
        self.epoch.as_ref().expect("set above").1[position]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[model]\npath = \"m\"\n\n[data]\nsource = \"d.jsonl\"\n";

    #[test]
    fn defaults_differ_from_train_where_documented() {
        let c = SftConfig::from_toml(MINIMAL, "sft.toml", &[]).unwrap();
        assert_eq!(c.optim.lr, DEFAULT_SFT_LR);
        assert_eq!(OptimConfig { lr: DEFAULT_SFT_LR, ..OptimConfig::default() }, c.optim);
        assert_eq!(c.run, SftRunConfig::default());
        assert_eq!(c.model.init, crate::config::ModelInit::Pretrained);
        assert_eq!((c.data.max_length, c.data.eval_count, c.data.shuffle, c.data.add_eos), (1024, 0, true, true));
        // A given lr (in the file or an override) wins over the SFT default.
        let c = SftConfig::from_toml(&format!("{MINIMAL}[optim]\nlr = 0.5\n"), "sft.toml", &[]).unwrap();
        assert_eq!(c.optim.lr, 0.5);
        let c = SftConfig::from_toml(MINIMAL, "sft.toml", &["optim.lr=0.25".into()]).unwrap();
        assert_eq!(c.optim.lr, 0.25);
        let c = SftConfig::from_toml(&format!("{MINIMAL}[optim]\nwarmup_steps = 3\n"), "sft.toml", &[]).unwrap();
        assert_eq!((c.optim.lr, c.optim.warmup_steps), (DEFAULT_SFT_LR, 3));
        // The resolved config round-trips.
        let again = SftConfig::from_toml(&c.to_toml_string(), "saved.toml", &[]).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn mistakes_name_the_key_and_line() {
        let e = SftConfig::from_toml(&format!("{MINIMAL}[run]\nbatch = 4\n"), "sft.toml", &[]).unwrap_err().to_string();
        assert!(e.starts_with("sft.toml:7: unknown field `batch`, expected one of"), "{e}");
        let e = SftConfig::from_toml(MINIMAL, "sft.toml", &["run.batch_size=0".into()]).unwrap_err().to_string();
        assert_eq!(e, "--set run.batch_size=0: run.batch_size must be at least 1");
        let e = SftConfig::from_toml(&format!("{MINIMAL}max_length = 1\n"), "sft.toml", &[]).unwrap_err().to_string();
        assert!(e.starts_with("sft.toml:6: data.max_length must be at least 2"), "{e}");
        let e = SftConfig::from_toml(&MINIMAL.replace("\"m\"", "\"m\"\ninit = \"zeros\""), "sft.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("sft.toml:3: unknown variant `zeros`"), "{e}");
        // `[optim]` that is not a table: the file's mistake is reported, not the default's.
        let e = SftConfig::from_toml(&format!("optim = 3\n{MINIMAL}"), "sft.toml", &[]).unwrap_err().to_string();
        assert!(e.starts_with("sft.toml:1: invalid type: integer `3`"), "{e}");
    }

    #[test]
    fn the_reference_page_example_is_valid() {
        let page = include_str!("../../docs/config.md");
        let section = page.split("## `aha sft`").nth(1).unwrap();
        let example = section.split("```toml\n").nth(1).and_then(|rest| rest.split("```").next()).unwrap();
        let c = SftConfig::from_toml(example, "docs/config.md", &[]).unwrap();
        assert_eq!((c.optim.lr, c.run.batch_size, c.data.eval_count), (1e-5, 32, 100));
        let example = include_str!("../../examples/configs/sft-tiny.toml");
        SftConfig::from_toml(example, "examples/configs/sft-tiny.toml", &[]).unwrap();
    }

    #[test]
    fn json_lines_name_what_is_missing() {
        assert_eq!(
            parse_line(r#"{"prompt": "a", "completion": "b", "reward": 1}"#),
            Ok((Some("a".into()), "b".into()))
        );
        assert_eq!(parse_line(r#"{"text": "abc"}"#), Ok((None, "abc".into())));
        assert!(parse_line(r#"{"prompt": "a"}"#).unwrap_err().starts_with("missing key \"completion\""));
        assert!(parse_line(r#"{"completion": "a"}"#).unwrap_err().starts_with("missing key \"prompt\""));
        assert!(parse_line(r#"{"txt": "a"}"#).unwrap_err().starts_with("missing key"));
        assert!(parse_line(r#"{"text": 3}"#).unwrap_err().starts_with("\"text\" must be a string, got 3"));
        assert!(parse_line("[1]").unwrap_err().starts_with("not a JSON object"));
        assert!(parse_line("{\"text\": ").unwrap_err().starts_with("not JSON"));
    }

    #[test]
    fn the_data_order_is_per_epoch_and_can_start_anywhere() {
        let mut order = DataOrder::new(5, true, 7);
        let all: Vec<usize> = (0..15).map(|k| order.index(k)).collect();
        for epoch in all.chunks(5) {
            let mut sorted = epoch.to_vec();
            sorted.sort();
            assert_eq!(sorted, [0, 1, 2, 3, 4]);
        }
        assert_ne!(all[..5], all[5..10], "each epoch has its own order");
        let mut resumed = DataOrder::new(5, true, 7);
        assert_eq!((7..15).map(|k| resumed.index(k)).collect::<Vec<_>>(), all[7..]);
        let mut plain = DataOrder::new(3, false, 7);
        assert_eq!((0..6).map(|k| plain.index(k)).collect::<Vec<_>>(), [0, 1, 2, 0, 1, 2]);
    }
}
