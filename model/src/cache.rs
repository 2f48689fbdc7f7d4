//! The key/value cache for incremental decoding.
//!
//! Slots are preallocated and written in place, so a decode step costs no copy of the past.
//! Values are `[batch, kv_heads, capacity, head_dim]` per layer; keys are the same, or, where
//! decoding runs fused (CPU, fp32: `decoder/fused_decode.rs`), transposed to `[batch, kv_heads,
//! head_dim, capacity]`, so that a step's scores `q . k` for every slot are `head_dim` passes over
//! contiguous rows of slots, which vectorise. `key_mask`
//! remembers which slots hold real tokens: left padding of a batch stays masked for the whole
//! generation.

use tch::{Device, Kind, Tensor};

use crate::config::ModelConfig;

/// Capacities are multiples of this many slots, so that the fused decode step reads whole
/// vectors of keys (it masks the slots past the filled ones).
pub(crate) const SLOT_ALIGNMENT: i64 = 16;

const VALUE_SLOTS: i64 = 2;
const MASK_SLOTS: i64 = 1;

pub struct KvCache {
    /// Per layer `[batch, kv_heads, capacity, head_dim]`, or `[batch, kv_heads, head_dim, capacity]`
    /// when `keys_transposed`.
    keys: Vec<Tensor>,
    keys_transposed: bool,
    /// `[batch, kv_heads, capacity, head_dim]` per layer.
    values: Vec<Tensor>,
    /// `[batch, capacity]` bool: the slot holds a real (not padding) token.
    key_mask: Tensor,
    len: i64,
}

impl KvCache {
    /// An empty cache for `batch` sequences of up to `capacity` tokens (at least: capacities are
    /// rounded up to a multiple of `SLOT_ALIGNMENT`; it grows if needed).
    pub fn new(config: &ModelConfig, batch: i64, capacity: i64, kind: Kind, device: Device) -> Self {
        let (kv, d, capacity) = (config.num_key_value_heads, config.head_dim, Self::slots_for(capacity));
        let layers = config.num_hidden_layers;
        let keys_transposed = Self::transposed_keys_for(kind, device);
        let key_shape = if keys_transposed { [batch, kv, d, capacity] } else { [batch, kv, capacity, d] };
        Self {
            keys: (0..layers).map(|_| Tensor::zeros(key_shape, (kind, device))).collect(),
            keys_transposed,
            values: (0..layers).map(|_| Tensor::zeros([batch, kv, capacity, d], (kind, device))).collect(),
            key_mask: Tensor::zeros([batch, capacity], (Kind::Bool, device)),
            len: 0,
        }
    }

    /// Whether caches of this dtype and device store keys transposed: where single-token steps
    /// run fused (see `CausalLM::decodes_fused`), not through SDPA, which wants `[.., slots,
    /// head_dim]` keys.
    pub(crate) fn transposed_keys_for(kind: Kind, device: Device) -> bool {
        device == Device::Cpu && kind == Kind::Float
    }

    /// The slot dimension of the keys.
    fn key_slots(&self) -> i64 {
        if self.keys_transposed {
            3
        } else {
            2
        }
    }

