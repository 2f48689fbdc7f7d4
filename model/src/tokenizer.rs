//! `tokenizer.json` through the tokenizers crate, checked against the model's vocabulary.
//!
//! `encode` never adds special tokens: transformers' `tokenizer(text)` adds a BOS for Llama 3,
//! which is what chat templates and prompt templates decide explicitly, not the tokenizer.

use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};

#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl Tokenizer {
    /// Reads `DIR/tokenizer.json` and checks that every id it can produce is below
    /// `model_vocab_size` (config.json's vocab_size may be larger: Qwen pads it, never smaller).
    pub fn from_dir(dir: &Path, model_vocab_size: i64) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(ModelError::Tokenizer { path, message: "file not found".into() });
        }
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| ModelError::Tokenizer { path: path.clone(), message: format!("cannot read: {e}") })?;
        let largest = inner.get_vocab(true).into_values().max().unwrap_or(0);
        if i64::from(largest) >= model_vocab_size {
            return Err(ModelError::Tokenizer {
                path,
                message: format!(
                    "does not match the model: it has token id {largest}, but config.json's vocab_size is {model_vocab_size}"
                ),
            });
        }
        Ok(Self { inner, path })
    }

    /// Token ids of `text`, with no special tokens added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| ModelError::Tokenizer { path: self.path.clone(), message: format!("cannot encode: {e}") })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids`; special tokens are kept unless `skip_special_tokens`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| ModelError::Tokenizer { path: self.path.clone(), message: format!("cannot decode: {e}") })
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Number of tokens, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// Qwen2's pre-tokenizer pattern: words with their leading space, each digit alone, runs of
/// punctuation, newlines. Digits one by one keep arithmetic legible to a model.
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Learns a byte-level BPE tokenizer from `texts`, built like Qwen2's (the same pre-tokenizer
/// split, byte-level alphabet, so any text can be encoded), with `special_tokens` first (ids 0,
/// 1, ...) and at most `vocab_size` tokens in all. Returns the `tokenizer.json` text, which both
/// [`Tokenizer`] and transformers read. Deterministic for the same texts.
pub fn train_byte_level_bpe<'a>(
    texts: impl Iterator<Item = &'a str> + Send,
    vocab_size: usize,
    special_tokens: &[&str],
) -> Result<String> {
    use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
    use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::pre_tokenizers::sequence::Sequence;
    use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
    use tokenizers::{
        AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
        SplitDelimiterBehavior, TokenizerBuilder,
    };

    let failed = |e: tokenizers::Error| ModelError::Input(format!("training a tokenizer: {e}"));
    let split =
        Split::new(SplitPattern::Regex(QWEN2_SPLIT.into()), SplitDelimiterBehavior::Isolated, false).map_err(failed)?;
    let pre_tokenizer = Sequence::new(vec![split.into(), ByteLevel::new(false, false, false).into()]);
    let mut tokenizer =
        TokenizerBuilder::<BPE, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper>::new()
            .with_model(BPE::default())
            .with_pre_tokenizer(Some(pre_tokenizer.into()))
            .with_decoder(Some(ByteLevelDecoder::new(false, true, false).into()))
            .build()
            .map_err(failed)?;
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(special_tokens.iter().map(|t| AddedToken::from(t.to_string(), true)).collect())
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    tokenizer.train(&mut trainer, texts).map_err(failed)?;
    tokenizer.to_string(true).map_err(failed)
}
