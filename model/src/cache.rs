//! The key/value cache for incremental decoding.
//!
//! Slots are preallocated (`[batch, kv_heads, capacity, head_dim]` per layer) and written in place,
//! so a decode step costs no copy of the past. `key_mask` remembers which slots hold real tokens:
//! left padding of a batch stays masked for the whole generation.

use tch::{Device, Kind, Tensor};

use crate::config::ModelConfig;

pub struct KvCache {
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
    /// `[batch, capacity]` bool: the slot holds a real (not padding) token.
    key_mask: Tensor,
    len: i64,
}

impl KvCache {
    /// An empty cache for `batch` sequences of up to `capacity` tokens (it grows if needed).
    pub fn new(config: &ModelConfig, batch: i64, capacity: i64, kind: Kind, device: Device) -> Self {
        let shape = [batch, config.num_key_value_heads, capacity.max(1), config.head_dim];
        let layers = config.num_hidden_layers;
        Self {
            keys: (0..layers).map(|_| Tensor::zeros(shape, (kind, device))).collect(),
            values: (0..layers).map(|_| Tensor::zeros(shape, (kind, device))).collect(),
            key_mask: Tensor::zeros([batch, capacity.max(1)], (Kind::Bool, device)),
            len: 0,
        }
    }

    /// Number of positions filled so far (padding included).
    pub fn len(&self) -> i64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn batch_size(&self) -> i64 {
        self.key_mask.size()[0]
    }

    pub fn capacity(&self) -> i64 {
        self.key_mask.size()[1]
    }

    /// Bytes held by the cache tensors.
    pub fn bytes(&self) -> usize {
        self.keys.iter().chain(&self.values).map(|t| t.numel() * t.kind().elt_size_in_bytes()).sum()
    }

    /// Keeps (or repeats) the rows listed in `rows` (int64 indices): share one prefill across the
    /// samples of a group, or drop sequences that finished.
    pub fn index_select(&self, rows: &Tensor) -> Self {
        let rows = rows.to_device(self.key_mask.device());
        Self {
            keys: self.keys.iter().map(|k| k.index_select(0, &rows)).collect(),
            values: self.values.iter().map(|v| v.index_select(0, &rows)).collect(),
            key_mask: self.key_mask.index_select(0, &rows),
            len: self.len,
        }
    }

    /// Starts a forward step of `step_mask.size()[1]` new positions: makes room, records which
    /// are real, and returns the mask of every filled slot including the new ones.
    pub(crate) fn begin_step(&mut self, step_mask: &Tensor) -> Tensor {
        let new = step_mask.size()[1];
        self.reserve(self.len + new);
        self.key_mask.narrow(1, self.len, new).copy_(step_mask);
        self.key_mask.narrow(1, 0, self.len + new)
    }

    /// Writes layer `layer`'s new keys and values (`[batch, kv_heads, new, head_dim]`) after the
    /// filled slots and returns the keys and values of all filled slots.
    pub(crate) fn write(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> (Tensor, Tensor) {
        let new = k.size()[2];
        let end = self.len + new;
        self.keys[layer].narrow(2, self.len, new).copy_(k);
        self.values[layer].narrow(2, self.len, new).copy_(v);
        (self.keys[layer].narrow(2, 0, end), self.values[layer].narrow(2, 0, end))
    }

    /// Ends a forward step of `new` positions.
    pub(crate) fn end_step(&mut self, new: i64) {
        self.len += new;
    }

    fn reserve(&mut self, needed: i64) {
        let capacity = self.capacity();
        if needed <= capacity {
            return;
        }
        let grown = needed.max(capacity * 2);
        let grow = |t: &Tensor, dim: i64| {
            let mut shape = t.size();
            shape[dim as usize] = grown - capacity;
            Tensor::cat(&[t, &Tensor::zeros(shape, (t.kind(), t.device()))], dim)
        };
        for t in self.keys.iter_mut().chain(self.values.iter_mut()) {
            *t = grow(t, 2);
        }
        self.key_mask = grow(&self.key_mask, 1);
    }
}
