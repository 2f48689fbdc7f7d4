//! Group-relative advantages: how much better each completion did than its siblings.
//!
//! For the G completions of one prompt with rewards r_1..r_G:
//!
//! ```text
//! A_i = r_i - mean(r)                                   scale_rewards = "none"   (Dr. GRPO)
//! A_i = (r_i - mean(r)) / (std(r) + 1e-4)               scale_rewards = "group"  (GRPO)
//! A_i = (r_i - mean(r)) / (std(all rewards) + 1e-4)     scale_rewards = "batch"
//! ```
//!
//! `std` is the *sample* standard deviation (divided by n - 1), as in TRL's GRPOTrainer, which
//! calls `torch.std` (Bessel-corrected by default); a group of one has std 0. In "batch" mode the
//! mean is still the group's: only the scale is shared, so that groups with a small spread (an
//! almost-solved or almost-hopeless prompt) are not blown up to unit variance, one of Dr. GRPO's
//! arguments against dividing by the group std (arXiv:2503.20783).
//!
//! A group whose rewards are all equal (std <= 1e-8, TRL's `isclose(std, 0)`) carries no signal:
//! its advantages are set to exactly 0 (TRL computes (r - mean) / 1e-4, which differs from 0 only
//! by rounding), and it is counted in `frac_reward_zero_std`. That count always uses the group
//! std, also in "batch" mode (where TRL tests the batch std instead). DAPO's dynamic sampling
//! (arXiv:2503.14476) replaces such groups with newly sampled ones; [`DynamicSampling`] keeps the
//! book for it.

use serde::{Deserialize, Serialize};

use crate::error::{GrpoError, Result};

/// Added to the standard deviation before dividing, as TRL does.
pub const STD_EPSILON: f64 = 1e-4;

/// A group whose reward std is at most this carries no signal (TRL: `torch.isclose(std, 0)`).
pub const ZERO_STD_TOLERANCE: f64 = 1e-8;

/// What the centred rewards are divided by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleRewards {
    /// The std of the completion's own group (GRPO).
    #[default]
    Group,
    /// The std of every reward in the batch.
    Batch,
    /// Nothing: advantages are centred rewards (Dr. GRPO).
    None,
}

/// The advantages of a batch of groups and the statistics logged with them.
#[derive(Debug, Clone, PartialEq)]
pub struct Advantages {
    /// One advantage per completion, in the order and grouping given.
    pub advantages: Vec<Vec<f64>>,
    pub group_mean: Vec<f64>,
    /// Sample std of each group (0 for a group of one).
    pub group_std: Vec<f64>,
    /// Sample std of all rewards together.
    pub batch_std: f64,
    /// Whether each group's rewards vary (std > [`ZERO_STD_TOLERANCE`]).
    pub has_signal: Vec<bool>,
    /// Number of groups without signal.
    pub zero_std_groups: usize,
    /// `zero_std_groups / groups` (0 for no groups).
    pub frac_reward_zero_std: f64,
}

/// Mean and sample (n - 1) standard deviation; the std of fewer than two values is 0.
pub fn mean_and_sample_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|r| (r - mean) * (r - mean)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// Whether a group's rewards vary enough to teach anything.
pub fn has_signal(rewards: &[f64]) -> bool {
    mean_and_sample_std(rewards).1 > ZERO_STD_TOLERANCE
}

/// Group-relative advantages of `groups` (each inner vector: the rewards of one prompt's
/// completions). Rewards must be finite; groups may differ in size.
pub fn compute_advantages(groups: &[Vec<f64>], scale: ScaleRewards) -> Result<Advantages> {
    for (g, group) in groups.iter().enumerate() {
        if group.is_empty() {
            return Err(GrpoError::Input(format!("group {g} has no completions")));
        }
        if let Some((i, r)) = group.iter().enumerate().find(|(_, r)| !r.is_finite()) {
            return Err(GrpoError::Input(format!("group {g}, completion {i}: reward {r} is not finite")));
        }
    }
    let all: Vec<f64> = groups.iter().flatten().copied().collect();
    let batch_std = mean_and_sample_std(&all).1;
    let (group_mean, group_std): (Vec<f64>, Vec<f64>) = groups.iter().map(|g| mean_and_sample_std(g)).unzip();
    let has_signal: Vec<bool> = group_std.iter().map(|&s| s > ZERO_STD_TOLERANCE).collect();
    let advantages = groups
        .iter()
        .enumerate()
        .map(|(g, rewards)| {
            if !has_signal[g] {
                return vec![0.0; rewards.len()];
            }
            let divisor = match scale {
                ScaleRewards::Group => group_std[g] + STD_EPSILON,
                ScaleRewards::Batch => batch_std + STD_EPSILON,
                ScaleRewards::None => 1.0,
            };
            rewards.iter().map(|r| (r - group_mean[g]) / divisor).collect()
        })
        .collect();
    let zero_std_groups = has_signal.iter().filter(|&&s| !s).count();
    let frac_reward_zero_std = if groups.is_empty() { 0.0 } else { zero_std_groups as f64 / groups.len() as f64 };
    Ok(Advantages { advantages, group_mean, group_std, batch_std, has_signal, zero_std_groups, frac_reward_zero_std })
}

/// The book-keeping of DAPO's dynamic sampling for one training step: groups without signal are
/// dropped and more prompts are sampled until `target` groups with signal are collected, or until
/// `max_extra_batches` generation batches beyond the first have been spent. Generic over whatever
/// the caller keeps per group (its completions, token ids, rewards).
#[derive(Debug, Clone)]
pub struct DynamicSampling<T> {
    target: usize,
    max_extra_batches: usize,
    batches: usize,
    kept: Vec<T>,
    dropped: usize,
}