    /// The slots a cache allocates for `tokens` tokens a row: `tokens` rounded up to a multiple
    /// of `SLOT_ALIGNMENT` (at least one).
    pub fn slots_for(tokens: i64) -> i64 {
        (tokens.max(1) as u64).next_multiple_of(SLOT_ALIGNMENT as u64) as i64
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
        let capacity = Self::slots_for(capacity);
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
            keys: self.keys.iter().map(|k| take(k, self.key_slots())).collect(),
            keys_transposed: self.keys_transposed,
            values: self.values.iter().map(|v| take(v, VALUE_SLOTS)).collect(),
            key_mask: take(&self.key_mask, MASK_SLOTS),
            len: keep,
        }
    }

    /// Stacks the rows of several caches into one, aligning their filled slots on the right (a
    /// shorter cache gets masked slots in front), with room for `capacity` slots: how sequences
    /// prefilled later join a batch that is already decoding.
    pub fn concat(parts: &[&KvCache], capacity: i64) -> Self {
        let len = parts.iter().map(|c| c.len).max().expect("at least one cache");
        assert!(len <= capacity, "concat of {len} slots into {capacity}");
        let capacity = Self::slots_for(capacity);
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
        assert!(
            parts.iter().all(|c| c.keys_transposed == first.keys_transposed),
            "concat of caches with different key layouts"
        );
        Self {
            keys: (0..layers).map(|l| stack(&|c: &KvCache| &c.keys[l], first.key_slots())).collect(),
            keys_transposed: first.keys_transposed,
            values: (0..layers).map(|l| stack(&|c: &KvCache| &c.values[l], VALUE_SLOTS)).collect(),
            key_mask: stack(&|c: &KvCache| &c.key_mask, MASK_SLOTS),
            len,
        }
    }

    /// Starts a forward step of `new` positions: makes room, records which are real
    /// (`step_mask` `[batch, new]`; `None`: all of them), and returns the mask of every filled
    /// slot including the new ones.
    pub(crate) fn begin_step(&mut self, step_mask: Option<&Tensor>, new: i64) -> Tensor {
        self.reserve(self.len + new);
        let mut slots = self.key_mask.narrow(1, self.len, new);
        match step_mask {
            Some(mask) => slots.copy_(mask),
            None => {
                let _ = slots.fill_(1);
            }
        }
        self.key_mask.narrow(1, 0, self.len + new)
    }

    /// Writes layer `layer`'s new keys and values (`[batch, kv_heads, new, head_dim]`) after the
    /// filled slots.
    pub(crate) fn write(&mut self, layer: usize, k: &Tensor, v: &Tensor) {
        let new = k.size()[2];
        let mut keys = self.keys[layer].narrow(self.key_slots(), self.len, new);
        if self.keys_transposed {
            keys.transpose(2, 3).copy_(k);
        } else {
            keys.copy_(k);
        }
        self.values[layer].narrow(VALUE_SLOTS, self.len, new).copy_(v);
    }

    /// Layer `layer`'s keys of the `slots` first slots, `[batch, kv_heads, slots, head_dim]`
    /// (strided when the cache stores them transposed).
    pub(crate) fn keys(&self, layer: usize, slots: i64) -> Tensor {
        let keys = self.keys[layer].narrow(self.key_slots(), 0, slots);
        if self.keys_transposed {
            keys.transpose(2, 3)
        } else {
            keys
        }
    }

    /// Layer `layer`'s values of the `slots` first slots: `[batch, kv_heads, slots, head_dim]`.
    pub(crate) fn values(&self, layer: usize, slots: i64) -> Tensor {
        self.values[layer].narrow(VALUE_SLOTS, 0, slots)
    }

    /// Layer `layer`'s key and value tensors whole (every slot) and the key mask `[batch,
    /// capacity]`, for the fused decode step, which reads and writes their memory.
    pub(crate) fn layer_tensors(&self, layer: usize) -> (&Tensor, &Tensor, &Tensor) {
        (&self.keys[layer], &self.values[layer], &self.key_mask)
    }

    /// Whether keys are stored `[.., head_dim, slots]` (so `keys()` are strided).
    pub(crate) fn keys_are_transposed(&self) -> bool {
        self.keys_transposed
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
        let grown = Self::slots_for(needed.max(capacity * 2));
        let grow = |t: &Tensor, dim: i64| {
            let mut shape = t.size();
            shape[dim as usize] = grown - capacity;
            Tensor::cat(&[t, &Tensor::zeros(shape, (t.kind(), t.device()))], dim)
        };
        let key_slots = self.key_slots();
        for t in self.keys.iter_mut() {
            *t = grow(t, key_slots);
        }
        for t in self.values.iter_mut() {
            *t = grow(t, VALUE_SLOTS);
        }
        self.key_mask = grow(&self.key_mask, MASK_SLOTS);
    }
}
