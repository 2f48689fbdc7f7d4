//! Checkers by name, weighted combinations from a config, and per-checker means.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::checker::{CheckError, Checker, ProblemFields, Score, Verdict};

/// A configuration mistake: unknown checker name, bad options, bad weight.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown checker `{name}` (known: {known})")]
    UnknownChecker { name: String, known: String },
    #[error("options of checker `{name}`: {message}")]
    BadOptions { name: String, message: String },
    #[error("checker `{name}`: weight {weight} is not a finite number")]
    BadWeight { name: String, weight: f64 },
    #[error("the reward config lists no checkers")]
    Empty,
}

impl ConfigError {
    /// Turns a serde error on a checker's `options` into a [`ConfigError::BadOptions`].
    pub fn options(name: &str, error: impl std::fmt::Display) -> Self {
        ConfigError::BadOptions { name: name.to_string(), message: error.to_string() }
    }
}

/// Builds a checker from its JSON `options` (`Value::Null` when none were given).
pub type Factory = Arc<dyn Fn(&Value) -> Result<Box<dyn Checker>, ConfigError> + Send + Sync>;

/// Checkers by name. [`Registry::with_builtins`] knows `math`, `countdown`, `format`,
/// `format_tags`, `length`, `code` and the plug-in hosts `python` and `wasi`; [`Registry::register`] adds any Rust type implementing [`Checker`].
#[derive(Clone, Default)]
pub struct Registry {
    factories: BTreeMap<String, Factory>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The built-in checkers.
    pub fn with_builtins() -> Self {
        let mut registry = Self::new();
        registry
            .register("math", |options| Ok(Box::new(crate::math::MathChecker::new(parse_options("math", options)?))));
        registry.register("countdown", |options| {
            Ok(Box::new(crate::countdown::CountdownChecker::new(parse_options("countdown", options)?)))
        });
        registry.register("format", |options| {
            Ok(Box::new(crate::format::FormatChecker::new(parse_options("format", options)?)?))
        });
        registry.register("format_tags", |options| {
            Ok(Box::new(crate::format::TagCountChecker::new(parse_options("format_tags", options)?)))
        });
        registry.register("length", |options| {
            Ok(Box::new(crate::length::LengthChecker::new(parse_options("length", options)?)?))
        });
        registry
            .register("code", |options| Ok(Box::new(crate::code::CodeChecker::new(parse_options("code", options)?))));
        registry.register("python", |options| {
            Ok(Box::new(crate::plugin::PythonPluginChecker::new(parse_required("python", options, "file")?)?))
        });
        registry.register("wasi", |options| {
            Ok(Box::new(crate::plugin::WasiPluginChecker::new(parse_required("wasi", options, "module")?)))
        });
        registry
    }

    /// Registers (or replaces) a checker under `name`.
    pub fn register<F>(&mut self, name: &str, factory: F)
    where
        F: Fn(&Value) -> Result<Box<dyn Checker>, ConfigError> + Send + Sync + 'static,
    {
        self.factories.insert(name.to_string(), Arc::new(factory));
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.factories.keys().cloned().collect()
    }

    /// Builds the checker `name` with `options` (`Value::Null` for the defaults).
    pub fn build(&self, name: &str, options: &Value) -> Result<Box<dyn Checker>, ConfigError> {
        let factory = self
            .factories
            .get(name)
            .ok_or_else(|| ConfigError::UnknownChecker { name: name.to_string(), known: self.names().join(", ") })?;
        factory(options)
    }

    /// Builds the weighted combination that `config` describes.
    pub fn build_combined(&self, config: &RewardConfig) -> Result<CombinedChecker, ConfigError> {
        if config.checkers.is_empty() {
            return Err(ConfigError::Empty);
        }
        let mut parts = Vec::with_capacity(config.checkers.len());
        for spec in &config.checkers {
            if !spec.weight.is_finite() {
                return Err(ConfigError::BadWeight { name: spec.name.clone(), weight: spec.weight });
            }
            let checker = self.build(&spec.name, &spec.options)?;
            let label = spec.label.clone().unwrap_or_else(|| spec.name.clone());
            parts.push((label, spec.weight, checker));
        }
        Ok(CombinedChecker { parts })
    }
}

/// Deserialises a checker's options; `null` means all defaults.
pub fn parse_options<T: serde::de::DeserializeOwned + Default>(name: &str, options: &Value) -> Result<T, ConfigError> {
    match options {
        Value::Null => Ok(T::default()),
        other => serde_json::from_value(other.clone()).map_err(|e| ConfigError::options(name, e)),
    }
}

/// Deserialises options that have a required key (`null` is an error naming it).
pub fn parse_required<T: serde::de::DeserializeOwned>(
    name: &str,
    options: &Value,
    key: &str,
) -> Result<T, ConfigError> {
    match options {
        Value::Null => Err(ConfigError::options(name, format!("missing option `{key}`"))),
        other => serde_json::from_value(other.clone()).map_err(|e| ConfigError::options(name, e)),
    }
}

