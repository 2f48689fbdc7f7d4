//! Tool-integrated reasoning: the policy runs Python in the sandbox in the middle of a completion.
//!
//! A completion calls the tool by writing a code block in one of the configured call formats
//! (by default a fenced ```` ```python ```` block, or `<python>…</python>`): as soon as the token
//! that completes the closing delimiter is sampled, the engine takes the sequence out of the
//! decode batch (its KV cache rows kept aside), sends the code to a [`ToolExecutor`] worker thread,
//! which runs it in the WASM sandbox (`aha-sandbox`, under the same limit options as the sandboxed
//! reward checkers, [`aha_rewards::sandboxed::RunOptions`]), and keeps decoding the other
//! sequences. When the result is back, its text (`<output>…</output>` by default; the stdout, or
//! the error a failing call ended with) is tokenized, capped at `max_output_tokens` (with a
//! marker), appended to the completion, prefilled onto the sequence's cache, and the sequence
//! rejoins the batch. The tokens of a result are context, not actions: they carry no sampled
//! log-prob (0.0 in `Completion::logprobs`), and [`Completion::tool_output_mask`] marks them so
//! that training leaves them out of the loss.
//!
//! A call is as untrusted as any completion: it runs in the sandbox (no host files, environment or
//! network; a deadline, a memory cap and an output cap), and whatever it does (loop, allocate,
//! print without end, raise) comes back as text; the sandbox never stalls or fails the run.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};

use aha_model::Tokenizer;
use aha_rewards::sandboxed::{self, RunOptions};
use aha_sandbox::{Sandbox, Status};

use crate::{Completion, RolloutError};

/// One way of writing a call: the code sits between `open` and `close`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallFormat {
    pub open: String,
    pub close: String,
}

/// `[tools.python]`: the Python tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PythonToolConfig {
    /// Let completions call the tool. Default false.
    pub enable: bool,
    /// Deadline of one call, in milliseconds. Default 2000.
    pub timeout_ms: u64,
    /// Memory cap of one call, in MiB. Default 256.
    pub memory_mb: u64,
    /// Cap on each of a call's stdout and stderr in the sandbox, in bytes. Default 65536.
    pub max_output_bytes: usize,
    /// Calls run at the same time (sandbox workers); 0 = one per CPU. Default 0.
    pub workers: usize,
    /// Longest result (between `output_open` and `output_close`), in tokens; longer ones are cut
    /// and end with `truncation_marker`. Default 256.
    pub max_output_tokens: usize,
    /// Most calls per completion; later code blocks are left as text. Default 4.
    pub max_calls: usize,
    /// Text before a result. Default `"\n<output>\n"`.
    pub output_open: String,
    /// Text after a result. Default `"\n</output>\n"`.
    pub output_close: String,
    /// Ends a result cut at `max_output_tokens`. Default `"\n[output truncated]"`.
    pub truncation_marker: String,
    /// Count result tokens in the completion length that length penalties see (`completion_tokens`
    /// for the checkers, the overlong penalty). Default false: only the model's own tokens count.
    pub count_output_in_length: bool,
    /// The call formats. Default: ```` ```python ```` … ```` ``` ````, and `<python>` … `</python>`.
    /// (Last: TOML writes arrays of tables after the plain values.)
    pub calls: Vec<CallFormat>,
}

impl Default for PythonToolConfig {
    fn default() -> Self {
        Self {
            enable: false,
            timeout_ms: 2_000,
            memory_mb: 256,
            max_output_bytes: 1 << 16,
            workers: 0,
            max_output_tokens: 256,
            max_calls: 4,
            calls: vec![
                CallFormat { open: "```python".into(), close: "```".into() },
                CallFormat { open: "<python>".into(), close: "</python>".into() },
            ],
            output_open: "\n<output>\n".into(),
            output_close: "\n</output>\n".into(),
            truncation_marker: "\n[output truncated]".into(),
            count_output_in_length: false,
        }
    }
}

/// `[tools]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToolsConfig {
    pub python: PythonToolConfig,
}

impl PythonToolConfig {
    /// The sandbox limits of a call, through the one place that turns these options into limits.
    pub fn run_options(&self) -> RunOptions {
        RunOptions {
            timeout_ms: self.timeout_ms,
            memory_mb: self.memory_mb,
            max_output_bytes: self.max_output_bytes,
            workers: (self.workers > 0).then_some(self.workers),
            cache_dir: None,
        }
    }

