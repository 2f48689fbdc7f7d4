//! Handing vLLM or SGLang servers the policy's new weights (`rollout.backend = "vllm"` or
//! `"sglang"`): write them where the servers can read them, have each load them, check that
//! each did.
//!
//! The weights go to `rollout.sync_dir/weights-NNNNNNNN` (N = optimizer steps taken) as a
//! Hugging Face folder: written under a temporary name and renamed when complete, so a server
//! never reads half a checkpoint; with LoRA, the adapters merged in. The check sequence is a
//! fixed text; the trainer scores it on the weights it wrote and the backend compares every
//! server's scores with those (aha-rollout's `remote` module). Older folders are removed once
//! the servers serve the new ones.
//!
//! With `rollout.sync_method = "nccl"` nothing is written: the backend broadcasts the same
//! tensors (Hugging Face names, the LoRA adapters merged in) from the trainer's GPU into the
//! servers' (aha-rollout's `remote::nccl`), and the same check follows.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Map, Value};

use aha_model::{CausalLM, SaveOptions, Tokenizer};
use aha_rollout::{remote::sync_folder, SyncMethod, WeightSync, WeightsInMemory, WeightsOnDisk};

use crate::error::{GrpoError, Result};

/// The text every server scores after a sync. Plain words, digits and symbols, so that any
/// tokenizer turns it into a few dozen ordinary tokens.
const CHECK_TEXT: &str =
    "Weight check: 12 + 30 = 42, so the answer is \\boxed{42}. The quick brown fox jumps over the lazy dog.";

pub struct WeightSyncer {
    method: SyncMethod,
    /// Where the disk sync writes (unused by NCCL).
    sync_dir: PathBuf,
    every: u64,
    check_ids: Vec<u32>,
    /// The version the servers serve (optimizer steps taken), once synced.
    served: Option<u64>,
}

impl WeightSyncer {
    pub fn new(method: SyncMethod, sync_dir: &Path, every: u64, tokenizer: &Tokenizer) -> Result<Self> {
        let sync_dir = match method {
            SyncMethod::Nccl => sync_dir.to_path_buf(),
            SyncMethod::Disk => {
                std::fs::create_dir_all(sync_dir)
                    .map_err(|error| GrpoError::Io { path: sync_dir.to_path_buf(), error })?;
                // The servers are told an absolute path (they run elsewhere, from other directories).
                sync_dir.canonicalize().map_err(|error| GrpoError::Io { path: sync_dir.to_path_buf(), error })?
            }
        };
        let check_ids = tokenizer.encode(CHECK_TEXT)?;
        if check_ids.len() < 2 {
            return Err(GrpoError::Config(
                "rollout: the tokenizer turns the weight check into fewer than 2 tokens".into(),
            ));
        }
        Ok(Self { method, sync_dir, every, check_ids, served: None })
    }

    /// The policy version the servers sample with.
    pub fn served(&self) -> Option<u64> {
        self.served
    }

    /// Whether the servers need `model` at `version` (optimizer steps taken): before the first
    /// generation, and every `rollout.sync_every` steps.
    pub fn due(&self, version: u64) -> bool {
        match self.served {
            None => true,
            Some(served) => version > served && version % self.every == 0,
        }
    }

    /// Hands `model` (the policy, or its generation copy) to `backend` as `version` (written for
    /// it to load, or sent) and has it checked; the metrics of the sync (`sync_*`).
    pub fn sync(&mut self, backend: &mut dyn WeightSync, model: &CausalLM, version: u64) -> Result<Map<String, Value>> {
        let start = Instant::now();
        let merged;
        let model = if model.lora().is_some() {
            merged = model.merged_copy()?;
            &merged
        } else {
            model
        };
        let dir = sync_folder(&self.sync_dir, version);
        if self.method == SyncMethod::Disk {
            self.write(model, &dir)?;
        }
        let check_logprobs = model.sequence_logprobs(std::slice::from_ref(&self.check_ids), 1.0)?.remove(0);
        let write_seconds = start.elapsed().as_secs_f64();
        let report = match self.method {
            SyncMethod::Disk => backend.load_weights(WeightsOnDisk {
                dir: dir.clone(),
                probe_ids: self.check_ids.clone(),
                probe_logprobs: check_logprobs,
            })?,
            SyncMethod::Nccl => backend.send_weights(WeightsInMemory {
                version,
                tensors: model.hf_weights(),
                probe_ids: self.check_ids.clone(),
                probe_logprobs: check_logprobs,
            })?,
        };
        self.served = Some(version);
        if self.method == SyncMethod::Disk {
            self.remove_older_than(&dir);
        }
        let metrics = json!({
            "sync_version": version,
            "sync_write_s": write_seconds,
            "sync_load_s": report.load_seconds,
            "sync_check_s": report.check_seconds,
            "sync_max_abs_logprob_diff": report.max_abs_logprob_diff,
            "sync_unreachable_servers": report.unreachable.len(),
        });
        Ok(metrics.as_object().expect("an object").clone())
    }

    /// Writes the model into `dir` through a temporary folder renamed at the end.
    fn write(&self, model: &CausalLM, dir: &Path) -> Result<()> {
        let name = dir.file_name().expect("a folder name").to_string_lossy();
        let partial = self.sync_dir.join(format!(".{name}.partial"));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |error| GrpoError::Io { path, error }
        };
        for stale in [&partial, &dir.to_path_buf()] {
            if stale.exists() {
                std::fs::remove_dir_all(stale).map_err(io(stale))?;
            }
        }
        std::fs::create_dir_all(&partial).map_err(io(&partial))?;
        model.save(&partial, SaveOptions::default())?;
        std::fs::rename(&partial, dir).map_err(io(dir))
    }

    /// Removes the weight folders other than `current` (the servers have moved on).
    fn remove_older_than(&self, current: &Path) {
        let Ok(entries) = std::fs::read_dir(&self.sync_dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if path != current && name.starts_with("weights-") && path.is_dir() {
                if let Err(e) = std::fs::remove_dir_all(&path) {
                    tracing::warn!("{}: could not remove old weights: {e}", path.display());
                }
            }
        }
    }
}
