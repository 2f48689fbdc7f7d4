//! Chat templates: a model folder's Jinja template rendered with minijinja exactly as
//! transformers' `apply_chat_template(messages, tokenize=False, ...)` renders it.
//!
//! What "exactly" takes (transformers 5, `utils/chat_template_utils.py`):
//! - the template comes from `chat_template.jinja` when that file exists, else from
//!   `tokenizer_config.json`'s `chat_template` (a string, or a list of `{name, template}` of which
//!   `default` is used);
//! - the environment trims blocks and strips block indentation (`trim_blocks`, `lstrip_blocks`),
//!   drops the template's single trailing newline, and knows `loopcontrols`, Python's string and
//!   dict methods (`strip`, `split`, `startswith`, `items`, ... through minijinja-contrib's
//!   pycompat), `raise_exception(msg)`, `strftime_now(fmt)` (local time) and a `tojson` that is
//!   Python's `json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`
//!   (no HTML escaping; `", "` and `": "` separators);
//! - the context holds `messages` (keys whose value is null dropped; `reasoning_content`,
//!   `thinking` and `reasoning` aliased to one another as transformers does), `tools` and
//!   `documents` (`none` when not given, so `tools is defined` holds), `add_generation_prompt`,
//!   the special tokens of tokenizer_config.json (`bos_token`, `eos_token`, `unk_token`,
//!   `sep_token`, `pad_token`, `cls_token`, `mask_token`, written as strings or as
//!   `{"content": ...}` objects) and any extra keyword arguments, which override them.
//!
//! Not supported: transformers' `{% generation %}` tag (assistant-token masks) and
//! `continue_final_message`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use minijinja::value::{Kwargs, Serde, ValueKind};
use minijinja::{Environment, Error, ErrorKind};
use serde::Serialize;

pub use minijinja::Value;

/// The named special tokens transformers passes to every chat template, in its order.
const SPECIAL_TOKENS: [&str; 7] =
    ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"];

/// Message fields that carry a model's reasoning; transformers copies whichever is set to
/// `reasoning_content` and `thinking`.
const REASONING_FIELDS: [&str; 3] = ["reasoning_content", "thinking", "reasoning"];

const TEMPLATE_NAME: &str = "chat";

/// A chat template could not be read, compiled or rendered. One line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ChatTemplateError {
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("{}: no chat template (no chat_template.jinja, and no `chat_template` in tokenizer_config.json)", dir.display())]
    Missing { dir: PathBuf },
    #[error("{origin}: chat template does not compile: {message}")]
    Syntax { origin: String, message: String },
    #[error("{origin}: chat template failed: {message}")]
    Render { origin: String, message: String },
}

/// One chat message with plain text content. For tool calls, reasoning or content parts, build
/// the messages as [`Value`]s (see [`ordered_json`]) and use [`ChatTemplate::render_with`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message { role: role.into(), content: content.into() }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// Everything `apply_chat_template` takes besides the messages.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// Append the header that starts the assistant's turn.
    pub add_generation_prompt: bool,
    /// JSON schemas of the tools (a list), or `None`.
    pub tools: Option<Value>,
    /// Documents for retrieval-augmented templates (a list), or `None`.
    pub documents: Option<Value>,
    /// Extra template variables (`enable_thinking`, `date_string`, ...); they override the
    /// special tokens of the same name.
    pub kwargs: BTreeMap<String, Value>,
}

/// A compiled chat template and the special tokens it is rendered with. `Send + Sync`.
pub struct ChatTemplate {
    env: Environment<'static>,
    origin: String,
    special_tokens: Vec<(String, String)>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.origin)
            .field("special_tokens", &self.special_tokens)
            .finish()
    }
}