    /// Checks the values that cannot work: `(key, message)`.
    pub fn check(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, message: &str| Err((key.to_string(), message.to_string()));
        if !self.enable {
            return Ok(());
        }
        if self.calls.is_empty() {
            return bad("calls", "needs at least one call format");
        }
        if self.calls.iter().any(|c| c.open.is_empty() || c.close.is_empty()) {
            return bad("calls", "a call format needs a non-empty open and close");
        }
        if self.max_calls == 0 {
            return bad("max_calls", "must be at least 1 (or set enable = false)");
        }
        if self.timeout_ms == 0 || self.memory_mb == 0 || self.max_output_bytes == 0 {
            return bad("timeout_ms", "timeout_ms, memory_mb and max_output_bytes must be at least 1");
        }
        Ok(())
    }

    /// The first complete call in `text`: its code (the text between the delimiters, trimmed).
    /// Each format's open is looked for, and the earliest one whose close follows it wins.
    pub fn find_call<'t>(&self, text: &'t str) -> Option<&'t str> {
        let mut best: Option<(usize, &'t str)> = None;
        for format in &self.calls {
            let Some(open) = text.find(&format.open) else { continue };
            let body = open + format.open.len();
            let Some(close) = text[body..].find(&format.close) else { continue };
            if best.is_none_or(|(at, _)| open < at) {
                best = Some((open, &text[body..body + close]));
            }
        }
        best.map(|(_, code)| code.trim_matches(|c: char| c == '\n' || c == '\r'))
    }
}

impl PythonToolConfig {
    /// The code of the call that the last of `tokens` completed (`tokens`: a completion's tokens
    /// since its last call's result), if it completed one. Shared by the engine, which asks after
    /// every sampled token, and the remote backend, which asks where a server stopped.
    pub fn completed_call(&self, tokenizer: &Tokenizer, tokens: &[u32]) -> Result<Option<String>, RolloutError> {
        // The token that completes a call holds the last character of its close (or part of a
        // character: decoded alone, a replacement character). Most tokens do not: skip the rest.
        let Some(last) = tokens.last() else { return Ok(None) };
        let last = tokenizer.decode(std::slice::from_ref(last), false)?;
        let may_close = last.contains('\u{FFFD}')
            || self.calls.iter().any(|c| c.close.chars().last().is_some_and(|end| last.contains(end)));
        if !may_close {
            return Ok(None);
        }
        let text = tokenizer.decode(tokens, false)?;
        Ok(self.find_call(&text).map(str::to_string))
    }

    /// A result's tokens (`output_open`, the text cut at `max_output_tokens` with the marker,
    /// `output_close`), the text shown, and whether it was cut.
    pub fn result_tokens(&self, tokenizer: &Tokenizer, text: &str) -> Result<(Vec<u32>, String, bool), RolloutError> {
        // No token is longer than this many bytes in practice: tokenizing more would be wasted.
        let text = sandboxed::head(text, self.max_output_tokens.saturating_mul(64).max(64));
        let mut body = tokenizer.encode(text)?;
        let truncated = body.len() > self.max_output_tokens;
        let mut shown = text.to_string();
        if truncated {
            body.truncate(self.max_output_tokens);
            shown = tokenizer.decode(&body, false)?;
            body.extend(tokenizer.encode(&self.truncation_marker)?);
            shown.push_str(&self.truncation_marker);
        }
        let mut tokens = tokenizer.encode(&self.output_open)?;
        tokens.extend(body);
        tokens.extend(tokenizer.encode(&self.output_close)?);
        Ok((tokens, shown, truncated))
    }
}

/// One call a completion made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The code, as written between the delimiters.
    pub code: String,
    /// The sandbox's verdict: `ok`, `exit`, `error`, `timeout`, `memory_limit`, `output_limit`.
    pub status: String,
    /// The result as the model saw it (without `output_open` / `output_close`, after truncation).
    pub output: String,
    /// Seconds from the call leaving the batch to its result being back.
    pub seconds: f64,
    /// Where the result's tokens start in the completion (`output_open` included) and how many
    /// there are.
    pub output_start: usize,
    pub output_tokens: usize,
    /// The result was cut at `max_output_tokens`.
    pub truncated: bool,
}

impl ToolCall {
    pub fn is_error(&self) -> bool {
        self.status != "ok"
    }
}

/// For each of a completion's `len` tokens, whether it came from the result of one of `calls`
/// (context, not sampled by the policy); empty when there are no calls.
pub fn tool_output_mask(len: usize, calls: &[ToolCall]) -> Vec<bool> {
    if calls.is_empty() {
        return Vec::new();
    }
    let mut mask = vec![false; len];
    for call in calls {
        let end = (call.output_start + call.output_tokens).min(len);
        mask[call.output_start.min(end)..end].iter_mut().for_each(|m| *m = true);
    }
    mask
}

