//! The run directory: everything a training run writes, laid out so that a kill at any moment
//! leaves a usable run.
//!
//! ```text
//! RUN_DIR/config.toml          the resolved configuration (every default written out)
//! RUN_DIR/run.lock             locked by the process training in the directory (its PID inside)
//! RUN_DIR/metrics.jsonl        one JSON object per step
//! RUN_DIR/traces.sqlite        every prompt and completion (aha-traces)
//! RUN_DIR/report.html          charts and a trace browser, written at the end (`aha report`)
//! RUN_DIR/checkpoints/step-N/  a Hugging Face model folder (with LoRA: a PEFT adapter folder),
//!                              plus optimizer.safetensors and trainer_state.json (the step, data
//!                              cursor and sampling counter)
//! ```
//!
//! A checkpoint is written into `checkpoints/.partial-step-N/` and renamed when complete
//! (`trainer_state.json` last), so `checkpoints/step-N/` either exists whole or not at all; a
//! leftover partial folder is removed at the next start. Only then are checkpoints beyond
//! `keep_last` deleted, oldest first.
//!
//! One process at a time trains in a run directory: a second `aha train` (fresh or `--resume`)
//! on a directory in use is refused with the holder's PID.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use aha_model::{CausalLM, SaveOptions};

use crate::error::{GrpoError, Result};
use crate::optim::AdamW;

pub const CONFIG_FILE: &str = "config.toml";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const REPORT_FILE: &str = "report.html";
const CHECKPOINTS: &str = "checkpoints";
const STATE_FILE: &str = "trainer_state.json";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const PARTIAL_PREFIX: &str = ".partial-";
const LOCK_FILE: &str = "run.lock";

/// What, besides the weights and the optimizer, a resumed run needs to continue exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Steps completed.
    pub step: u64,
    /// Problems taken from the training set so far (the data cursor; for `aha sft`, examples).
    pub problems_drawn: u64,
    /// Groups sampled so far: the next group's sampling seed is `run.seed + this` (0 for
    /// `aha sft`, which samples nothing).
    pub groups_sampled: u64,
    /// The aha version that wrote it.
    pub version: String,
}

impl TrainerState {
    /// The state of a run that has not taken a step.
    pub fn start() -> Self {
        Self { step: 0, problems_drawn: 0, groups_sampled: 0, version: env!("CARGO_PKG_VERSION").into() }
    }
}

pub struct RunDir {
    root: PathBuf,
    /// Held by the process that trains in this directory (see [`RunLock`]); `None` for a
    /// read-only view.
    _lock: Option<RunLock>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> GrpoError + '_ {
    move |error| GrpoError::Io { path: path.to_path_buf(), error }
}

/// An advisory lock on `RUN_DIR/run.lock` (flock), held for as long as a process trains in the
/// directory. The operating system releases it when the process ends, however it ends, so a
/// kill -9 leaves no stale lock; the file itself stays, holding the last holder's PID.
struct RunLock {
    _file: fs::File,
}

impl RunLock {
    fn acquire(root: &Path) -> Result<Self> {
        let path = root.join(LOCK_FILE);
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                let holder =
                    if holder.is_empty() { "another process".to_string() } else { format!("process {holder}") };
                return Err(GrpoError::RunDir(format!(
                    "{} is in use by {holder} (aha train or aha sft); wait for it to finish or stop it",
                    root.display()
                )));
            }
            Err(fs::TryLockError::Error(error)) => return Err(GrpoError::Io { path, error }),
        }
        file.set_len(0).and_then(|_| writeln!(file, "{}", std::process::id())).map_err(io(&path))?;
        Ok(Self { _file: file })
    }
}

impl RunDir {
    /// Whether `root` holds a run that has made progress: a config.toml and a metrics line or a
    /// complete checkpoint. A directory holding only what a failed start wrote is not one.
    fn holds_progress(root: &Path) -> bool {
        if !root.join(CONFIG_FILE).exists() {
            return false;
        }
        let metrics = fs::metadata(root.join(METRICS_FILE)).is_ok_and(|m| m.len() > 0);
        let view = Self { root: root.to_path_buf(), _lock: None };
        metrics || view.checkpoints().is_ok_and(|found| !found.is_empty())
    }

