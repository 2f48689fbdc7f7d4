//! The task of `aha demo aha-moment`: 3-digit additions (the problems of [`Addition`]) answered
//! with a first attempt that is sometimes checked.
//!
//! The base model of that demo is pretrained on completions of two kinds. Most give a first
//! attempt at the sum and stop there; the attempt is wrong about half of the time, the way a hasty
//! sum is (a carry dropped or added, a digit off by one):
//!
//! ```text
//!  <think> 478 + 356 = 824. </think> <answer>824</answer>
//! ```
//!
//! A few (10% in the committed corpus) stop after the attempt to check it: they recompute the sum
//! column by column and either confirm the attempt or say it was wrong and correct it:
//!
//! ```text
//!  <think> 478 + 356 = 824. Wait, let me check: ones: 8+6=14, write 4 carry 1. tens: 7+5+1=13,
//!  write 3 carry 1. hundreds: 4+3+1=8, write 8. So it is 834, not 824. </think> <answer>834</answer>
//!  <think> 478 + 356 = 834. Wait, let me check: ones: ... So 834 is right. </think> <answer>834</answer>
//! ```
//!
//! Checks confirm right attempts and correct wrong ones at the rate the attempts are right, as a
//! base model's would; nothing in the corpus says that checking pays. A one-million-parameter
//! model cannot add three-digit numbers in one go, so its own first attempts are mostly wrong and
//! its checks mostly right: the contrast reinforcement learning on the final answer alone can
//! discover. [`SelfCheck::analyse`] reads a completion back: whether it checks itself, its first
//! attempt and its final answer.

use rand::Rng;

use crate::synthetic::Addition;

/// Completions with and without a self-check for [`Addition`] problems.
pub struct SelfCheck;

/// What [`SelfCheck::analyse`] reads from a completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedCompletion {
    /// Whether the completion contains [`SelfCheck::MARK`].
    pub checks: bool,
    /// The number after the first `=` before the check (the first attempt), if any.
    pub first_attempt: Option<String>,
    /// The content of the last `<answer>` tag, trimmed, if any.
    pub final_answer: Option<String>,
}

impl CheckedCompletion {
    /// A check that ends with another answer than the first attempt.
    pub fn changes_answer(&self) -> bool {
        self.checks
            && self.first_attempt.is_some()
            && self.final_answer.is_some()
            && self.first_attempt != self.final_answer
    }
}

impl SelfCheck {
    /// The phrase that starts a check (what `aha traces stats` counts as "wait" and "let me check").
    pub const MARK: &'static str = "Wait, let me check:";

    /// A first attempt at `a + b`: the sum with probability `right`, else a slip (see [`SelfCheck::slip`]).
    pub fn attempt(a: u64, b: u64, right: f64, rng: &mut impl Rng) -> u64 {
        if rng.random_bool(right) {
            a + b
        } else {
            Self::slip(a, b, rng)
        }
    }

    /// A wrong sum of `a + b` as a hasty adder writes it: one carry dropped when the sum has any
    /// (else one carry added), or one digit off by one. Never equal to `a + b`.
    pub fn slip(a: u64, b: u64, rng: &mut impl Rng) -> u64 {
        let sum = a + b;
        // Carries of the column sum: column i carries into i + 1.
        let mut carries = Vec::new();
        let (mut x, mut y, mut carry, mut place) = (a, b, 0, 1u64);
        while x > 0 || y > 0 {
            let s = x % 10 + y % 10 + carry;
            carry = s / 10;
            if carry > 0 {
                carries.push(place * 10);
            }
            x /= 10;
            y /= 10;
            place *= 10;
        }
        let wrong = match rng.random_range(0..3) {
            0 | 1 if !carries.is_empty() => sum - carries[rng.random_range(0..carries.len())],
            0 => sum + 10u64.pow(rng.random_range(1..3)),
            _ => {
                let place = 10u64.pow(rng.random_range(0..3));
                let digit = sum / place % 10;
                if digit == 9 || (digit > 0 && rng.random_bool(0.5)) {
                    sum - place
                } else {
                    sum + place
                }
            }
        };
        if wrong == sum {
            sum + 1
        } else {
            wrong
        }
    }