impl Completion {
    /// [`tool_output_mask`] of this completion.
    pub fn tool_output_mask(&self) -> Vec<bool> {
        tool_output_mask(self.token_ids.len(), &self.tool_calls)
    }

    /// Tokens that came from tool results.
    pub fn tool_output_tokens(&self) -> usize {
        self.tool_calls.iter().map(|c| c.output_tokens).sum()
    }
}

/// What a call came back with.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolResult {
    pub status: Status,
    /// What the model is shown: stdout, then the error text of a failing call.
    pub text: String,
    pub seconds: f64,
}

/// The observation a verdict becomes: stdout, and for a failing call the end of stderr (a
/// traceback) or the sandbox's reason.
pub fn observation(verdict: &aha_sandbox::Verdict) -> String {
    let mut text = verdict.stdout.clone();
    if verdict.status != Status::Ok {
        let reason = match verdict.status {
            Status::Timeout => "TimeoutError: the call ran past its time limit".to_string(),
            Status::OutputLimit => "[output limit reached]".to_string(),
            _ => {
                let stderr = sandboxed::tail(verdict.stderr.trim_end(), 2000);
                if stderr.is_empty() {
                    verdict.detail.clone().unwrap_or_else(|| format!("the call ended with {}", verdict.status))
                } else {
                    stderr.to_string()
                }
            }
        };
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&reason);
    } else if !verdict.stderr.is_empty() {
        text.push_str(sandboxed::tail(&verdict.stderr, 2000));
    }
    text
}

struct Call {
    id: u64,
    code: String,
    reply: Sender<(u64, ToolResult)>,
}

/// Runs calls on worker threads (never on the model thread), each in the sandbox. Shared by the
/// engines of a [`ShardedEngine`](crate::ShardedEngine); each engine gets its results back on its
/// own channel.
pub struct ToolExecutor {
    config: PythonToolConfig,
    calls: Option<Sender<Call>>,
    workers: Vec<JoinHandle<()>>,
}

impl ToolExecutor {
    /// Builds the sandbox (the bundled CPython; an error if it is missing) and the workers.
    pub fn new(config: PythonToolConfig) -> Result<Arc<Self>, RolloutError> {
        config.check().map_err(|(key, message)| RolloutError::Params(format!("tools.python.{key}: {message}")))?;
        let options = config.run_options();
        let sandbox: Sandbox = options
            .sandbox_spec(None)
            .sandbox()
            .map_err(|e| RolloutError::Params(format!("the Python tool needs the sandbox: {e}")))?;
        let limits = options.limits();
        let threads = sandbox.workers().max(1);
        let (calls, queue) = crossbeam_channel::unbounded::<Call>();
        let workers = (0..threads)
            .map(|i| {
                let queue: Receiver<Call> = queue.clone();
                let sandbox = sandbox.clone();
                std::thread::Builder::new()
                    .name(format!("tool-{i}"))
                    .spawn(move || {
                        for call in queue {
                            let start = Instant::now();
                            let verdict = sandbox.run(sandboxed::job(call.code, Vec::<u8>::new(), limits));
                            let result = ToolResult {
                                status: verdict.status,
                                text: observation(&verdict),
                                seconds: start.elapsed().as_secs_f64(),
                            };
                            let _ = call.reply.send((call.id, result));
                        }
                    })
                    .expect("spawn a tool worker")
            })
            .collect();
        Ok(Arc::new(Self { config, calls: Some(calls), workers }))
    }

    pub fn config(&self) -> &PythonToolConfig {
        &self.config
    }

    /// Queues `code`; its result comes back on `reply` tagged with `id`.
    pub fn submit(&self, id: u64, code: String, reply: Sender<(u64, ToolResult)>) {
        let call = Call { id, code, reply };
        if let Err(crossbeam_channel::SendError(call)) =
            self.calls.as_ref().expect("workers run until dropped").send(call)
        {
            let result = ToolResult { status: Status::Error, text: "the tool workers stopped".into(), seconds: 0.0 };
            let _ = call.reply.send((call.id, result));
        }
    }

    /// Runs one call and waits for it (for tests and tools outside the engine).
    pub fn run(&self, code: &str) -> ToolResult {
        let (reply, results) = crossbeam_channel::bounded(1);
        self.submit(0, code.to_string(), reply);
        results.recv().map(|(_, r)| r).unwrap_or(ToolResult {
            status: Status::Error,
            text: "the tool workers stopped".into(),
            seconds: 0.0,
        })
    }
}

impl Drop for ToolExecutor {
    fn drop(&mut self) {
        self.calls = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}