    /// A new run in `root`, which must not hold a run already (resume it instead).
    fn create(root: &Path, resolved_config: &str) -> Result<Self> {
        fs::create_dir_all(root).map_err(io(root))?;
        let lock = RunLock::acquire(root)?;
        if Self::holds_progress(root) {
            return Err(GrpoError::RunDir(format!(
                "{} already holds a run; continue it with `--resume {}` or choose another run.output_dir",
                root.display(),
                root.display()
            )));
        }
        fs::create_dir_all(root.join(CHECKPOINTS)).map_err(io(root))?;
        let run = Self { root: root.to_path_buf(), _lock: Some(lock) };
        write_atomically(&run.root.join(CONFIG_FILE), resolved_config.as_bytes())?;
        Ok(run)
    }

    /// An existing run, to read (`aha report`, `--resume` reading its config): nothing is locked,
    /// changed or removed.
    pub fn open(root: &Path) -> Result<Self> {
        if !root.join(CONFIG_FILE).is_file() {
            return Err(GrpoError::RunDir(format!("{}: not a run directory (no {CONFIG_FILE})", root.display())));
        }
        Ok(Self { root: root.to_path_buf(), _lock: None })
    }

    /// An existing run, locked for training in it, with its partial checkpoints (from a kill
    /// during a save) removed.
    fn open_to_train(root: &Path) -> Result<Self> {
        let mut run = Self::open(root)?;
        run._lock = Some(RunLock::acquire(root)?);
        let checkpoints = run.root.join(CHECKPOINTS);
        fs::create_dir_all(&checkpoints).map_err(io(&checkpoints))?;
        for entry in fs::read_dir(&checkpoints).map_err(io(&checkpoints))? {
            let path = entry.map_err(io(&checkpoints))?.path();
            if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(PARTIAL_PREFIX)) {
                tracing::warn!("removing {}, a checkpoint whose save was interrupted", path.display());
                fs::remove_dir_all(&path).map_err(io(&path))?;
            }
        }
        Ok(run)
    }

    /// Where a run starts, with the directory locked for this process until the `RunDir` is
    /// dropped: a new run directory with `resolved_config` in `root`, or, when `resume`, the
    /// existing one, its latest checkpoint (if any) and the state to continue from. Metric lines
    /// of steps after that checkpoint (written before a kill) are dropped, since the resumed run
    /// redoes those steps.
    pub fn begin(root: &Path, resolved_config: &str, resume: bool) -> Result<(Self, Option<PathBuf>, TrainerState)> {
        if !resume {
            return Ok((Self::create(root, resolved_config)?, None, TrainerState::start()));
        }
        let run = Self::open_to_train(root)?;
        match run.latest_checkpoint()? {
            Some((dir, state)) => {
                tracing::info!("resuming from {} (step {})", dir.display(), state.step);
                run.truncate_metrics(state.step)?;
                Ok((run, Some(dir), state))
            }
            None => {
                run.truncate_metrics(0)?;
                Ok((run, None, TrainerState::start()))
            }
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join(CONFIG_FILE)
    }

    pub fn metrics_path(&self) -> PathBuf {
        self.root.join(METRICS_FILE)
    }

    pub fn traces_path(&self) -> PathBuf {
        self.root.join(aha_traces::TRACE_FILE)
    }

    /// Complete checkpoints, oldest first: `(step, folder)`.
    pub fn checkpoints(&self) -> Result<Vec<(u64, PathBuf)>> {
        let dir = self.root.join(CHECKPOINTS);
        let mut found = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io(&dir))? {
            let path = entry.map_err(io(&dir))?.path();
            let step = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("step-"))
                .and_then(|n| n.parse().ok());
            if let Some(step) = step {
                if path.join(STATE_FILE).is_file() {
                    found.push((step, path));
                }
            }
        }
        found.sort();
        Ok(found)
    }

    /// The newest complete checkpoint and its state.
    pub fn latest_checkpoint(&self) -> Result<Option<(PathBuf, TrainerState)>> {
        let Some((_, dir)) = self.checkpoints()?.pop() else { return Ok(None) };
        let path = dir.join(STATE_FILE);
        let text = fs::read_to_string(&path).map_err(io(&path))?;
        let state = serde_json::from_str(&text)
            .map_err(|e| GrpoError::RunDir(format!("{}: not a trainer state: {e}", path.display())))?;
        Ok(Some((dir, state)))
    }

    /// Saves the policy, the optimizer and `state` as `checkpoints/step-N`, then deletes all but
    /// the newest `keep_last` (0 keeps all).
    pub fn save_checkpoint(
        &self,
        policy: &CausalLM,
        optimizer: &AdamW,
        state: &TrainerState,
        keep_last: usize,
    ) -> Result<PathBuf> {
        let checkpoints = self.root.join(CHECKPOINTS);
        let name = format!("step-{:06}", state.step);
        let partial = checkpoints.join(format!("{PARTIAL_PREFIX}{name}"));
        let done = checkpoints.join(&name);
        if partial.exists() {
            fs::remove_dir_all(&partial).map_err(io(&partial))?;
        }
        match policy.lora() {
            Some(_) => policy.save_adapter(&partial)?,
            None => policy.save(&partial, SaveOptions::default())?,
        }
        optimizer.save(&partial.join(OPTIMIZER_FILE))?;
        let state_json = serde_json::to_string_pretty(state).expect("the state serialises");
        write_atomically(&partial.join(STATE_FILE), state_json.as_bytes())?;
        if done.exists() {
            // Only when a resumed run saves a step it had saved before.
            fs::remove_dir_all(&done).map_err(io(&done))?;
        }
        fs::rename(&partial, &done).map_err(io(&done))?;
        if keep_last > 0 {
            let all = self.checkpoints()?;
            for (_, old) in all.iter().take(all.len().saturating_sub(keep_last)) {
                fs::remove_dir_all(old).map_err(io(old))?;
            }
        }
        Ok(done)
    }

    /// Loads the optimizer state saved in a checkpoint folder.
    pub fn load_optimizer(checkpoint: &Path, optimizer: &mut AdamW) -> Result<()> {
        optimizer.load(&checkpoint.join(OPTIMIZER_FILE))
    }

    /// Keeps the metric lines of steps up to `step` (those a resumed run will not redo).
    pub fn truncate_metrics(&self, step: u64) -> Result<()> {
        let path = self.metrics_path();
        let Ok(text) = fs::read_to_string(&path) else { return Ok(()) };
        let kept: String = text
            .lines()
            .filter(|line| {
                serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                    .is_some_and(|s| s <= step)
            })
            .map(|line| format!("{line}\n"))
            .collect();
        write_atomically(&path, kept.as_bytes())
    }

    /// Writes `report.html` (charts and a trace browser; see aha-traces) from what is on disk.
    pub fn write_report(&self) -> Result<PathBuf> {
        let title = self.root.file_name().map_or("aha run".into(), |n| n.to_string_lossy().into_owned());
        let html = aha_traces::render_report(&title, &self.metrics_path(), &self.traces_path())
            .map_err(|e| GrpoError::Traces(e.to_string()))?;
        let path = self.root.join(REPORT_FILE);
        write_atomically(&path, html.as_bytes())?;
        Ok(path)
    }

    /// Appends one line to metrics.jsonl and flushes it (readers see whole lines only).
    pub fn append_metrics(&self, line: &serde_json::Value) -> Result<()> {
        let path = self.metrics_path();
        let mut file = fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
        writeln!(file, "{line}").map_err(io(&path))
    }
}

