//! Choosing the next token from one row of logits: greedy, or sampling at a temperature with
//! top-k, top-p (nucleus) and min-p filtering, from a seeded per-sequence generator.
//!
//! Filters apply in transformers' order: temperature, top-k, top-p, min-p. The log-prob recorded
//! for a sampled token is log_softmax(logits / T) before any filtering: the quantity the GRPO
//! trainer recomputes for the ratio, so the two can be compared token by token.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use aha_model::sampler_kernels::{chunk_sums, softmax_weights};

use crate::RolloutError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// 0 means greedy (argmax; its log-prob is taken at temperature 1).
    pub temperature: f64,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`; 1 = off.
    pub top_p: f64,
    /// Keep the `top_k` most likely tokens; 0 = off.
    pub top_k: usize,
    /// Drop tokens less likely than `min_p` times the most likely one; 0 = off.
    pub min_p: f64,
    pub max_new_tokens: usize,
    /// Generation of a sequence ends after any of these (the model's eos ids, typically).
    pub stop_token_ids: Vec<u32>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self { temperature: 1.0, top_p: 1.0, top_k: 0, min_p: 0.0, max_new_tokens: 256, stop_token_ids: vec![] }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<(), RolloutError> {
        let bad = |message: String| Err(RolloutError::Params(message));
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad(format!("temperature must be >= 0, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if self.max_new_tokens == 0 {
            return bad("max_new_tokens must be at least 1".into());
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// True when top-k, top-p and min-p keep the whole vocabulary of `vocab` tokens.
    fn filters_nothing(&self, vocab: usize) -> bool {
        (self.top_k == 0 || self.top_k >= vocab) && self.top_p >= 1.0 && self.min_p == 0.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampledToken {
    pub id: u32,
    /// log_softmax(logits / T)[id], unfiltered (T = 1 for greedy).
    pub logprob: f32,
}

/// Picks the next token from `logits` (one row, the whole vocabulary).
pub fn sample_token(logits: &[f32], params: &SamplingParams, rng: &mut ChaCha8Rng) -> SampledToken {
    let temperature = if params.is_greedy() { 1.0 } else { params.temperature as f32 };
    SCRATCH.with_borrow_mut(|(weights, sums)| {
        // exp(l/T - max) once per token: the normaliser and the draw both use it.
        let (max, total) = softmax_weights(logits, temperature, weights);
        let id = if params.is_greedy() {
            // The first maximum, like torch.argmax.
            logits.iter().position(|&l| l == max).unwrap_or(0)
        } else if params.filters_nothing(logits.len()) {
            // Inverse CDF in two levels: the chunk, then the token within it.
            chunk_sums(weights, DRAW_CHUNK, sums);
            let total: f64 = sums.iter().map(|&s| f64::from(s)).sum();
            let (chunk, u) = inverse_cdf(as_f64(sums), rng.random::<f64>() * total);
            let start = chunk * DRAW_CHUNK;
            let within = &weights[start..weights.len().min(start + DRAW_CHUNK)];
            start + inverse_cdf(as_f64(within), u).0
        } else {
            let scaled_logits: Vec<f32> = logits.iter().map(|&l| l / temperature).collect();
            let candidates = filtered_candidates(&scaled_logits, max, params);
            let total: f64 = candidates.iter().map(|&(_, p)| p).sum();
            inverse_cdf(candidates.into_iter(), rng.random::<f64>() * total).0
        };
        // In fp32, as the trainer's log_softmax computes it.
        let log_norm = max + total.ln();
        SampledToken { id: id as u32, logprob: logits[id] / temperature - log_norm }
    })
}

/// Tokens per chunk of the two-level draw: a 150k vocabulary is 2,400 chunk sums and one chunk.
const DRAW_CHUNK: usize = 64;

thread_local! {
    /// The weights and chunk sums, reused across calls: a vocabulary of 150k tokens would
    /// otherwise cost a fresh 600 kB allocation (and its page faults) per token.
    static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

fn as_f64(weights: &[f32]) -> impl Iterator<Item = (usize, f64)> + '_ {
    weights.iter().map(|&w| f64::from(w)).enumerate()
}

/// The item at which the running sum of unnormalised `weights` passes `u` (drawn uniformly
/// below their total), and what is left of `u` at that item. Rounding may leave `u` past the
/// end: then the last item that has any weight.
fn inverse_cdf(weights: impl Iterator<Item = (usize, f64)>, mut u: f64) -> (usize, f64) {
    let mut chosen = 0;
    for (i, w) in weights {
        if w > 0.0 {
            chosen = i;
            if u < w {
                break;
            }
            u -= w;
        }
    }
    (chosen, u)
}

/// The tokens that survive top-k, top-p and min-p, with their unnormalised probabilities
/// exp(l - max), most likely first when a filter needed the order.
fn filtered_candidates(scaled: &[f32], max: f32, params: &SamplingParams) -> Vec<(usize, f64)> {
    let mut candidates: Vec<(usize, f64)> =
        scaled.iter().enumerate().map(|(i, &l)| (i, f64::from(l - max).exp())).filter(|&(_, p)| p > 0.0).collect();
    let by_probability = |a: &(usize, f64), b: &(usize, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if params.top_k > 0 && params.top_k < candidates.len() {
        candidates.select_nth_unstable_by(params.top_k - 1, by_probability);
        candidates.truncate(params.top_k);
    }
    if params.top_p < 1.0 {
        candidates.sort_unstable_by(by_probability);
        let total: f64 = candidates.iter().map(|&(_, p)| p).sum();
        let mut before = 0.0;
        // Keep a token while the mass of the more likely tokens is below top_p.
        let keep = candidates
            .iter()
            .take_while(|&&(_, p)| {
                let keep = before < params.top_p * total;
                before += p;
                keep
            })
            .count();
        candidates.truncate(keep.max(1));
    }
    if params.min_p > 0.0 {
        // p_max is exp(0) = 1 in these units; renormalisation does not move the threshold.
        candidates.retain(|&(_, p)| p >= params.min_p);
    }
    candidates
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    /// Empirical frequencies of `draws` samples against `expected` probabilities: returns the
    /// chi-square statistic over tokens with expected > 0, and asserts that tokens with expected
    /// probability 0 never appear.
    fn chi_square(logits: &[f32], params: &SamplingParams, expected: &[f64], draws: usize) -> f64 {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut counts = vec![0usize; logits.len()];
        for _ in 0..draws {
            counts[sample_token(logits, params, &mut rng).id as usize] += 1;
        }
        let mut stat = 0.0;
        for (i, (&c, &p)) in counts.iter().zip(expected).enumerate() {
            if p == 0.0 {
                assert_eq!(c, 0, "token {i} has probability 0 but was drawn {c} times");
            } else {
                let e = p * draws as f64;
                stat += (c as f64 - e).powi(2) / e;
            }
        }
        stat
    }

    fn softmax(logits: &[f64]) -> Vec<f64> {
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let exps: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f64 = exps.iter().sum();
        exps.iter().map(|e| e / sum).collect()
    }

    fn renormalised(p: &[f64], keep: &[bool]) -> Vec<f64> {
        let total: f64 = p.iter().zip(keep).filter(|(_, &k)| k).map(|(p, _)| p).sum();
        p.iter().zip(keep).map(|(&p, &k)| if k { p / total } else { 0.0 }).collect()
    }

    // Probabilities at T = 1: [0.4, 0.25, 0.15, 0.1, 0.06, 0.04] (logits are their logs).
    const P: [f64; 6] = [0.4, 0.25, 0.15, 0.1, 0.06, 0.04];

    fn logits() -> Vec<f32> {
        P.iter().map(|p| p.ln() as f32).collect()
    }

    // chi-square critical value at p = 0.001: 5 degrees of freedom 20.5, 3 dof 16.3, 1 dof 10.8.
    #[test]
    fn plain_sampling_follows_softmax() {
        let params = SamplingParams::default();
        assert!(chi_square(&logits(), &params, &P, 40_000) < 20.5);
    }

    #[test]
    fn sampling_over_several_draw_chunks_follows_softmax() {
        // 150 tokens: the draw picks one of 3 chunks, then a token within it.
        let logits: Vec<f32> = (0..150).map(|i| (i as f32 * 0.7).sin() * 1.5).collect();
        let expected = softmax(&logits.iter().map(|&l| f64::from(l)).collect::<Vec<_>>());
        // 149 degrees of freedom: the critical value at p = 0.001 is 208.
        assert!(chi_square(&logits, &SamplingParams::default(), &expected, 60_000) < 208.0);
    }

    #[test]
    fn temperature_sharpens() {
        let params = SamplingParams { temperature: 0.5, ..Default::default() };
        let expected = softmax(&P.map(|p| p.ln() / 0.5));
        assert!(chi_square(&logits(), &params, &expected, 40_000) < 20.5);
    }

    #[test]
    fn top_k_keeps_the_k_most_likely() {
        let params = SamplingParams { top_k: 3, ..Default::default() };
        let expected = renormalised(&P, &[true, true, true, false, false, false]);
        assert!(chi_square(&logits(), &params, &expected, 40_000) < 13.8); // 2 dof
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        // 0.4 + 0.25 = 0.65 < 0.7, so the third token is needed too; the fourth is not.
        let params = SamplingParams { top_p: 0.7, ..Default::default() };
        let expected = renormalised(&P, &[true, true, true, false, false, false]);
        assert!(chi_square(&logits(), &params, &expected, 40_000) < 13.8);
        let params = SamplingParams { top_p: 0.79, ..Default::default() };
        assert!(chi_square(&logits(), &params, &expected, 40_000) < 13.8);
    }

    #[test]
    fn min_p_drops_tokens_below_a_fraction_of_the_best() {
        // Threshold 0.3 * 0.4 = 0.12: keeps 0.4, 0.25, 0.15.
        let params = SamplingParams { min_p: 0.3, ..Default::default() };
        let expected = renormalised(&P, &[true, true, true, false, false, false]);
        assert!(chi_square(&logits(), &params, &expected, 40_000) < 13.8);
    }

    #[test]
    fn filters_combine_in_order() {
        // top-k 4 -> [0.4, 0.25, 0.15, 0.1] / 0.9; top-p 0.5 on that keeps 0.444 and 0.278.
        let params = SamplingParams { top_k: 4, top_p: 0.5, ..Default::default() };
        let expected = renormalised(&P, &[true, true, false, false, false, false]);
        assert!(chi_square(&logits(), &params, &expected, 40_000) < 10.8);
    }

    #[test]
    fn greedy_takes_the_first_maximum_and_reports_its_logprob() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let params = SamplingParams { temperature: 0.0, ..Default::default() };
        let token = sample_token(&[1.0, 3.0, 3.0, -2.0], &params, &mut rng);
        assert_eq!(token.id, 1);
        let expected = 3.0 - (1f64.exp() + 2.0 * 3f64.exp() + (-2f64).exp()).ln();
        assert!((f64::from(token.logprob) - expected).abs() < 1e-6);
    }

    #[test]
    fn sampled_logprob_is_unfiltered_at_temperature() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let params = SamplingParams { temperature: 0.7, top_k: 1, ..Default::default() };
        let token = sample_token(&logits(), &params, &mut rng);
        assert_eq!(token.id, 0);
        let expected = softmax(&P.map(|p| p.ln() / 0.7))[0].ln();
        assert!((f64::from(token.logprob) - expected).abs() < 1e-5);
    }

    #[test]
    fn rejects_bad_parameters() {
        for params in [
            SamplingParams { temperature: -1.0, ..Default::default() },
            SamplingParams { top_p: 0.0, ..Default::default() },
            SamplingParams { min_p: 1.5, ..Default::default() },
            SamplingParams { max_new_tokens: 0, ..Default::default() },
        ] {
            assert!(params.validate().is_err(), "{params:?}");
        }
    }
}