impl ChatTemplate {
    /// Reads the chat template of a Hugging Face model folder: `chat_template.jinja` if present,
    /// else `tokenizer_config.json`'s `chat_template`; special tokens from tokenizer_config.json
    /// (and a legacy `special_tokens_map.json`, as transformers reads it).
    pub fn from_dir(dir: &Path) -> Result<Self, ChatTemplateError> {
        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.is_file() { read_json(&config_path)? } else { serde_json::Value::Null };
        let jinja_path = dir.join("chat_template.jinja");
        let (source, origin) = if jinja_path.is_file() {
            let source = std::fs::read_to_string(&jinja_path)
                .map_err(|e| ChatTemplateError::File { path: jinja_path.clone(), message: e.to_string() })?;
            (source, jinja_path.display().to_string())
        } else {
            let source = template_from_config(&config, &config_path)?
                .ok_or_else(|| ChatTemplateError::Missing { dir: dir.to_path_buf() })?;
            (source, config_path.display().to_string())
        };

        let mut tokens: BTreeMap<&str, String> = BTreeMap::new();
        for name in SPECIAL_TOKENS {
            if let Some(token) = token_text(&config[name]) {
                tokens.insert(name, token);
            }
        }
        // transformers merges a legacy special_tokens_map.json only when the config has no
        // added_tokens_decoder; its entries then win.
        let map_path = dir.join("special_tokens_map.json");
        if map_path.is_file() && config.get("added_tokens_decoder").is_none() {
            let map = read_json(&map_path)?;
            for name in SPECIAL_TOKENS {
                if let Some(token) = token_text(&map[name]) {
                    tokens.insert(name, token);
                }
            }
        }
        let special_tokens =
            SPECIAL_TOKENS.iter().filter_map(|name| tokens.get(name).map(|t| (name.to_string(), t.clone()))).collect();
        Self::with_origin(source, origin, special_tokens)
    }

    /// Compiles `source` with the given special tokens (`("bos_token", "<s>")`, ...).
    pub fn from_source(source: impl Into<String>, special_tokens: &[(&str, &str)]) -> Result<Self, ChatTemplateError> {
        let tokens = special_tokens.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Self::with_origin(source.into(), "<template>".into(), tokens)
    }

    fn with_origin(
        source: String,
        origin: String,
        special_tokens: Vec<(String, String)>,
    ) -> Result<Self, ChatTemplateError> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(false)
            .build()
            .expect("the default delimiters are valid");
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(TEMPLATE_NAME, source)
            .map_err(|e| ChatTemplateError::Syntax { origin: origin.clone(), message: describe(&e) })?;
        Ok(ChatTemplate { env, origin, special_tokens })
    }

    /// The special token `name` (`"eos_token"`, ...) as the template sees it.
    pub fn special_token(&self, name: &str) -> Option<&str> {
        self.special_tokens.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Where the template came from (a file path, or `<template>`).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Renders plain-text messages:
    /// `apply_chat_template(messages, tokenize=False, add_generation_prompt=...)`.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, ChatTemplateError> {
        let options = RenderOptions { add_generation_prompt, ..RenderOptions::default() };
        self.render_with(&Value::from(Serde(messages)), &options)
    }

    /// Renders any messages (a list of maps) with tools, documents and extra variables.
    pub fn render_with(&self, messages: &Value, options: &RenderOptions) -> Result<String, ChatTemplateError> {
        let messages = normalize_messages(messages).map_err(|e| self.render_error(&e))?;
        let mut context: BTreeMap<String, Value> = BTreeMap::new();
        for (name, token) in &self.special_tokens {
            context.insert(name.clone(), Value::from(token.as_str()));
        }
        for (name, value) in &options.kwargs {
            context.insert(name.clone(), value.clone());
        }
        context.insert("messages".into(), messages);
        context.insert("tools".into(), options.tools.clone().unwrap_or(Value::from(())));
        context.insert("documents".into(), options.documents.clone().unwrap_or(Value::from(())));
        context.insert("add_generation_prompt".into(), Value::from(options.add_generation_prompt));
        let template = self.env.get_template(TEMPLATE_NAME).expect("the template was added at construction");
        template.render(Value::from(context)).map_err(|e| self.render_error(&e))
    }

    fn render_error(&self, error: &Error) -> ChatTemplateError {
        ChatTemplateError::Render { origin: self.origin.clone(), message: describe(error) }
    }
}

/// Parses JSON text into a template [`Value`], keeping the order of object keys (as Python's
/// dicts do, which `tojson` and `.items()` show).
pub fn ordered_json(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str(text)
}

fn read_json(path: &Path) -> Result<serde_json::Value, ChatTemplateError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ChatTemplateError::File { path: path.to_path_buf(), message: e.to_string() })?;
    serde_json::from_str(&text)
        .map_err(|e| ChatTemplateError::File { path: path.to_path_buf(), message: format!("not valid JSON: {e}") })
}

