//! `config.json` as Hugging Face writes it, for the three supported decoder families.
//!
//! Every value comes from the file; the defaults below are those of transformers' config classes
//! for fields that older or trimmed files leave out.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{io_error, ModelError, Result};
use crate::Architecture;

/// Rotary position embedding: base frequency and the frequency rescaling, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    pub theta: f64,
    pub scaling: RopeScaling,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// inv_freq = 1 / theta^(2i/d).
    Default,
    /// Position interpolation: every frequency divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.1's wavelength-dependent rescaling (low frequencies divided by `factor`, high ones
    /// kept, a smooth blend between).
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_position_embeddings: f64 },
}

/// The resolved configuration of a decoder-only model.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: usize,
    pub num_attention_heads: i64,
    pub num_key_value_heads: i64,
    pub head_dim: i64,
    pub rms_norm_eps: f64,
    pub rope: RopeConfig,
    pub max_position_embeddings: i64,
    pub tie_word_embeddings: bool,
    /// Biases on q_proj, k_proj and v_proj.
    pub qkv_bias: bool,
    /// Bias on o_proj.
    pub o_bias: bool,
    /// Biases on gate_proj, up_proj and down_proj.
    pub mlp_bias: bool,
    /// Qwen3: an RMSNorm over each head of q and k before RoPE.
    pub qk_norm: bool,
    pub bos_token_id: Option<u32>,
    /// Generation stops at any of these (config.json may give one id or a list).
    pub eos_token_ids: Vec<u32>,
    /// The file as read, so that saving writes back every field we do not model.
    pub raw: Value,
}

/// The subset of fields we read; serde ignores the rest (they stay in `ModelConfig::raw`).
#[derive(Deserialize)]
struct RawConfig {
    vocab_size: i64,
    hidden_size: i64,
    intermediate_size: i64,
    num_hidden_layers: i64,
    num_attention_heads: i64,
    num_key_value_heads: Option<i64>,
    head_dim: Option<i64>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    max_position_embeddings: Option<i64>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    use_sliding_window: Option<bool>,
    bos_token_id: Option<Value>,
    eos_token_id: Option<Value>,
}