    /// The completion that stops at the first attempt.
    pub fn unchecked_completion(a: u64, b: u64, attempt: u64) -> String {
        format!(" <think> {a} + {b} = {attempt}. </think> <answer>{attempt}</answer>")
    }

    /// The completion that checks its first attempt column by column, confirming or correcting it.
    pub fn checked_completion(a: u64, b: u64, attempt: u64) -> String {
        let worked = Addition::worked_completion(a, b);
        let columns = worked.strip_prefix(" <think> ").and_then(|w| w.split(" </think>").next()).unwrap_or_default();
        let sum = a + b;
        let verdict =
            if attempt == sum { format!("So {sum} is right.") } else { format!("So it is {sum}, not {attempt}.") };
        format!(" <think> {a} + {b} = {attempt}. {} {columns} {verdict} </think> <answer>{sum}</answer>", Self::MARK)
    }

    /// A practice text (not a solution, and no self-check): the column-by-column sum alone, as a
    /// textbook shows it. The base model learns column addition from these; its solutions rarely
    /// use it.
    pub fn practice_text(a: u64, b: u64) -> String {
        let worked = Addition::worked_completion(a, b);
        let columns = worked.strip_prefix(" <think> ").and_then(|w| w.split(" </think>").next()).unwrap_or_default();
        format!("Column addition of {a} + {b}: {columns} So {a} + {b} = {}.", a + b)
    }

    /// Whether a completion checks itself.
    pub fn checks(completion: &str) -> bool {
        completion.contains(Self::MARK)
    }

    /// Reads a completion back: whether it checks, the first attempt, the final answer.
    pub fn analyse(completion: &str) -> CheckedCompletion {
        let checks = Self::checks(completion);
        let before_check = completion.split(Self::MARK).next().unwrap_or("");
        let first_attempt = before_check.split_once('=').and_then(|(_, rest)| {
            let number: String = rest.trim_start().chars().take_while(|c| c.is_ascii_digit()).collect();
            (!number.is_empty()).then_some(number)
        });
        CheckedCompletion { checks, first_attempt, final_answer: last_answer(completion) }
    }
}

/// The content of a completion's last `<answer>` tag, trimmed (to its end if unclosed).
pub(crate) fn last_answer(completion: &str) -> Option<String> {
    completion
        .rfind("<answer>")
        .map(|start| &completion[start + "<answer>".len()..])
        .map(|rest| rest.split("</answer>").next().unwrap_or(rest).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn checks_confirm_or_correct_and_read_back() {
        let text = SelfCheck::checked_completion(478, 356, 824);
        assert_eq!(
            text,
            " <think> 478 + 356 = 824. Wait, let me check: ones: 8+6=14, write 4 carry 1. tens: 7+5+1=13, write 3 \
             carry 1. hundreds: 4+3+1=8, write 8. So it is 834, not 824. </think> <answer>834</answer>"
        );
        let read = SelfCheck::analyse(&text);
        assert!(read.checks && read.changes_answer());
        assert_eq!(read.first_attempt.as_deref(), Some("824"));
        assert_eq!(read.final_answer.as_deref(), Some("834"));
        let confirmed = SelfCheck::analyse(&SelfCheck::checked_completion(478, 356, 834));
        assert!(confirmed.checks && !confirmed.changes_answer());
        let plain = SelfCheck::analyse(&SelfCheck::unchecked_completion(478, 356, 824));
        assert!(!plain.checks && plain.first_attempt.as_deref() == Some("824"));
    }

    #[test]
    fn slips_are_never_the_sum() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for a in (100..1000).step_by(37) {
            for b in (100..1000).step_by(41) {
                assert_ne!(SelfCheck::slip(a, b, &mut rng), a + b, "{a} + {b}");
            }
        }
    }
}
