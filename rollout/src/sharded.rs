//! [`ShardedEngine`]: several [`Engine`]s over one model, side by side on libtorch's threads.
//!
//! One engine on a CPU decodes a step with every thread, then samples, then decodes again: each
//! step ends at a barrier, and what runs between the parallel parts (the engine's bookkeeping,
//! building the step's inputs, the sampler's setup) runs on one thread while the others wait.
//! For a small model that serial remainder was a third of generation. Shards share nothing but
//! the weights, so each runs its own requests from start to finish on one thread, with no barrier
//! until one of them has a finished request to hand back. A request's completions do not depend
//! on its shard or on the number of shards (each sequence draws from its own generator, and a
//! step computes each row alone; the log-probs may differ in the last bits, as between batch
//! sizes), so sharding changes speed, not what is generated (`rollout/tests/engine.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use aha_model::{intra_op, CausalLM, Tokenizer};

use crate::engine::{Engine, EngineConfig, EngineStats};
use crate::generate::{Backend, GenerationRequest, GroupOutput, RequestId};
use crate::sampling::SamplingParams;
use crate::tools::ToolExecutor;
use crate::RolloutError;

pub struct ShardedEngine<'m> {
    shards: Vec<Engine<'m>>,
    /// The id handed out for each (shard, the shard's own id) of a request in flight.
    routes: HashMap<(usize, RequestId), RequestId>,
    next_id: RequestId,
}

/// An engine handed to the thread that runs it.
struct OnThread<'a, 'm>(&'a mut Engine<'m>);

// SAFETY: a shard's tensors (its cache and logits) are touched only by the thread running it,
// and the model it shares with the other shards is only read (libtorch tensors may be read from
// several threads at once; the model's caches of packed and cast weights are behind mutexes).
unsafe impl Send for OnThread<'_, '_> {}

impl<'m> ShardedEngine<'m> {
    /// As many shards as [`ShardedEngine::shards_for`] gives, each within an equal part of
    /// `config`'s limits.
    pub fn new(model: &'m CausalLM, params: SamplingParams, config: EngineConfig) -> Result<Self, RolloutError> {
        Self::with_shards(model, params, config, Self::shards_for(model))
    }

    /// `shards` engines, each within `1 / shards` of `config`'s cache budget and sequences.
    pub fn with_shards(
        model: &'m CausalLM,
        params: SamplingParams,
        config: EngineConfig,
        shards: usize,
    ) -> Result<Self, RolloutError> {
        let shards = shards.clamp(1, config.max_sequences.max(1));
        let part = EngineConfig {
            kv_cache_bytes: config.kv_cache_bytes / shards as u64,
            max_sequences: config.max_sequences / shards,
            ..config
        };
        let shards =
            (0..shards).map(|_| Engine::new(model, params.clone(), part.clone())).collect::<Result<Vec<_>, _>>()?;
        Ok(Self { shards, routes: HashMap::new(), next_id: 0 })
    }

    /// Shards worth running for `model`: one per libtorch thread for a small model on a CPU
    /// ([`CausalLM::prefers_sharded_generation`]), else one (a larger model's steps use every thread
    /// well; a GPU runs a whole step at once).
    pub fn shards_for(model: &CausalLM) -> usize {
        if model.prefers_sharded_generation() {
            intra_op::threads()
        } else {
            1
        }
    }

    /// Ends completions at any of `strings` (decoded with `tokenizer`), besides the stop tokens.
    pub fn with_stop_strings(self, tokenizer: &'m Tokenizer, strings: Vec<String>) -> Result<Self, RolloutError> {
        let shards = self
            .shards
            .into_iter()
            .map(|shard| shard.with_stop_strings(tokenizer, strings.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { shards, ..self })
    }

    /// Lets completions call the Python tool on `executor` (shared by the shards; see `tools`).
    pub fn with_tools(self, tokenizer: &'m Tokenizer, executor: Arc<ToolExecutor>) -> Self {
        let shards = self.shards.into_iter().map(|shard| shard.with_tools(tokenizer, Arc::clone(&executor))).collect();
        Self { shards, ..self }
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The shards' statistics added up ([`EngineStats::add`]).
    pub fn stats(&self) -> EngineStats {
        let mut total = EngineStats::default();
        for shard in &self.shards {
            total.add(shard.stats());
        }
        total
    }
}

impl Backend for ShardedEngine<'_> {
    /// Queues `request` on the shard with the fewest sequences in flight.
    fn submit(&mut self, request: GenerationRequest) -> Result<RequestId, RolloutError> {
        let (shard, engine) = self
            .shards
            .iter_mut()
            .enumerate()
            .min_by_key(|(i, engine)| (engine.sequences_in_flight(), *i))
            .expect("at least one shard");
        let local = engine.submit(request)?;
        let id = self.next_id;
        self.next_id += 1;
        self.routes.insert((shard, local), id);
        Ok(id)
    }

    /// Runs every shard with work, each on its own thread, until one has finished requests (the
    /// others stop after their current step), and returns what all of them finished.
    fn poll(&mut self) -> Result<Vec<GroupOutput>, RolloutError> {
        let busy: Vec<(usize, OnThread<'_, '_>)> = self
            .shards
            .iter_mut()
            .enumerate()
            .filter(|(_, engine)| engine.in_flight() > 0)
            .map(|(i, engine)| (i, OnThread(engine)))
            .collect();
        let finished: Vec<(usize, Vec<GroupOutput>)> = match busy.len() {
            0 => Vec::new(),
            // Alone, a shard uses every thread.
            1 => busy.into_iter().map(|(i, engine)| engine.0.poll().map(|f| (i, f))).collect::<Result<_, _>>()?,
            n => {
                let stop = AtomicBool::new(false);
                let results = Mutex::new(Vec::with_capacity(n));
                intra_op::parallel_parts(busy, n, |_, (i, engine)| {
                    let outcome = tch::no_grad(|| engine.0.poll_until(&stop));
                    if !matches!(&outcome, Ok(f) if f.is_empty()) {
                        stop.store(true, Ordering::Relaxed);
                    }
                    results.lock().expect("shard results").push((i, outcome));
                });
                let mut results = results.into_inner().expect("shard results");
                results.sort_by_key(|(i, _)| *i);
                results.into_iter().map(|(i, outcome)| outcome.map(|f| (i, f))).collect::<Result<_, _>>()?
            }
        };
        let mut out = Vec::new();
        for (shard, groups) in finished {
            for group in groups {
                let id = self.routes.remove(&(shard, group.id)).expect("a finished request was routed");
                out.push(GroupOutput { id, completions: group.completions });
            }
        }
        out.sort_by_key(|g| g.id);
        Ok(out)
    }

    fn in_flight(&self) -> usize {
        self.shards.iter().map(Engine::in_flight).sum()
    }
}