/// `chat_template` of a tokenizer_config.json: a string, or a list of `{name, template}`.
fn template_from_config(config: &serde_json::Value, path: &Path) -> Result<Option<String>, ChatTemplateError> {
    let bad = |message: &str| ChatTemplateError::File { path: path.to_path_buf(), message: message.to_string() };
    match config.get("chat_template") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(source)) => Ok(Some(source.clone())),
        Some(serde_json::Value::Array(entries)) => {
            let named = |wanted: &str| {
                entries.iter().find(|e| e["name"] == wanted).and_then(|e| e["template"].as_str().map(str::to_string))
            };
            named("default")
                .map(Some)
                .ok_or_else(|| bad("`chat_template` is a list of named templates without one named \"default\""))
        }
        Some(_) => Err(bad("`chat_template` must be a string or a list of {name, template}")),
    }
}

/// A special token written as a string or as an AddedToken object `{"content": ...}`.
fn token_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(str::to_string),
        _ => None,
    }
}

/// What transformers does to messages before rendering: drop null-valued keys, and copy a
/// message's reasoning (under any of its names) to `thinking` (first) and `reasoning_content`.
fn normalize_messages(messages: &Value) -> Result<Value, Error> {
    let mut out = Vec::new();
    for message in messages.try_iter()? {
        if message.kind() != ValueKind::Map {
            return Err(Error::new(ErrorKind::InvalidOperation, format!("a message must be a map, got {message}")));
        }
        let mut pairs: Vec<(Value, Value)> = Vec::new();
        for key in message.try_iter()? {
            let value = message.get_item(&key)?;
            if !value.is_none() && !value.is_undefined() {
                pairs.push((key, value));
            }
        }
        let get = |pairs: &[(Value, Value)], name: &str| {
            pairs.iter().find(|(k, _)| k.as_str() == Some(name)).map(|(_, v)| v.clone())
        };
        if let Some(reasoning) = REASONING_FIELDS.iter().find_map(|name| get(&pairs, name)) {
            // {"thinking": r, **message, "reasoning_content": r}
            if let Some(slot) = pairs.iter_mut().find(|(k, _)| k.as_str() == Some("thinking")) {
                slot.1 = reasoning.clone();
            } else {
                pairs.insert(0, (Value::from("thinking"), reasoning.clone()));
            }
            match pairs.iter_mut().find(|(k, _)| k.as_str() == Some("reasoning_content")) {
                Some(slot) => slot.1 = reasoning,
                None => pairs.push((Value::from("reasoning_content"), reasoning)),
            }
        }
        out.push(Value::from_pairs(pairs));
    }
    Ok(Value::from(out))
}

