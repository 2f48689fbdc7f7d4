//! Evaluation metrics over K sampled completions per problem: pass@1, pass@k (the unbiased
//! estimator of Chen et al., 2021) and maj@k (majority vote, the R1 paper's cons@k).
//!
//! Definitions, for one problem with `n` judged samples of which `c` are correct:
//! - pass@1 = c / n, the mean correctness of the samples;
//! - pass@k = 1 - C(n-c, k) / C(n, k), the chance that at least one of k samples drawn without
//!   replacement from the n is correct; computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i), which
//!   never forms a binomial coefficient. It is undefined (`None`) when n < k;
//! - maj@k: the samples' extracted answers (normalised, see [`normalize_answer`]) vote; samples
//!   without an answer do not vote. The answer with the most votes wins; among answers with
//!   equally many votes, the one that appeared first wins (earliest first occurrence). The
//!   problem counts as solved when the winning sample is correct. No answer at all: not solved.
//!
//! Dataset-level numbers are means over problems.

use serde::Serialize;

/// The unbiased pass@k estimator for `n` samples of which `c` are correct. `None` when `k` is 0,
/// `n < k` (k samples cannot be drawn from n) or `c > n`.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> Option<f64> {
    if k == 0 || n < k || c > n {
        return None;
    }
    if n - c < k {
        return Some(1.0);
    }
    let miss: f64 = ((n - c + 1)..=n).map(|i| 1.0 - k as f64 / i as f64).product();
    Some(1.0 - miss)
}

/// The index of the sample whose answer wins the vote: most votes, ties going to the answer
/// that appeared first; the index is that answer's first occurrence. `None` when no sample has
/// an answer.
pub fn majority_vote<S: AsRef<str>>(answers: &[Option<S>]) -> Option<usize> {
    // (answer, index of its first occurrence, votes), in order of first occurrence.
    let mut tally: Vec<(&str, usize, usize)> = Vec::new();
    for (index, answer) in answers.iter().enumerate() {
        let Some(answer) = answer.as_ref().map(AsRef::as_ref) else { continue };
        match tally.iter_mut().find(|(a, _, _)| *a == answer) {
            Some(entry) => entry.2 += 1,
            None => tally.push((answer, index, 1)),
        }
    }
    // max_by_key keeps the last maximum; scanning in reverse makes that the earliest one.
    tally.iter().rev().max_by_key(|(_, _, votes)| *votes).map(|(_, first, _)| *first)
}

/// A light, checker-independent normal form for voting: surrounding `$`, a whole-answer
/// `\boxed{}` / `\text{}`, `\left`/`\right`, `\dfrac`/`\tfrac`, spacing commands, whitespace, a
/// trailing period and thousands separators go; a number with a zero fractional part loses it
/// (`72.0` -> `72`).
pub fn normalize_answer(text: &str) -> String {
    let mut s = text.to_string();
    loop {
        let before = s.clone();
        s = s.trim().trim_end_matches('.').trim().trim_matches('$').trim().to_string();
        for wrapper in ["\\boxed{", "\\text{", "\\textbf{", "\\mathrm{"] {
            if let Some(inner) = s.strip_prefix(wrapper).and_then(|r| r.strip_suffix('}')) {
                if balanced(inner) {
                    s = inner.trim().to_string();
                }
            }
        }
        if s == before {
            break;
        }
    }
    for (from, to) in [("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\left", ""), ("\\right", "")] {
        s = s.replace(from, to);
    }
    for spacing in ["\\!", "\\,", "\\;", "\\:", "\\ "] {
        s = s.replace(spacing, "");
    }
    s.retain(|c| !c.is_whitespace());
    if is_grouped_number(&s) {
        s.retain(|c| c != ',');
    }
    if let Some((integer, fraction)) = s.split_once('.') {
        let digits = integer.strip_prefix('-').unwrap_or(integer);
        let is_integer = |t: &str, digit: fn(char) -> bool| !t.is_empty() && t.chars().all(digit);
        if is_integer(digits, |c| c.is_ascii_digit()) && is_integer(fraction, |c| c == '0') {
            s = integer.to_string();
        }
    }
    s
}

fn balanced(text: &str) -> bool {
    let mut depth = 0i32;
    for c in text.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            return false;
        }
    }
    depth == 0
}

/// `1,234` or `-12,345,678.5`: digits in groups of three separated by commas.
fn is_grouped_number(s: &str) -> bool {
    let body = s.strip_prefix('-').unwrap_or(s);
    let integer = body.split_once('.').map_or(body, |(i, _)| i);
    let groups: Vec<&str> = integer.split(',').collect();
    groups.len() > 1
        && (1..=3).contains(&groups[0].len())
        && groups.iter().all(|g| g.chars().all(|c| c.is_ascii_digit()))
        && groups[1..].iter().all(|g| g.len() == 3)
}

/// One judged sample: correct or not, and its normalised extracted answer (the vote).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleOutcome {
    pub correct: bool,
    pub answer: Option<String>,
}

/// One problem's metrics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProblemScore {
    /// Judged samples.
    pub n: usize,
    /// Correct samples.
    pub correct: usize,
    pub pass_at_1: f64,
    /// `None` when n < k.
    pub pass_at_k: Option<f64>,
    /// The sample whose answer won the vote (among the first k).
    pub majority: Option<usize>,
    pub maj_at_k: bool,
}

impl ProblemScore {
    /// Scores `samples` for pass@k and maj@k at `k` (maj@k votes over the first k samples).
    pub fn new(samples: &[SampleOutcome], k: usize) -> Self {
        let n = samples.len();
        let correct = samples.iter().filter(|s| s.correct).count();
        let voters: Vec<Option<&str>> = samples.iter().take(k).map(|s| s.answer.as_deref()).collect();
        let majority = majority_vote(&voters);
        ProblemScore {
            n,
            correct,
            pass_at_1: if n == 0 { 0.0 } else { correct as f64 / n as f64 },
            pass_at_k: pass_at_k(n, correct, k),
            majority,
            maj_at_k: majority.is_some_and(|i| samples[i].correct),
        }
    }
}

/// Dataset-level means.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub problems: usize,
    pub k: usize,
    /// Mean of the problems' pass@1.
    pub pass_at_1: f64,
    /// Mean of pass@k over the problems where it is defined (n >= k).
    pub pass_at_k: f64,
    /// Problems where pass@k was undefined (fewer than k judged samples).
    pub pass_at_k_undefined: usize,
    /// Fraction of problems solved by the majority vote.
    pub maj_at_k: f64,
}

impl Summary {
    pub fn new(scores: &[ProblemScore], k: usize) -> Self {
        let mean =
            |values: &[f64]| if values.is_empty() { 0.0 } else { values.iter().sum::<f64>() / values.len() as f64 };
        let pass_at_1: Vec<f64> = scores.iter().map(|s| s.pass_at_1).collect();
        let pass_at_k: Vec<f64> = scores.iter().filter_map(|s| s.pass_at_k).collect();
        let maj: Vec<f64> = scores.iter().map(|s| if s.maj_at_k { 1.0 } else { 0.0 }).collect();
        Summary {
            problems: scores.len(),
            k,
            pass_at_1: mean(&pass_at_1),
            pass_at_k: mean(&pass_at_k),
            pass_at_k_undefined: scores.len() - pass_at_k.len(),
            maj_at_k: mean(&maj),
        }
    }
}