/// One entry of a reward config: `{"name": "math", "weight": 1.0, "options": {...}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckerSpec {
    pub name: String,
    #[serde(default = "one")]
    pub weight: f64,
    #[serde(default)]
    pub options: Value,
    /// How the part is reported (defaults to `name`; set it to use one checker twice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

fn one() -> f64 {
    1.0
}

/// A weighted combination of checkers: `{"checkers": [{"name", "weight", "options"}, ...]}`
/// (in TOML, `[[checkers]]` tables).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardConfig {
    pub checkers: Vec<CheckerSpec>,
}

/// Several checkers with weights. Its verdict's reward is `sum(weight_i * reward_i)`; its detail is
/// `{"total": .., "parts": {label: {"weight", "status", "reward"|"reason", "detail"}}}`. If any
/// part skips, the combination skips (the problem cannot be fully judged), and the detail still
/// holds every part.
pub struct CombinedChecker {
    parts: Vec<(String, f64, Box<dyn Checker>)>,
}

/// Each part's verdict and the weighted total (`None` when some part skipped).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Breakdown {
    pub total: Option<f64>,
    pub parts: Vec<(String, f64, Verdict)>,
}

impl CombinedChecker {
    /// The labels of the parts, in config order.
    pub fn labels(&self) -> Vec<&str> {
        self.parts.iter().map(|(label, _, _)| label.as_str()).collect()
    }

    /// Runs every part and keeps each verdict.
    pub fn breakdown(&self, completion: &str, fields: &ProblemFields) -> Result<Breakdown, CheckError> {
        let mut parts = Vec::with_capacity(self.parts.len());
        let mut total = Some(0.0);
        for (label, weight, checker) in &self.parts {
            let verdict = checker.check(completion, fields)?;
            total = match (total, verdict.reward_value()) {
                (Some(sum), Some(reward)) => Some(sum + weight * reward),
                _ => None,
            };
            parts.push((label.clone(), *weight, verdict));
        }
        Ok(Breakdown { total, parts })
    }
}

impl Checker for CombinedChecker {
    fn name(&self) -> &str {
        "combined"
    }

    fn required_fields(&self) -> Vec<String> {
        let mut fields: Vec<String> = self.parts.iter().flat_map(|(_, _, c)| c.required_fields()).collect();
        fields.sort();
        fields.dedup();
        fields
    }

    fn check(&self, completion: &str, fields: &ProblemFields) -> Result<Verdict, CheckError> {
        let breakdown = self.breakdown(completion, fields)?;
        let mut parts = serde_json::Map::new();
        let mut skip_reasons = Vec::new();
        for (label, weight, verdict) in &breakdown.parts {
            let mut entry = serde_json::Map::new();
            entry.insert("weight".into(), json!(weight));
            match &verdict.score {
                Score::Reward { reward } => {
                    entry.insert("status".into(), json!("reward"));
                    entry.insert("reward".into(), json!(reward));
                }
                Score::Skip { reason } => {
                    entry.insert("status".into(), json!("skip"));
                    entry.insert("reason".into(), json!(reason));
                    skip_reasons.push(format!("{label}: {reason}"));
                }
            }
            entry.insert("detail".into(), verdict.detail.clone());
            parts.insert(label.clone(), Value::Object(entry));
        }
        let detail = json!({ "total": breakdown.total, "parts": parts });
        Ok(match breakdown.total {
            Some(total) => Verdict::reward(total, detail),
            None => Verdict::skip(skip_reasons.join("; "), detail),
        })
    }
}

/// Running mean of each checker's reward (skips are counted, not averaged).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MeanTracker {
    stats: BTreeMap<String, MeanStat>,
}

/// One checker's running statistics.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MeanStat {
    pub sum: f64,
    pub count: u64,
    pub skipped: u64,
}

impl MeanStat {
    /// Mean reward over the judged samples (`None` if none was judged).
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

impl MeanTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one verdict under `label`.
    pub fn add(&mut self, label: &str, verdict: &Verdict) {
        let stat = self.stats.entry(label.to_string()).or_default();
        match verdict.reward_value() {
            Some(reward) => {
                stat.sum += reward;
                stat.count += 1;
            }
            None => stat.skipped += 1,
        }
    }

    /// Adds every part of a breakdown, plus its total under `"total"`.
    pub fn add_breakdown(&mut self, breakdown: &Breakdown) {
        for (label, _, verdict) in &breakdown.parts {
            self.add(label, verdict);
        }
        let stat = self.stats.entry("total".to_string()).or_default();
        match breakdown.total {
            Some(total) => {
                stat.sum += total;
                stat.count += 1;
            }
            None => stat.skipped += 1,
        }
    }

    pub fn get(&self, label: &str) -> Option<&MeanStat> {
        self.stats.get(label)
    }

    /// `label -> mean` for every label with at least one judged sample.
    pub fn means(&self) -> BTreeMap<String, f64> {
        self.stats.iter().filter_map(|(k, s)| s.mean().map(|m| (k.clone(), m))).collect()
    }
}
