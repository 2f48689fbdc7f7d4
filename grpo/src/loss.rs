//! The GRPO-family policy loss, from per-token log-probs to one differentiable number.
//!
//! For completion i of a batch and its token t:
//!
//! ```text
//! rho_it  = exp(logp_theta_it - logp_old_it)                       (importance ratio)
//! L_it    = -min(rho_it * A_i, clip(rho_it, 1 - eps_low, 1 + eps_high) * A_i) + beta * KL_it
//! KL_it   = exp(ref_it - logp_theta_it) - (ref_it - logp_theta_it) - 1       (k3 estimator)
//! w_it    = min(exp(logp_old_it - logp_behaviour_it), tis_cap)  (with tis_cap; else 1)
//! L_it    = w_it * (the clipped term) + beta * KL_it
//!
//! grpo     loss = 1/B * sum_i ( 1/|o_i| * sum_t L_it )        DeepSeekMath, arXiv:2402.03300
//! bnpo     loss = sum_it L_it / (tokens of the micro-batch)
//! dr_grpo  loss = sum_it L_it / (B * max_completion_len)       Dr. GRPO, arXiv:2503.20783
//! dapo     loss = sum_it L_it / (tokens of the generation batch)  DAPO, arXiv:2503.14476
//! ```
//!
//! Only completion tokens count (`mask`); prompt and padding positions never reach the loss.
//!
//! Why the clipped minimum: it is PPO's pessimistic surrogate. When a token has already become
//! more likely than the advantage warrants (rho above 1 + eps_high with A > 0, or below 1 - eps_low
//! with A < 0), the clipped branch is the minimum and its gradient is zero, so one batch cannot
//! push the policy far from the one that sampled it. DAPO's "clip-higher" sets eps_high above
//! eps_low (0.28 vs 0.2) so that unlikely tokens with a positive advantage can still grow, which
//! keeps the entropy from collapsing.
//!
//! Why k3: it is an unbiased, always non-negative estimate of KL(pi_theta || pi_ref) from samples
//! of pi_theta (Schulman, "Approximating KL divergence", 2020), used by DeepSeekMath. It is added
//! to the loss per token rather than folded into the reward.
//!
//! Why w: when the completions were sampled elsewhere (a vLLM or SGLang server), the sampler's
//! distribution pi_behaviour differs a little from the trainer's pi_old (other kernels, dtypes,
//! a stale weight copy). Truncated importance sampling (Ionides 2008; as TRL's vLLM correction
//! and veRL apply it) reweights each token by pi_old / pi_behaviour, capped so that a rare token
//! cannot dominate the batch. The weight carries no gradient; the KL term is not reweighted.
//!
//! Why four aggregations: they weight long and short answers differently, which is the whole
//! difference between the methods.
//! - `grpo` averages within each completion first, so each token of a long completion counts
//!   less than a token of a short one: a long wrong answer is penalised less per token, a bias
//!   towards long wrong answers that Dr. GRPO points out.
//! - `dapo` (and `bnpo`) average over all tokens of the batch: every token counts the same.
//! - `dr_grpo` divides by a constant (B times the configured `max_new_tokens`), so the loss
//!   neither depends on lengths nor on how many tokens the batch happens to hold.
//!
//! When mu = 1 (one update per batch), `logp_old` is the detached current log-prob: rho is 1 in
//! value, but its gradient is that of logp_theta, which is what the policy gradient needs.
//!
//! The `Normalizer` carries the sizes of the *whole* optimisation batch, so the loss of a
//! micro-batch is its exact share of the batch loss and gradient accumulation over micro-batches
//! of any size gives the same gradient as one big batch. TRL's `bnpo` divides each micro-batch
//! by its own token count (and then by the number of micro-batches), which makes the result depend
//! on how the batch was split; here a `bnpo` normaliser built from the whole batch makes `bnpo`
//! identical to `dapo`, and one built from a single micro-batch ([`Normalizer::of_mask`])
//! reproduces TRL's `bnpo` on that micro-batch.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{GrpoError, Result};

/// How per-token losses are aggregated into one number (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossType {
    Grpo,
    Bnpo,
    DrGrpo,
    Dapo,
}

impl LossType {
    pub const ALL: [LossType; 4] = [LossType::Grpo, LossType::Bnpo, LossType::DrGrpo, LossType::Dapo];

    pub fn name(self) -> &'static str {
        match self {
            LossType::Grpo => "grpo",
            LossType::Bnpo => "bnpo",
            LossType::DrGrpo => "dr_grpo",
            LossType::Dapo => "dapo",
        }
    }
}

