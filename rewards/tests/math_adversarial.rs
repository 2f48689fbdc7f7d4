//! Adversarial answers (issue 20, item 5): each gets a verdict — usually 0, or a skip when it is
//! the gold — within 50 ms, never a panic, a hang or unbounded memory. The lexer's length and
//! token bounds, the parser's depth bound and the exact evaluator's bit budget make the budget
//! per verdict; these cases hold them to it.

use std::time::{Duration, Instant};

use aha_rewards::math::MathChecker;
use aha_rewards::Score;

/// The budget of one verdict.
const BUDGET: Duration = Duration::from_millis(50);

/// The best of three timings, so that a busy machine does not fail the test; the verdict of each.
fn timed(completion: &str, gold: &str) -> (Score, Duration) {
    let checker = MathChecker::default();
    let mut best = Duration::MAX;
    let mut score = None;
    for _ in 0..3 {
        let start = Instant::now();
        let verdict = checker.verdict(completion, gold);
        best = best.min(start.elapsed());
        score = Some(verdict.score);
    }
    (score.unwrap(), best)
}

fn adversarial_answers() -> Vec<(&'static str, String)> {
    vec![
        ("\\frac{ x 10^4", "\\frac{".repeat(10_000)),
        ("\\frac{1}{ x 10^4", "\\frac{1}{".repeat(10_000)),
        ("9^9^9^9", "9^9^9^9".into()),
        ("9^{9^{9^{9}}}", "9^{9^{9^{9}}}".into()),
        ("10^{10^{10}}", "10^{10^{10}}".into()),
        ("10^{-10^{10}}", "10^{-10^{10}}".into()),
        ("(10^{10^{10}})!", "(10^{10^{10}})!".into()),
        ("\\binom{10^{9}}{5 \\cdot 10^{8}}", "\\binom{10^{9}}{5 \\cdot 10^{8}}".into()),
        ("100,000 digits", "7".repeat(100_000)),
        ("1e999999", "1e999999".into()),
        ("1 MB of (", "(".repeat(1 << 20)),
        ("1 MB of $", "$".repeat(1 << 20)),
        ("1 MB of \\(", "\\(".repeat(1 << 19)),
        ("1 MB of {", "{".repeat(1 << 20)),
        ("1 MB of 1+", "1+".repeat(1 << 19)),
        ("x^x^x^x^x^x^x^x", "x^x^x^x^x^x^x^x".into()),
        ("\\sqrt{ x 1000", format!("{}2{}", "\\sqrt{".repeat(1000), "}".repeat(1000))),
        ("\\pm x 500", "1\\pm".repeat(500) + "1"),
        ("a set of 10^4 items", format!("\\{{{}\\}}", vec!["1"; 10_000].join(","))),
    ]
}

#[test]
fn adversarial_predictions_get_a_verdict_within_budget() {
    let mut slow = Vec::new();
    for (name, answer) in adversarial_answers() {
        for completion in [answer.clone(), format!("\\boxed{{{answer}}}"), format!("<answer>{answer}</answer>")] {
            let (score, took) = timed(&completion, "2");
            assert!(matches!(score, Score::Reward { reward } if reward == 0.0), "{name}: {score:?}");
            if took > BUDGET {
                slow.push(format!("{name} ({} bytes): {took:?}", completion.len()));
            }
        }
    }
    assert!(slow.is_empty(), "over {BUDGET:?}:\n{}", slow.join("\n"));
}

#[test]
fn adversarial_golds_are_skipped_or_judged_within_budget() {
    let mut slow = Vec::new();
    for (name, answer) in adversarial_answers() {
        let (score, took) = timed("\\boxed{2}", &answer);
        // Never a 1 for the wrong answer; mostly a skip (a gold that does not evaluate).
        assert!(!matches!(score, Score::Reward { reward } if reward == 1.0), "{name}: {score:?}");
        if took > BUDGET {
            slow.push(format!("{name}: {took:?}"));
        }
    }
    assert!(slow.is_empty(), "over {BUDGET:?}:\n{}", slow.join("\n"));
}

/// The false positives of huge and tiny values: none of these equals 0 or \infty.
#[test]
fn huge_and_tiny_values_equal_neither_zero_nor_infinity() {
    for answer in ["10^{10^{10}}", "9^9^9^9", "e^{10^{6}}", "2^{2^{40}}", "10^{-10^{10}}", "e^{-10^{6}}"] {
        for gold in ["0", "\\infty", "-\\infty"] {
            let (score, _) = timed(&format!("\\boxed{{{answer}}}"), gold);
            assert!(matches!(score, Score::Reward { reward } if reward == 0.0), "{answer} against {gold}: {score:?}");
        }
    }
}
