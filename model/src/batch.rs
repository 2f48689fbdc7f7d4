//! Batches of token sequences of different lengths, left-padded so that every row's last token
//! sits in the last column (where generation continues).

use tch::{Device, Kind, Tensor};

use crate::error::{ModelError, Result};

pub struct PaddedBatch {
    /// `[batch, len]` int64; padding slots hold `pad_id`.
    pub input_ids: Tensor,
    /// `[batch, len]` bool: true for real tokens.
    pub attention_mask: Tensor,
    /// `[batch, len]` int64: each real token's position in its own sequence (padding gets 0).
    pub positions: Tensor,
    /// Real length of each row.
    pub lengths: Vec<i64>,
}

impl PaddedBatch {
    pub fn left_padded(sequences: &[Vec<u32>], pad_id: u32, device: Device) -> Result<Self> {
        if sequences.is_empty() || sequences.iter().any(Vec::is_empty) {
            return Err(ModelError::Input("every sequence of a batch needs at least one token".into()));
        }
        let width = sequences.iter().map(Vec::len).max().expect("non-empty");
        let mut ids = Vec::with_capacity(sequences.len() * width);
        let mut mask = Vec::with_capacity(sequences.len() * width);
        for seq in sequences {
            let pad = width - seq.len();
            ids.extend(std::iter::repeat_n(i64::from(pad_id), pad).chain(seq.iter().map(|&t| i64::from(t))));
            mask.extend(std::iter::repeat_n(false, pad).chain(std::iter::repeat_n(true, seq.len())));
        }
        let shape = [sequences.len() as i64, width as i64];
        let attention_mask = Tensor::from_slice(&mask).view(shape).to_device(device);
        Ok(Self {
            input_ids: Tensor::from_slice(&ids).view(shape).to_device(device),
            positions: positions_from_mask(&attention_mask),
            attention_mask,
            lengths: sequences.iter().map(|s| s.len() as i64).collect(),
        })
    }
}

impl PaddedBatch {
    /// The attention mask, or `None` when no row is padded (attention is then plain causal, and
    /// libtorch can use its faster causal kernel).
    pub fn padding_mask(&self) -> Option<&Tensor> {
        let width = self.input_ids.size()[1];
        self.lengths.iter().any(|&len| len < width).then_some(&self.attention_mask)
    }
}

/// Position of each real token within its row: the number of real tokens before it.
pub fn positions_from_mask(mask: &Tensor) -> Tensor {
    (mask.cumsum(1, Kind::Int64) - 1).clamp_min(0)
}