/// The constants of the loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossParams {
    pub loss_type: LossType,
    /// Lower clip range: rho is clipped below at `1 - epsilon_low`.
    pub epsilon_low: f64,
    /// Upper clip range: rho is clipped above at `1 + epsilon_high`.
    pub epsilon_high: f64,
    /// Weight of the k3 KL penalty; 0 means no reference model.
    pub beta: f64,
    /// Cap of the truncated importance-sampling weight; `None` = no reweighting.
    pub tis_cap: Option<f64>,
}

/// Sizes of the whole optimisation batch that the aggregations divide by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalizer {
    /// Number of completions B (grpo, dr_grpo).
    pub sequences: f64,
    /// Number of completion tokens that count in the loss (bnpo, dapo); a value below 1 is
    /// treated as 1, so a batch without tokens gives 0 rather than NaN.
    pub tokens: f64,
    /// The configured maximum completion length (dr_grpo).
    pub max_completion_len: f64,
}

impl Normalizer {
    /// The normaliser of a batch that is trained as one piece: B = rows of `mask`, tokens = its
    /// sum.
    pub fn of_mask(mask: &Tensor, max_completion_len: usize) -> Self {
        Self {
            sequences: mask.size()[0] as f64,
            tokens: mask.to_kind(Kind::Double).sum(Kind::Double).double_value(&[]),
            max_completion_len: max_completion_len as f64,
        }
    }
}

/// The inputs of [`policy_loss`]. All `[B, T]` tensors share one shape and one floating dtype;
/// values at masked positions are ignored, whatever they are.
pub struct LossInputs<'a> {
    /// log pi_theta of each completion token, with gradient.
    pub logprobs: &'a Tensor,
    /// log pi_old, computed before the first update of the batch; `None` when mu = 1.
    pub old_logprobs: Option<&'a Tensor>,
    /// log pi_ref of the frozen reference model; required when beta != 0.
    pub ref_logprobs: Option<&'a Tensor>,
    /// One advantage per completion, `[B]`.
    pub advantages: &'a Tensor,
    /// `[B, T]`, true (or 1) for tokens that count.
    pub mask: &'a Tensor,
    /// Per-token entropy of the sampling distribution, for the metric only.
    pub entropies: Option<&'a Tensor>,
    /// log pi_behaviour, the log-probs the sampler reported (where it reported none: log pi_old,
    /// so the weight is 1); used with `tis_cap`.
    pub behaviour_logprobs: Option<&'a Tensor>,
}

/// Sums over the tokens of a (micro-)batch, to be added across micro-batches and divided by the
/// total token count at the end.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LossStats {
    /// Tokens that counted in the loss.
    pub tokens: f64,
    /// Sum of per-token KL (0 without a reference).
    pub kl_sum: f64,
    /// Sum of per-token entropies (0 without entropies).
    pub entropy_sum: f64,
    /// Tokens with rho < 1 - eps_low and A < 0 (clipped from below).
    pub clipped_low: f64,
    /// Tokens with rho > 1 + eps_high and A > 0 (clipped from above).
    pub clipped_high: f64,
    /// Tokens clipped either way: the tokens whose gradient the clip removed.
    pub clipped_region: f64,
}

impl LossStats {
    pub fn add(&mut self, other: &LossStats) {
        self.tokens += other.tokens;
        self.kl_sum += other.kl_sum;
        self.entropy_sum += other.entropy_sum;
        self.clipped_low += other.clipped_low;
        self.clipped_high += other.clipped_high;
        self.clipped_region += other.clipped_region;
    }

    fn per_token(&self, sum: f64) -> f64 {
        if self.tokens > 0.0 {
            sum / self.tokens
        } else {
            0.0
        }
    }

    pub fn kl_mean(&self) -> f64 {
        self.per_token(self.kl_sum)
    }

    pub fn entropy_mean(&self) -> f64 {
        self.per_token(self.entropy_sum)
    }

    pub fn clip_low_fraction(&self) -> f64 {
        self.per_token(self.clipped_low)
    }

    pub fn clip_high_fraction(&self) -> f64 {
        self.per_token(self.clipped_high)
    }

    pub fn clip_region_fraction(&self) -> f64 {
        self.per_token(self.clipped_region)
    }
}

pub struct LossOutput {
    /// Scalar with gradient: this batch's share of the loss of the batch `Normalizer` describes.
    pub loss: Tensor,
    pub stats: LossStats,
}