/// The error and its detail (template line) on one line.
fn describe(error: &Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let _ = write!(message, ": {cause}");
        source = cause.source();
    }
    message.replace('\n', " ")
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// Python's `datetime.now().strftime(format)`, in local time.
fn strftime_now(format: String) -> Result<Value, Error> {
    let mut out = String::new();
    write!(out, "{}", chrono::Local::now().format(&format))
        .map_err(|_| Error::new(ErrorKind::InvalidOperation, format!("strftime_now: bad format {format:?}")))?;
    Ok(Value::from(out))
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`.
fn tojson(value: &Value, kwargs: Kwargs) -> Result<String, Error> {
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let indent: Option<Value> = kwargs.get("indent")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match (v.as_i64(), v.as_str()) {
            (Some(n), _) => Some(" ".repeat(n.max(0) as usize)),
            (None, Some(s)) => Some(s.to_string()),
            _ => return Err(Error::new(ErrorKind::InvalidOperation, "tojson: indent must be an integer or a string")),
        },
    };
    let (item_separator, key_separator) = match separators.as_deref() {
        Some([item, key]) => (item.clone(), key.clone()),
        Some(_) => return Err(Error::new(ErrorKind::InvalidOperation, "tojson: separators must be two strings")),
        None if indent.is_some() => (",".to_string(), ": ".to_string()),
        None => (", ".to_string(), ": ".to_string()),
    };
    let dumper = PyJson {
        ensure_ascii: ensure_ascii.unwrap_or(false),
        indent,
        item_separator,
        key_separator,
        sort_keys: sort_keys.unwrap_or(false),
    };
    let mut out = String::new();
    dumper.write(&mut out, value, 0)?;
    Ok(out)
}

/// Python's `json.dumps`, over template values.
struct PyJson {
    ensure_ascii: bool,
    indent: Option<String>,
    item_separator: String,
    key_separator: String,
    sort_keys: bool,
}

impl PyJson {
    fn write(&self, out: &mut String, value: &Value, depth: usize) -> Result<(), Error> {
        match value.kind() {
            ValueKind::Undefined | ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
            ValueKind::Number => {
                if value.is_integer() {
                    out.push_str(&value.to_string());
                } else {
                    out.push_str(&python_float(f64::try_from(value.clone())?));
                }
            }
            ValueKind::String => self.string(out, value.as_str().unwrap_or_default()),
            ValueKind::Map => {
                let mut keys: Vec<Value> = value.try_iter()?.collect();
                if self.sort_keys {
                    keys.sort();
                }
                let items = keys
                    .into_iter()
                    .map(|key| {
                        let item = value.get_item(&key)?;
                        Ok((key, item))
                    })
                    .collect::<Result<Vec<_>, Error>>()?;
                self.container(out, '{', '}', &items, depth, |this, out, (key, item), depth| {
                    match key.kind() {
                        ValueKind::String => this.string(out, key.as_str().unwrap_or_default()),
                        // json.dumps turns int, float, bool and None keys into strings.
                        _ => {
                            let mut text = String::new();
                            this.write(&mut text, key, depth)?;
                            this.string(out, &text);
                        }
                    }
                    out.push_str(&this.key_separator);
                    this.write(out, item, depth)
                })?;
            }
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = value.try_iter()?.collect();
                self.container(out, '[', ']', &items, depth, |this, out, item, depth| this.write(out, item, depth))?;
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson: a value of kind {} is not JSON serializable", value.kind()),
                ))
            }
        }
        Ok(())
    }

    fn container<T>(
        &self,
        out: &mut String,
        open: char,
        close: char,
        items: &[T],
        depth: usize,
        write_item: impl Fn(&Self, &mut String, &T, usize) -> Result<(), Error>,
    ) -> Result<(), Error> {
        out.push(open);
        if items.is_empty() {
            out.push(close);
            return Ok(());
        }
        let newline = |out: &mut String, level: usize| {
            if let Some(indent) = &self.indent {
                out.push('\n');
                for _ in 0..level {
                    out.push_str(indent);
                }
            }
        };
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push_str(&self.item_separator);
            }
            newline(out, depth + 1);
            write_item(self, out, item, depth + 1)?;
        }
        newline(out, depth);
        out.push(close);
        Ok(())
    }

    fn string(&self, out: &mut String, text: &str) {
        out.push('"');
        for c in text.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{08}' => out.push_str("\\b"),
                '\u{0c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 || (self.ensure_ascii && !c.is_ascii()) => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        let _ = write!(out, "\\u{unit:04x}");
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// Python's `repr(float)` as json.dumps writes it: shortest round-trip digits, exponent form
/// below 1e-4 and from 1e16, `NaN` / `Infinity`.
fn python_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    let magnitude = x.abs();
    if magnitude != 0.0 && !(1e-4..1e16).contains(&magnitude) {
        // Rust: "1.5e20" / "1e-5"; Python: "1.5e+20" / "1e-05".
        let text = format!("{x:e}");
        let (mantissa, exponent) = text.split_once('e').expect("{:e} has an exponent");
        let (sign, digits) = match exponent.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exponent),
        };
        return format!("{mantissa}e{sign}{digits:0>2}");
    }
    let text = format!("{x}");
    if text.contains('.') {
        text
    } else {
        format!("{text}.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_python_does() {
        assert_eq!(python_float(0.5), "0.5");
        assert_eq!(python_float(3.0), "3.0");
        assert_eq!(python_float(-0.0), "-0.0");
        assert_eq!(python_float(1e16), "1e+16");
        assert_eq!(python_float(1.5e20), "1.5e+20");
        assert_eq!(python_float(1e-5), "1e-05");
        assert_eq!(python_float(0.0001), "0.0001");
        assert_eq!(python_float(123456789012345.6), "123456789012345.6");
        assert_eq!(python_float(f64::NAN), "NaN");
    }
}
