//! Cases from Math-Verify's own test suite (`tests/fixtures/math_verify_cases.jsonl`, produced by
//! `tests/fixtures/make_math_verify_cases.py`). Each prediction is scored twice: as the content of
//! an `<answer>` tag, and bare, as a whole completion (the extraction order at work). We agree
//! with Math-Verify on all of them except the few listed in [`KNOWN_DIFFERENCES`], each with the
//! reason, the same in both ways but for [`KNOWN_IN_TAGS_ONLY`]; the test fails if that list changes either way.

use aha_rewards::math::{MathChecker, MathOptions, Source};
use aha_rewards::Score;

/// (gold, pred, why we differ from Math-Verify's expected verdict)
const KNOWN_DIFFERENCES: &[(&str, &str, &str)] = &[
    // Math-Verify rejects inline math that spans lines and then finds nothing; we read the 9
    // (inside an answer tag: the tag's content; bare: a plain number, as no math encloses it).
    ("$9$", "Answer $ \n 9 \n $", "we accept multi-line inline math"),
    ("$9$", "Answer \\( \n 9 \n \\)", "we accept multi-line inline math"),
];

/// Differences only when the prediction is the content of an answer tag: a tag holding a sentence
/// that parses is its answer (`Soucis : 2,74 $ a..` reads as 2.74·a); bare, the last number is
/// read (2,74 with a decimal comma, as Math-Verify).
const KNOWN_IN_TAGS_ONLY: &[(&str, &str, &str)] = &[("2.74", "Soucis : 2,74 $ a..", "the tag's sentence parses")];

/// The cases where our verdict differs from Math-Verify's, with the checker's detail.
fn differences(wrap: impl Fn(&str) -> String) -> (usize, Vec<(String, String, String)>) {
    let text = include_str!("fixtures/math_verify_cases.jsonl");
    let checker = MathChecker::default();
    let mut differences = Vec::new();
    let mut total = 0;
    for line in text.lines() {
        let case: serde_json::Value = serde_json::from_str(line).unwrap();
        let gold = case["gold"].as_str().unwrap();
        let pred = case["pred"].as_str().unwrap();
        let expected = case["expected"].as_i64().unwrap() == 1;
        let verdict = checker.verdict(&wrap(pred), gold);
        let got = matches!(verdict.score, Score::Reward { reward } if reward == 1.0);
        total += 1;
        if got != expected {
            differences.push((gold.to_string(), pred.to_string(), format!("{}", verdict.detail)));
        }
    }
    (total, differences)
}

fn assert_only_known_differences(
    total: usize,
    differences: &[(String, String, String)],
    only_here: &[(&str, &str, &str)],
) {
    assert!(total >= 100, "only {total} cases");
    let known: Vec<&(&str, &str, &str)> = KNOWN_DIFFERENCES.iter().chain(only_here).collect();
    let unexpected: Vec<_> =
        differences.iter().filter(|(g, p, _)| !known.iter().any(|(kg, kp, _)| kg == g && kp == p)).collect();
    let fixed: Vec<_> =
        known.iter().filter(|(kg, kp, _)| !differences.iter().any(|(g, p, _)| kg == g && kp == p)).collect();
    assert!(
        unexpected.is_empty() && fixed.is_empty(),
        "{} of {total} differ from Math-Verify; not in the known list:\n{}\nlisted but now agreeing: {fixed:?}",
        differences.len(),
        unexpected.iter().map(|(g, p, d)| format!("    ({g:?}, {p:?}, \"\"), // {d}")).collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn agrees_with_math_verify_test_suite_in_answer_tags() {
    let (total, differences) = differences(|pred| format!("<answer>{pred}</answer>"));
    assert_only_known_differences(total, &differences, KNOWN_IN_TAGS_ONLY);
}

/// Bare predictions: every source of the extraction order, not only the answer tag.
#[test]
fn agrees_with_math_verify_test_suite_on_bare_predictions() {
    let (total, differences) = differences(|pred| pred.to_string());
    assert_only_known_differences(total, &differences, &[]);
}

/// Cases of Math-Verify 0.9.0's whole test suite on which we agree with it, out of 275: every
/// parametrised (gold, pred, expected) case of its tests directory
/// (`fixtures/math_verify_suite_all.jsonl`, from `fixtures/make_math_verify_suite_all.py`),
/// predictions scored bare, golds as the checker reads them, each case under the options that
/// say what its Math-Verify test configured (see [`options_of`]). The number may only grow; the
/// test prints every disagreement with the checker's detail.
const WHOLE_SUITE_AGREEMENT: usize = 273;

/// Our options for what a Math-Verify test configures: its extraction targets (`match_types`:
/// `latex` reads tags, boxes, "final answer" phrases and LaTeX math; `expr` "final answer"
/// phrases and plain numbers), `allow_set_relation_comp` (default false) and `strict = false`.
/// Its `precision` (decimal places for floats, 6 by default) has no counterpart: our tolerance
/// stays 1e-6 relative.
fn options_of(case: &serde_json::Value) -> MathOptions {
    let match_types: Vec<&str> = match case["match_types"].as_array() {
        Some(types) => types.iter().filter_map(|t| t.as_str()).collect(),
        None => vec!["latex", "expr"],
    };
    let latex = match_types.contains(&"latex");
    let expr = match_types.contains(&"expr");
    let sources = [
        (Source::AnswerTag, latex),
        (Source::Boxed, latex),
        (Source::FinalAnswer, true),
        (Source::LatexMath, latex),
        (Source::LastNumber, expr),
    ];
    let params = &case["params"];
    MathOptions {
        sources: sources.iter().filter(|(_, on)| *on).map(|(source, _)| *source).collect(),
        relation_matches_set: params["allow_set_relation_comp"].as_bool().unwrap_or(false),
        rename_variables: params["strict"].as_bool() == Some(false),
        ..MathOptions::default()
    }
}

#[test]
fn agreement_on_math_verify_whole_suite_does_not_drop() {
    let text = include_str!("fixtures/math_verify_suite_all.jsonl");
    let (mut agree, mut total) = (0, 0);
    for (index, line) in text.lines().enumerate() {
        let case: serde_json::Value = serde_json::from_str(line).unwrap();
        let gold = case["gold"].as_str().unwrap();
        let pred = case["pred"].as_str().unwrap();
        let expected = case["expected"].as_i64().unwrap() == 1;
        let verdict = MathChecker::new(options_of(&case)).verdict(pred, gold);
        let got = matches!(verdict.score, Score::Reward { reward } if reward == 1.0);
        total += 1;
        if got == expected {
            agree += 1;
        } else {
            let clip = |s: &str| s.chars().take(160).collect::<String>();
            println!(
                "differs (line {}, {}): gold {:?} pred {:?}: {}",
                index + 1,
                case["test"],
                clip(gold),
                clip(pred),
                verdict.detail
            );
        }
    }
    println!("agreement with Math-Verify's whole suite: {agree} of {total}");
    assert_eq!(total, 275, "the fixture changed: regenerate it and update this test");
    assert!(agree >= WHOLE_SUITE_AGREEMENT, "agreement dropped to {agree} of {total} (was {WHOLE_SUITE_AGREEMENT})");
}