/// The loss of one (micro-)batch; see the module documentation for the formula.
pub fn policy_loss(inputs: &LossInputs, params: &LossParams, normalizer: &Normalizer) -> Result<LossOutput> {
    let LossInputs { logprobs, old_logprobs, ref_logprobs, advantages, mask, entropies, behaviour_logprobs } = *inputs;
    let shape = logprobs.size();
    if shape.len() != 2 || mask.size() != shape {
        return Err(GrpoError::Input(format!(
            "log-probs {:?} and mask {:?} must both be [batch, tokens]",
            shape,
            mask.size()
        )));
    }
    if advantages.size() != [shape[0]] {
        return Err(GrpoError::Input(format!("advantages {:?} must be [{}]", advantages.size(), shape[0])));
    }
    for (name, t) in [
        ("old log-probs", old_logprobs),
        ("reference log-probs", ref_logprobs),
        ("entropies", entropies),
        ("behaviour log-probs", behaviour_logprobs),
    ] {
        if let Some(t) = t {
            if t.size() != shape {
                return Err(GrpoError::Input(format!(
                    "{name} {:?} must have the shape of the log-probs {shape:?}",
                    t.size()
                )));
            }
        }
    }
    if params.beta != 0.0 && ref_logprobs.is_none() {
        return Err(GrpoError::Input("beta != 0 needs reference log-probs".into()));
    }

    let kind = logprobs.kind();
    let is_token = mask.to_kind(Kind::Bool);
    let token_weight = mask.to_kind(kind);
    let zero = Tensor::zeros_like(logprobs);
    // Differences are zeroed at masked positions *before* exp: whatever sits there (padding,
    // -inf) must not turn into inf * 0 = NaN in the forward pass or in the gradient.
    let masked = |t: Tensor| t.where_self(&is_token, &zero);

    let log_ratio = match old_logprobs {
        Some(old) => masked(logprobs - old),
        None => masked(logprobs - logprobs.detach()),
    };
    let ratio = log_ratio.exp();
    let advantage = advantages.to_kind(kind).unsqueeze(1);
    let unclipped = &ratio * &advantage;
    let clipped = ratio.clamp(1.0 - params.epsilon_low, 1.0 + params.epsilon_high) * &advantage;
    let mut per_token = -unclipped.minimum(&clipped);
    if let (Some(cap), Some(behaviour)) = (params.tis_cap, behaviour_logprobs) {
        let old = old_logprobs.map_or_else(|| logprobs.detach(), Tensor::shallow_clone);
        let weight = masked(old - behaviour).exp().clamp_max(cap).detach();
        per_token = per_token * weight;
    }

    let kl = match ref_logprobs {
        Some(reference) => {
            let d = masked(reference - logprobs);
            Some(d.exp() - &d - 1.0)
        }
        None => None,
    };
    if params.beta != 0.0 {
        per_token = per_token + kl.as_ref().expect("checked above") * params.beta;
    }
    let per_token = per_token * &token_weight;

    let loss = match params.loss_type {
        LossType::Grpo => {
            let lengths = token_weight.sum_dim_intlist(1, false, kind).clamp_min(1.0);
            (per_token.sum_dim_intlist(1, false, kind) / lengths).sum(kind) / normalizer.sequences.max(1.0)
        }
        LossType::Bnpo | LossType::Dapo => per_token.sum(kind) / normalizer.tokens.max(1.0),
        LossType::DrGrpo => per_token.sum(kind) / (normalizer.sequences * normalizer.max_completion_len).max(1.0),
    };

    let stats = tch::no_grad(|| {
        let count = |t: &Tensor| t.logical_and(&is_token).sum(Kind::Double).double_value(&[]);
        let sum = |t: &Tensor| {
            let t = t.detach();
            t.where_self(&is_token, &t.zeros_like()).sum(Kind::Double).double_value(&[])
        };
        let ratio = ratio.detach();
        let low = ratio.lt(1.0 - params.epsilon_low).logical_and(&advantage.lt(0.0));
        let high = ratio.gt(1.0 + params.epsilon_high).logical_and(&advantage.gt(0.0));
        LossStats {
            tokens: token_weight.sum(Kind::Double).double_value(&[]),
            kl_sum: kl.as_ref().map_or(0.0, sum),
            entropy_sum: entropies.map_or(0.0, sum),
            clipped_low: count(&low),
            clipped_high: count(&high),
            clipped_region: count(&low.logical_or(&high)),
        }
    });
    Ok(LossOutput { loss, stats })
}