impl<T> DynamicSampling<T> {
    pub fn new(target_groups: usize, max_extra_batches: usize) -> Self {
        Self { target: target_groups, max_extra_batches, batches: 0, kept: Vec::new(), dropped: 0 }
    }

    /// Offers the groups of one generation batch, each with its rewards. Keeps those with signal
    /// while fewer than `target` are kept; returns how many were kept.
    pub fn add_batch(&mut self, groups: impl IntoIterator<Item = (T, Vec<f64>)>) -> usize {
        self.batches += 1;
        let before = self.kept.len();
        for (group, rewards) in groups {
            if self.kept.len() < self.target && has_signal(&rewards) {
                self.kept.push(group);
            } else {
                self.dropped += 1;
            }
        }
        self.kept.len() - before
    }

    /// Whether another generation batch should be sampled: the step is not full yet and the cap
    /// on extra batches is not reached.
    pub fn wants_more(&self) -> bool {
        self.kept.len() < self.target && self.batches < 1 + self.max_extra_batches
    }

    pub fn is_full(&self) -> bool {
        self.kept.len() >= self.target
    }

    /// Generation batches offered so far (the first one included).
    pub fn batches(&self) -> usize {
        self.batches
    }

    /// Groups dropped so far: without signal, or beyond the target.
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// The kept groups, at most `target` of them (fewer when the cap was reached first).
    pub fn into_groups(self) -> Vec<T> {
        self.kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn group_scaling_by_hand() {
        // Group [1, 0, 0, 1]: mean 0.5; squared deviations 4 x 0.25 = 1; sample variance 1/3,
        // std 0.5773502691896258. A = +-0.5 / (0.5773502691896258 + 1e-4) = +-0.8658752...
        let a = compute_advantages(&[vec![1.0, 0.0, 0.0, 1.0]], ScaleRewards::Group).unwrap();
        let expected = 0.5 / ((1.0f64 / 3.0).sqrt() + 1e-4);
        assert!(close(a.group_std[0], (1.0f64 / 3.0).sqrt()));
        assert!((expected - 0.865_875_2).abs() < 1e-6);
        for (got, sign) in a.advantages[0].iter().zip([1.0, -1.0, -1.0, 1.0]) {
            assert!(close(*got, sign * expected), "{got}");
        }
        assert_eq!(a.zero_std_groups, 0);
    }

    #[test]
    fn none_and_batch_scaling_by_hand() {
        // Groups [2, 0] and [1, 1]: group means 1 and 1; the second has no signal.
        let groups = vec![vec![2.0, 0.0], vec![1.0, 1.0]];
        let none = compute_advantages(&groups, ScaleRewards::None).unwrap();
        assert_eq!(none.advantages, vec![vec![1.0, -1.0], vec![0.0, 0.0]]);
        // Batch std of [2, 0, 1, 1]: mean 1, squared deviations 1 + 1 + 0 + 0 = 2, /3, sqrt =
        // 0.816496580927726. A = +-1 / (0.816496580927726 + 1e-4).
        let batch = compute_advantages(&groups, ScaleRewards::Batch).unwrap();
        let b = 1.0 / ((2.0f64 / 3.0).sqrt() + 1e-4);
        assert!(close(batch.batch_std, (2.0f64 / 3.0).sqrt()));
        assert!(close(batch.advantages[0][0], b) && close(batch.advantages[0][1], -b));
        assert_eq!(batch.advantages[1], vec![0.0, 0.0]);
        assert_eq!(batch.zero_std_groups, 1);
        assert_eq!(batch.frac_reward_zero_std, 0.5);
        assert_eq!(batch.has_signal, vec![true, false]);
    }

    #[test]
    fn equal_rewards_give_zero_and_no_nan() {
        for scale in [ScaleRewards::Group, ScaleRewards::Batch, ScaleRewards::None] {
            let a = compute_advantages(&[vec![0.1; 8], vec![0.0; 8], vec![3.0]], scale).unwrap();
            assert!(a.advantages.iter().flatten().all(|&x| x == 0.0));
            assert_eq!(a.zero_std_groups, 3);
            assert_eq!(a.frac_reward_zero_std, 1.0);
        }
        let empty = compute_advantages(&[], ScaleRewards::Group).unwrap();
        assert_eq!(empty.frac_reward_zero_std, 0.0);
    }

    #[test]
    fn rejects_non_finite_rewards() {
        let err = compute_advantages(&[vec![1.0, f64::NAN]], ScaleRewards::Group).unwrap_err();
        assert!(err.to_string().contains("group 0, completion 1"), "{err}");
    }

    #[test]
    fn dynamic_sampling_fills_and_caps() {
        let mut d = DynamicSampling::new(2, 1);
        assert_eq!(d.add_batch([("a", vec![1.0, 1.0]), ("b", vec![0.0, 1.0])]), 1);
        assert!(d.wants_more());
        assert_eq!(d.add_batch([("c", vec![0.0, 0.0]), ("d", vec![1.0, 0.0]), ("e", vec![0.0, 1.0])]), 1);
        assert!(d.is_full() && !d.wants_more());
        assert_eq!(d.dropped(), 3);
        assert_eq!(d.into_groups(), vec!["b", "d"]);

        let mut capped = DynamicSampling::new(2, 1);
        capped.add_batch([(1, vec![0.0, 0.0])]);
        capped.add_batch([(2, vec![0.0, 0.0])]);
        assert!(!capped.wants_more() && !capped.is_full());
        assert_eq!(capped.batches(), 2);
        assert!(capped.into_groups().is_empty());
    }
}
