//! The writing side: a thread owns the connection; the trainer sends it whole steps.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use rusqlite::{params, Connection};

use crate::schema::{open_for_writing, sqlite_error};
use crate::{TraceError, TraceGroup};

enum Message {
    Step(Vec<TraceGroup>),
    /// Reply once everything sent before is on disk.
    Flush(Sender<()>),
}

pub struct TraceWriter {
    path: PathBuf,
    sender: Option<Sender<Message>>,
    thread: Option<JoinHandle<Result<(), TraceError>>>,
}

impl TraceWriter {
    /// Opens `path` (creating it) and starts the writer thread. Traces of steps after
    /// `keep_through_step` are deleted first: when a run resumes from a checkpoint, the steps it
    /// is about to redo must not appear twice.
    pub fn open(path: &Path, keep_through_step: Option<u64>) -> Result<Self, TraceError> {
        let connection = open_for_writing(path)?;
        if let Some(step) = keep_through_step {
            let error = sqlite_error(path);
            connection.execute("DELETE FROM completions WHERE step > ?1", [step as i64]).map_err(&error)?;
            connection.execute("DELETE FROM groups WHERE step > ?1", [step as i64]).map_err(&error)?;
        }
        let (sender, receiver) = crossbeam_channel::unbounded::<Message>();
        let thread_path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("trace-writer".into())
            .spawn(move || {
                let mut connection = connection;
                for message in receiver {
                    match message {
                        Message::Step(groups) => insert(&mut connection, &thread_path, &groups)?,
                        Message::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
                Ok(())
            })
            .map_err(|e| TraceError::Store {
                path: path.to_path_buf(),
                message: format!("cannot start the writer: {e}"),
            })?;
        Ok(Self { path: path.to_path_buf(), sender: Some(sender), thread: Some(thread) })
    }

    /// Queues the groups of one step; returns at once.
    pub fn write(&self, groups: Vec<TraceGroup>) -> Result<(), TraceError> {
        self.send(Message::Step(groups))
    }

    /// Waits until everything queued so far is written (before a checkpoint is declared done).
    pub fn flush(&self) -> Result<(), TraceError> {
        let (done, wait) = crossbeam_channel::bounded(1);
        self.send(Message::Flush(done))?;
        wait.recv().map_err(|_| self.stopped())
    }

    /// Writes what is queued and stops the thread, reporting any error it met.
    pub fn close(mut self) -> Result<(), TraceError> {
        self.sender = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => {
                Err(TraceError::Store { path: self.path.clone(), message: "the writer thread panicked".into() })
            }
            None => Ok(()),
        }
    }

    fn send(&self, message: Message) -> Result<(), TraceError> {
        let sender = self.sender.as_ref().expect("open until closed");
        sender.send(message).map_err(|_| self.stopped())
    }

    /// The thread ended early: an insert failed. Its error comes out of `close`.
    fn stopped(&self) -> TraceError {
        TraceError::Store { path: self.path.clone(), message: "the writer stopped after an error (see close)".into() }
    }
}

impl Drop for TraceWriter {
    fn drop(&mut self) {
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            if let Ok(Err(error)) = thread.join() {
                tracing::error!("{error}");
            }
        }
    }
}

/// One transaction per step: a reader sees a step whole or not at all.
fn insert(connection: &mut Connection, path: &Path, groups: &[TraceGroup]) -> Result<(), TraceError> {
    let error = sqlite_error(path);
    let transaction = connection.transaction().map_err(&error)?;
    {
        let mut add_group = transaction
            .prepare_cached(
                "INSERT INTO groups (step, group_index, prompt_id, prompt, sample) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(&error)?;
        let mut add_completion = transaction
            .prepare_cached(
                "INSERT INTO completions (group_id, step, sample_index, text, tokens, finish_reason, reward, rewards, \
                 advantage, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .map_err(&error)?;
        for group in groups {
            let step = group.step as i64;
            let group_id = add_group
                .insert(params![step, group.index as i64, group.prompt_id, group.prompt, group.sample.to_string()])
                .map_err(&error)?;
            for (i, c) in group.completions.iter().enumerate() {
                let rewards = serde_json::to_string(&c.rewards).expect("a map of numbers serialises");
                add_completion
                    .execute(params![
                        group_id,
                        step,
                        i as i64,
                        c.text,
                        c.tokens,
                        c.finish_reason,
                        c.reward,
                        rewards,
                        c.advantage,
                        c.detail.to_string()
                    ])
                    .map_err(&error)?;
            }
        }
    }
    transaction.commit().map_err(&error)
}