impl ModelConfig {
    /// Reads `DIR/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(io_error(&path))?;
        Self::from_json_str(&text, &path)
    }

    /// Parses the text of a config.json; `path` only names the file in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let err = |message: String| ModelError::Config { path: path.to_path_buf(), message };
        let raw: Value = serde_json::from_str(text).map_err(|e| err(format!("malformed JSON: {e}")))?;
        let model_type = raw.get("model_type").and_then(Value::as_str).unwrap_or("").to_string();
        let architecture = Architecture::from_model_type(&model_type)
            .ok_or_else(|| ModelError::UnsupportedArchitecture { path: path.to_path_buf(), found: model_type })?;
        let c: RawConfig = serde_json::from_value(raw.clone()).map_err(|e| err(e.to_string()))?;

        for (name, value) in [
            ("vocab_size", c.vocab_size),
            ("hidden_size", c.hidden_size),
            ("intermediate_size", c.intermediate_size),
            ("num_hidden_layers", c.num_hidden_layers),
            ("num_attention_heads", c.num_attention_heads),
        ] {
            if value <= 0 {
                return Err(err(format!("{name} must be positive, got {value}")));
            }
        }
        let heads = c.num_attention_heads;
        let kv_heads = c.num_key_value_heads.unwrap_or(heads);
        if kv_heads <= 0 || heads % kv_heads != 0 {
            return Err(err(format!(
                "num_attention_heads ({heads}) must be a positive multiple of num_key_value_heads ({kv_heads})"
            )));
        }
        let head_dim = match c.head_dim {
            Some(d) if d > 0 => d,
            Some(d) => return Err(err(format!("head_dim must be positive, got {d}"))),
            None if c.hidden_size % heads == 0 => c.hidden_size / heads,
            None => {
                return Err(err(format!(
                    "hidden_size ({}) is not a multiple of num_attention_heads ({heads}) and head_dim is not given",
                    c.hidden_size
                )))
            }
        };
        if head_dim % 2 != 0 {
            return Err(err(format!("head_dim must be even for rotary embeddings, got {head_dim}")));
        }
        if c.use_sliding_window == Some(true) {
            return Err(err("use_sliding_window = true is not supported (full attention only)".into()));
        }
        let rope = parse_rope(c.rope_theta, c.rope_scaling.as_ref(), c.rope_parameters.as_ref()).map_err(err)?;
        let token_ids = |field: &str, value: Option<&Value>| -> Result<Vec<u32>> {
            match value {
                None | Some(Value::Null) => Ok(vec![]),
                Some(Value::Number(n)) => {
                    Ok(vec![as_token_id(n).ok_or_else(|| err(format!("{field} is not a token id: {n}")))?])
                }
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| {
                        v.as_u64()
                            .and_then(|n| u32::try_from(n).ok())
                            .ok_or_else(|| err(format!("{field} has a non-id entry {v}")))
                    })
                    .collect(),
                Some(other) => Err(err(format!("{field} must be an id or a list of ids, got {other}"))),
            }
        };
        let bos_token_id = token_ids("bos_token_id", c.bos_token_id.as_ref())?.first().copied();
        let eos_token_ids = token_ids("eos_token_id", c.eos_token_id.as_ref())?;
        if let Some(bad) = eos_token_ids.iter().chain(bos_token_id.iter()).find(|&&id| i64::from(id) >= c.vocab_size) {
            return Err(err(format!("special token id {bad} is outside vocab_size {}", c.vocab_size)));
        }

        let attention_bias = c.attention_bias.unwrap_or(false);
        let (qkv_bias, o_bias) = match architecture {
            // Qwen2 always has q/k/v biases and never an o_proj bias; transformers ignores
            // `attention_bias` for it.
            Architecture::Qwen2 => (true, false),
            Architecture::Llama | Architecture::Qwen3 => (attention_bias, attention_bias),
        };
        Ok(Self {
            architecture,
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            num_hidden_layers: c.num_hidden_layers as usize,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            rms_norm_eps: c.rms_norm_eps.unwrap_or(1e-6),
            rope,
            max_position_embeddings: c.max_position_embeddings.unwrap_or(32768),
            tie_word_embeddings: c.tie_word_embeddings.unwrap_or(false),
            qkv_bias,
            o_bias,
            mlp_bias: architecture == Architecture::Llama && c.mlp_bias.unwrap_or(false),
            qk_norm: architecture == Architecture::Qwen3,
            bos_token_id,
            eos_token_ids,
            raw,
        })
    }

    /// Bytes of K and V cache per token for one sequence, at `bytes_per_element`.
    pub fn kv_cache_bytes_per_token(&self, bytes_per_element: usize) -> usize {
        2 * self.num_hidden_layers * (self.num_key_value_heads * self.head_dim) as usize * bytes_per_element
    }

    /// Number of parameters the checkpoint holds (lm_head counted once when tied).
    pub fn num_parameters(&self) -> i64 {
        let (h, i, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let attention = h * q
            + 2 * h * kv
            + q * h
            + if self.qkv_bias { q + 2 * kv } else { 0 }
            + if self.o_bias { h } else { 0 }
            + if self.qk_norm { 2 * self.head_dim } else { 0 };
        let mlp = 3 * h * i + if self.mlp_bias { 2 * i + h } else { 0 };
        let layer = attention + mlp + 2 * h;
        let head = if self.tie_word_embeddings { 0 } else { v * h };
        v * h + self.num_hidden_layers as i64 * layer + h + head
    }
}