/// Writes `path` through a temporary file and a rename: the old content or the new, never half.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let temporary = path.with_extension("partial");
    let mut file = fs::File::create(&temporary).map_err(io(&temporary))?;
    file.write_all(bytes).and_then(|_| file.sync_all()).map_err(io(&temporary))?;
    fs::rename(&temporary, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_the_lock_goes_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("run");
        let (first, _, _) = RunDir::begin(&root, "x = 1\n", false).unwrap();
        let held = format!("in use by process {}", std::process::id());
        for resume in [false, true] {
            let error = RunDir::begin(&root, "x = 1\n", resume).err().unwrap().to_string();
            assert!(error.contains(&held), "{error}");
        }
        // Reading is not holding.
        assert!(RunDir::open(&root).is_ok());
        drop(first);
        // A directory whose run took no step (a failed start) is free for a new run; one with
        // progress is not.
        let (second, _, _) = RunDir::begin(&root, "x = 2\n", false).unwrap();
        assert_eq!(fs::read_to_string(second.config_path()).unwrap(), "x = 2\n");
        second.append_metrics(&serde_json::json!({"step": 1})).unwrap();
        drop(second);
        let error = RunDir::begin(&root, "x = 3\n", false).err().unwrap().to_string();
        assert!(error.contains("already holds a run"), "{error}");
        assert!(RunDir::begin(&root, "x = 3\n", true).is_ok());
    }
}
