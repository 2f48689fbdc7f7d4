//! Reading a configuration file: TOML parsing, `--set key=value` overrides applied to the parsed
//! document, defaults that differ per command, and errors that name the file and line (or the
//! override) of the key at fault. Shared by `aha train`'s [`crate::config::TrainConfig`] and
//! `aha sft`'s [`crate::sft::SftConfig`]; what the keys mean lives with those types.
//!
//! Overrides are applied to the parsed document before it is deserialised, so they go through the
//! same checks: `--set optim.lr=1e-5`, `--set grpo.loss_type=dapo` (a value that is not valid TOML
//! is taken as a string, so `"dapo"` and `dapo` both work), `--set rewards.checkers.0.weight=0.5`
//! (a number indexes an array). A mistake in an override is reported against the override:
//! `--set optim.lr_rate=1: unknown field `lr_rate`, ...`.

use std::borrow::Cow;
use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::de::{DeArray, DeTable, DeValue};
use toml::Spanned;

use crate::config::Invalid;
use crate::error::{GrpoError, Result};

/// One `--set key=value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// The argument as given, for error messages.
    pub raw: String,
    /// Dotted key, split (`optim.lr` -> `["optim", "lr"]`).
    pub key: Vec<String>,
    /// The value text: TOML, or a plain string when it does not parse as TOML.
    pub value: String,
}

impl Override {
    pub fn parse(raw: &str) -> Result<Self> {
        let bad = |why: &str| GrpoError::Config(format!("--set {raw}: {why} (expected key=value, e.g. optim.lr=1e-5)"));
        let (key, value) = raw.split_once('=').ok_or_else(|| bad("no `=`"))?;
        let key: Vec<String> = key.trim().split('.').map(|k| k.trim().to_string()).collect();
        if key.iter().any(String::is_empty) {
            return Err(bad("empty key"));
        }
        Ok(Self { raw: raw.to_string(), key, value: value.trim().to_string() })
    }
}

/// The TOML parsing shared by every configuration (`aha train`'s [`TrainConfig`], `aha sft`'s
/// [`crate::sft::SftConfig`]): parses `text`, applies `overrides`, fills `defaults` (dotted keys
/// and TOML values set only where neither the file nor an override gives the key: defaults that
/// differ from those of a shared section, such as `aha sft`'s learning rate), deserialises, then
/// lets `finish` fill resolved defaults and validate. Every error is one line naming the file and
/// line, or the override.
pub(crate) fn parse_toml<T: DeserializeOwned>(
    text: &str,
    origin: &str,
    overrides: &[String],
    defaults: &[(&str, &str)],
    finish: impl FnOnce(&mut T) -> Result<(), Invalid>,
) -> Result<T> {
    let overrides: Vec<Override> = overrides.iter().map(|o| Override::parse(o)).collect::<Result<_>>()?;
    // The file and the override values share one buffer, so every value borrows from it and an
    // error's span says where it came from: before `text.len()`, the file; after, an override.
    let mut buffer = String::with_capacity(text.len() + 64);
    buffer.push_str(text);
    let mut ranges = Vec::with_capacity(overrides.len());
    for o in &overrides {
        buffer.push('\n');
        let start = buffer.len();
        buffer.push_str(&o.value);
        ranges.push(start..buffer.len());
    }
    let locate = Locator { origin, text_len: text.len(), buffer: &buffer, overrides: &overrides, ranges: &ranges };

    let root = DeTable::parse(&buffer[..text.len()]).map_err(|e| locate.error(e.span(), e.message()))?;
    let root_span = root.span();
    let mut root = DeValue::Table(root.into_inner());
    for (o, range) in overrides.iter().zip(&ranges) {
        let raw = &buffer[range.clone()];
        let value = match DeValue::parse(raw) {
            Ok(v) => v.into_inner(),
            Err(_) => DeValue::String(Cow::Borrowed(raw)),
        };
        let value = respan(value, range.clone());
        set_path(&mut root, &o.key, value, range.clone(), "").map_err(|m| locate.override_error(o, &m))?;
    }
    for (key, value) in defaults {
        let DeValue::Table(table) = &root else { unreachable!("the root stays a table") };
        if !has_key(table, key) {
            let path: Vec<String> = key.split('.').map(str::to_string).collect();
            let value = DeValue::parse(value).expect("a built-in default is valid TOML").into_inner();
            // Where the file has something else than a table on the way (`optim = 3`), the
            // default is left out and deserialising reports the file's mistake.
            let _ = set_path(&mut root, &path, respan(value, 0..0), 0..0, "");
        }
    }
    let DeValue::Table(root) = root else { unreachable!("the root stays a table") };
    let document = root.clone();
    let mut config =
        T::deserialize(toml::de::Deserializer::from(Spanned::new(root_span.clone(), root))).map_err(|e| {
            // A missing top-level key is reported at the whole document: no useful line.
            let span = e.span().filter(|span| *span != root_span);
            locate.error(span, e.message())
        })?;
    finish(&mut config).map_err(|invalid| {
        let span = find_span(&document, &invalid.key);
        locate.error(span, &invalid.message)
    })?;
    Ok(config)
}

