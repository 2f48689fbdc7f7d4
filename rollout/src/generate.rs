//! Batched generation with a KV cache: every prompt is prefilled once (its `n` samples share the
//! prefill), then all live sequences decode together one token per step, and a sequence that
//! stops leaves the batch.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tch::{Device, Tensor};

use aha_model::{CausalLM, PaddedBatch};

use crate::sampling::{sample_token, SamplingParams};
use crate::RolloutError;

/// One prompt and how many completions to draw from it.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    pub prompt_ids: Vec<u32>,
    pub n: usize,
    /// Completion j draws from ChaCha8(seed) on stream j: the same request gives the same
    /// completions whatever else is in the batch.
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// Produced one of the stop tokens (which ends `token_ids`).
    Stop,
    /// Reached `max_new_tokens`.
    Length,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Completion {
    pub token_ids: Vec<u32>,
    /// log_softmax(logits / T) of each sampled token, fp32 (see `sampling`).
    pub logprobs: Vec<f32>,
    pub finish_reason: FinishReason,
}

/// Generates `request.n` completions for every request; the result follows the requests' order.
pub fn generate(
    model: &CausalLM,
    requests: &[GenerationRequest],
    params: &SamplingParams,
) -> Result<Vec<Vec<Completion>>, RolloutError> {
    params.validate()?;
    let prompts: Vec<Vec<u32>> = requests.iter().map(|r| r.prompt_ids.clone()).collect();
    model.check_token_ids(&prompts)?;
    if requests.iter().any(|r| r.n == 0) {
        return Err(RolloutError::Params("every request needs n >= 1".into()));
    }
    let device = model.device();
    let batch = PaddedBatch::left_padded(&prompts, 0, device)?;
    let width = batch.input_ids.size()[1];

    // One sequence per (request, sample), in request order.
    struct Sequence {
        next_position: i64,
        rng: ChaCha8Rng,
        completion: Completion,
        done: bool,
    }
    let mut sequences = Vec::new();
    let mut prompt_rows = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        for j in 0..request.n {
            let mut rng = ChaCha8Rng::seed_from_u64(request.seed);
            rng.set_stream(j as u64);
            sequences.push(Sequence {
                next_position: request.prompt_ids.len() as i64,
                rng,
                completion: Completion { token_ids: vec![], logprobs: vec![], finish_reason: FinishReason::Length },
                done: false,
            });
            prompt_rows.push(i as i64);
        }
    }

    tch::no_grad(|| {
        let mut cache = model.new_cache(requests.len() as i64, width + params.max_new_tokens as i64);
        let hidden = model.forward(&batch.input_ids, &batch.positions, batch.padding_mask(), Some(&mut cache));
        let last = model.logits(&hidden.select(1, width - 1));
        // Share each prompt's prefill among its samples.
        let rows = Tensor::from_slice(&prompt_rows).to_device(device);
        let mut cache = cache.index_select(&rows);
        let mut logits = last.index_select(0, &rows);
        // live[r] = index into `sequences` of batch row r.
        let mut live: Vec<usize> = (0..sequences.len()).collect();

        loop {
            let host = logits.to_device(Device::Cpu);
            let vocab = host.size()[1] as usize;
            let host: Vec<f32> = Vec::try_from(host.view([-1])).expect("fp32 logits");
            let mut next_tokens = Vec::with_capacity(live.len());
            for (r, &s) in live.iter().enumerate() {
                let seq = &mut sequences[s];
                let token = sample_token(&host[r * vocab..(r + 1) * vocab], params, &mut seq.rng);
                seq.completion.token_ids.push(token.id);
                seq.completion.logprobs.push(token.logprob);
                if params.stop_token_ids.contains(&token.id) {
                    seq.completion.finish_reason = FinishReason::Stop;
                    seq.done = true;
                } else if seq.completion.token_ids.len() >= params.max_new_tokens {
                    seq.done = true;
                }
                next_tokens.push(i64::from(token.id));
            }
            // Finished sequences leave the batch.
            let keep: Vec<i64> = (0..live.len() as i64).filter(|&r| !sequences[live[r as usize]].done).collect();
            if keep.is_empty() {
                break;
            }
            if keep.len() < live.len() {
                cache = cache.index_select(&Tensor::from_slice(&keep).to_device(device));
                live = keep.iter().map(|&r| live[r as usize]).collect();
                next_tokens = keep.iter().map(|&r| next_tokens[r as usize]).collect();
            }
            let positions: Vec<i64> = live.iter().map(|&s| sequences[s].next_position).collect();
            for &s in &live {
                sequences[s].next_position += 1;
            }
            let b = live.len() as i64;
            let input = Tensor::from_slice(&next_tokens).view([b, 1]).to_device(device);
            let positions = Tensor::from_slice(&positions).view([b, 1]).to_device(device);
            let hidden = model.forward(&input, &positions, None, Some(&mut cache));
            logits = model.logits(&hidden.select(1, 0));
        }
    });

    let mut sequences = sequences.into_iter();
    Ok(requests.iter().map(|r| sequences.by_ref().take(r.n).map(|s| s.completion).collect()).collect())
}