fn as_token_id(n: &serde_json::Number) -> Option<u32> {
    n.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// transformers 4.x writes `rope_theta` and `rope_scaling`; 5.x writes `rope_parameters` holding
/// both. Accept either.
fn parse_rope(theta: Option<f64>, scaling: Option<&Value>, parameters: Option<&Value>) -> Result<RopeConfig, String> {
    let params = match (parameters, scaling) {
        (Some(p), _) if !p.is_null() => Some(p),
        (_, Some(s)) if !s.is_null() => Some(s),
        _ => None,
    };
    let theta = params.and_then(|p| p.get("rope_theta")).and_then(Value::as_f64).or(theta).unwrap_or(10000.0);
    if !(theta > 0.0) {
        return Err(format!("rope_theta must be positive, got {theta}"));
    }
    let Some(params) = params else {
        return Ok(RopeConfig { theta, scaling: RopeScaling::Default });
    };
    if !params.is_object() {
        return Err(format!("rope parameters must be an object, got {params}"));
    }
    let kind = params.get("rope_type").or_else(|| params.get("type")).and_then(Value::as_str).unwrap_or("default");
    let number = |key: &str| -> Result<f64, String> {
        params
            .get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("rope parameters of type {kind} need a number \"{key}\""))
    };
    let scaling = match kind {
        "default" => RopeScaling::Default,
        "linear" => RopeScaling::Linear { factor: number("factor")? },
        "llama3" => RopeScaling::Llama3 {
            factor: number("factor")?,
            low_freq_factor: number("low_freq_factor")?,
            high_freq_factor: number("high_freq_factor")?,
            original_max_position_embeddings: number("original_max_position_embeddings")?,
        },
        other => return Err(format!("unsupported rope_type \"{other}\" (supported: default, linear, llama3)")),
    };
    Ok(RopeConfig { theta, scaling })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<ModelConfig> {
        ModelConfig::from_json_str(json, Path::new("config.json"))
    }

    const BASE: &str = r#""vocab_size": 100, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4"#;

    #[test]
    fn reads_llama3_rope_in_both_layouts() {
        let v4 = parse(&format!(
            r#"{{"model_type": "llama", {BASE}, "rope_theta": 500000.0, "rope_scaling": {{"rope_type": "llama3",
               "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}}, "eos_token_id": [1, 2]}}"#
        ))
        .unwrap();
        let v5 = parse(&format!(
            r#"{{"model_type": "llama", {BASE}, "rope_parameters": {{"rope_type": "llama3", "rope_theta": 500000.0,
               "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}}, "eos_token_id": [1, 2]}}"#
        ))
        .unwrap();
        assert_eq!(v4.rope, v5.rope);
        assert_eq!(v4.rope.theta, 500000.0);
        assert!(matches!(v4.rope.scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0));
        assert_eq!(v4.eos_token_ids, vec![1, 2]);
        assert_eq!(v4.num_key_value_heads, 4);
        assert_eq!(v4.head_dim, 8);
    }

    #[test]
    fn architecture_flags() {
        let qwen2 = parse(&format!(r#"{{"model_type": "qwen2", {BASE}, "eos_token_id": 3}}"#)).unwrap();
        assert!(qwen2.qkv_bias && !qwen2.o_bias && !qwen2.qk_norm);
        assert_eq!(qwen2.eos_token_ids, vec![3]);
        let qwen3 = parse(&format!(r#"{{"model_type": "qwen3", {BASE}, "head_dim": 16}}"#)).unwrap();
        assert!(!qwen3.qkv_bias && qwen3.qk_norm);
        assert_eq!(qwen3.head_dim, 16);
    }

    #[test]
    fn rejects_bad_configs_with_a_named_field() {
        let unsupported = parse(&format!(r#"{{"model_type": "gpt2", {BASE}}}"#)).unwrap_err().to_string();
        assert!(
            unsupported.contains("unsupported model_type \"gpt2\"") && unsupported.contains("qwen2, llama, qwen3"),
            "{unsupported}"
        );
        let malformed = parse("{\"model_type\": ").unwrap_err().to_string();
        assert!(malformed.starts_with("config.json: malformed JSON"), "{malformed}");
        let missing = parse(r#"{"model_type": "qwen2", "vocab_size": 10}"#).unwrap_err().to_string();
        assert!(missing.contains("missing field `hidden_size`"), "{missing}");
        let heads =
            parse(&format!(r#"{{"model_type": "qwen2", {BASE}, "num_key_value_heads": 3}}"#)).unwrap_err().to_string();
        assert!(heads.contains("num_key_value_heads (3)"), "{heads}");
        let rope = parse(&format!(
            r#"{{"model_type": "llama", {BASE}, "rope_scaling": {{"rope_type": "yarn", "factor": 2.0}}}}"#
        ))
        .unwrap_err()
        .to_string();
        assert!(rope.contains("unsupported rope_type \"yarn\""), "{rope}");
        let eos = parse(&format!(r#"{{"model_type": "qwen2", {BASE}, "eos_token_id": 100}}"#)).unwrap_err().to_string();
        assert!(eos.contains("outside vocab_size"), "{eos}");
    }
}