/// Whether the dotted `key` (tables only) is set in `document`.
fn has_key(document: &DeTable, key: &str) -> bool {
    let mut table = Some(document);
    for part in key.split('.') {
        match table.and_then(|t| t.get(part)) {
            Some(entry) => table = entry.get_ref().as_table(),
            None => return false,
        }
    }
    true
}

/// Turns spans into `file:line:` or `--set ...:` prefixes.
struct Locator<'a> {
    origin: &'a str,
    text_len: usize,
    buffer: &'a str,
    overrides: &'a [Override],
    ranges: &'a [Range<usize>],
}

impl Locator<'_> {
    fn error(&self, span: Option<Range<usize>>, message: &str) -> GrpoError {
        let message = message.trim().replace('\n', " ");
        let Some(span) = span else { return GrpoError::Config(format!("{}: {message}", self.origin)) };
        if span.start >= self.text_len && self.text_len < self.buffer.len() {
            if let Some(i) = self.ranges.iter().position(|r| r.start <= span.start && span.start <= r.end) {
                return self.override_error(&self.overrides[i], &message);
            }
        }
        let line = self.buffer[..span.start.min(self.text_len)].matches('\n').count() + 1;
        GrpoError::Config(format!("{}:{line}: {message}", self.origin))
    }

    fn override_error(&self, o: &Override, message: &str) -> GrpoError {
        GrpoError::Config(format!("--set {}: {message}", o.raw))
    }
}

/// Gives every node of an override's value the span of the override, so errors point at it.
fn respan<'i>(value: DeValue<'i>, span: Range<usize>) -> Spanned<DeValue<'i>> {
    let value = match value {
        DeValue::Array(items) => {
            let mut array = DeArray::new();
            for item in items.iter() {
                array.push(respan(item.get_ref().clone(), span.clone()));
            }
            DeValue::Array(array)
        }
        DeValue::Table(entries) => {
            let mut table = DeTable::new();
            for (k, v) in entries.iter() {
                table
                    .insert(Spanned::new(span.clone(), k.get_ref().clone()), respan(v.get_ref().clone(), span.clone()));
            }
            DeValue::Table(table)
        }
        scalar => scalar,
    };
    Spanned::new(span, value)
}

fn type_name(value: &DeValue) -> &'static str {
    value.type_str()
}

/// Sets `path` in `node` to `value`, creating tables on the way; a number indexes an array.
fn set_path<'i>(
    node: &mut DeValue<'i>,
    path: &[String],
    value: Spanned<DeValue<'i>>,
    span: Range<usize>,
    walked: &str,
) -> std::result::Result<(), String> {
    let (head, rest) = path.split_first().expect("keys are not empty");
    let here = if walked.is_empty() { head.clone() } else { format!("{walked}.{head}") };
    match node {
        DeValue::Table(table) => {
            if rest.is_empty() {
                table.insert(Spanned::new(span, Cow::Owned(head.clone())), value);
                return Ok(());
            }
            if !table.contains_key(head.as_str()) {
                table.insert(
                    Spanned::new(span.clone(), Cow::Owned(head.clone())),
                    Spanned::new(span.clone(), DeValue::Table(DeTable::new())),
                );
            }
            let child = table.get_mut(head.as_str()).expect("inserted above");
            set_path(child.get_mut(), rest, value, span, &here)
        }
        DeValue::Array(items) => {
            let len = items.len();
            let index: usize =
                head.parse().map_err(|_| format!("`{walked}` is an array; index it with a number, not `{head}`"))?;
            let item = items.get_mut(index).ok_or_else(|| format!("`{walked}` has {len} entries, no index {index}"))?;
            if rest.is_empty() {
                *item = value;
                Ok(())
            } else {
                set_path(item.get_mut(), rest, value, span, &here)
            }
        }
        other => Err(format!("`{walked}` is a {}, not a table", type_name(other))),
    }
}

/// The span of the value at a dotted key in the parsed document, or of the nearest ancestor that
/// exists.
fn find_span(document: &DeTable, key: &str) -> Option<Range<usize>> {
    let mut span = None;
    let mut table = Some(document);
    let mut array: Option<&DeArray> = None;
    for part in key.split('.') {
        let entry = match (table, array) {
            (Some(t), _) => t.get(part),
            (None, Some(a)) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        };
        let Some(entry) = entry else { break };
        span = Some(entry.span());
        table = entry.get_ref().as_table();
        array = entry.get_ref().as_array();
    }
    span
}
