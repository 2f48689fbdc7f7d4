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

    /// Bytes of keys and values one token takes in the cache of a model: known before anything is
    /// allocated, so generation can plan its batch against a memory budget.
    pub fn bytes_per_token(config: &ModelConfig, kind: Kind) -> u64 {
        let per_layer = 2 * config.num_key_value_heads * config.head_dim * kind.elt_size_in_bytes() as i64;
        (config.num_hidden_layers as i64 * per_layer) as u64
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
        self.gather(rows, self.len, self.capacity())
    }

    /// A new cache of the rows listed in `rows` (int64 indices) holding only the last `keep`
    /// filled slots, with room for `capacity` slots. Every row's real tokens sit at the right end
    /// of the filled slots (left padding, then appended tokens), so when `keep` is at least the
    /// longest row's token count, dropping the slots before them loses nothing: that is how a
    /// batch sheds the columns of sequences that left it.
    pub fn gather(&self, rows: &Tensor, keep: i64, capacity: i64) -> Self {
        assert!(keep <= self.len && keep <= capacity, "gather keeps {keep} of {} slots into {capacity}", self.len);
        let rows = rows.to_device(self.key_mask.device());
        let start = self.len - keep;
        let take = |t: &Tensor, dim: i64| {
            let kept = t.narrow(dim, start, keep).index_select(0, &rows);
            let mut shape = kept.size();
            shape[dim as usize] = capacity;
            let out = Tensor::zeros(shape, (t.kind(), t.device()));
            out.narrow(dim, 0, keep).copy_(&kept);
            out
        };
        Self {
            keys: self.keys.iter().map(|k| take(k, 2)).collect(),
            values: self.values.iter().map(|v| take(v, 2)).collect(),
            key_mask: take(&self.key_mask, 1),
            len: keep,
        }
    }

    /// Stacks the rows of several caches into one, aligning their filled slots on the right (a
    /// shorter cache gets masked slots in front), with room for `capacity` slots: how sequences
    /// prefilled later join a batch that is already decoding.
    pub fn concat(parts: &[&KvCache], capacity: i64) -> Self {
        let len = parts.iter().map(|c| c.len).max().expect("at least one cache");
        assert!(len <= capacity, "concat of {len} slots into {capacity}");
        let first = parts[0];
        let batch: i64 = parts.iter().map(|c| c.batch_size()).sum();
        let stack = |pick: &dyn Fn(&KvCache) -> &Tensor, dim: i64| {
            let like = pick(first);
            let mut shape = like.size();
            shape[0] = batch;
            shape[dim as usize] = capacity;
            let out = Tensor::zeros(shape, (like.kind(), like.device()));
            let mut row = 0;
            for part in parts {
                let rows = part.batch_size();
                out.narrow(0, row, rows)
                    .narrow(dim, len - part.len, part.len)
                    .copy_(&pick(part).narrow(dim, 0, part.len));
                row += rows;
            }
            out
        };
        let layers = first.keys.len();
        Self {
            keys: (0..layers).map(|l| stack(&|c: &KvCache| &c.keys[l], 2)).collect(),
            values: (0..layers).map(|l| stack(&|c: &KvCache| &c.values[l], 2)).collect(),
            key_mask: stack(&|c: &KvCache| &c.key_mask, 1),
            len,
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
