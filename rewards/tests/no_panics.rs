//! Property tests: no checker panics, whatever the completion or the gold answer.

use aha_rewards::{Checker, ProblemFields, Registry};
use proptest::prelude::*;
use serde_json::json;

/// Every built-in checker that runs in-process. The sandboxed ones (`code`, and the plug-in hosts
/// `python` and `wasi`, which need options) run programs: tests/code.rs and tests/plugins.rs cover
/// them, and `code`'s extraction is fuzzed below.
fn all_checkers() -> Vec<Box<dyn Checker>> {
    let registry = Registry::with_builtins();
    let sandboxed = ["code", "python", "wasi"];
    registry
        .names()
        .iter()
        .filter(|n| !sandboxed.contains(&n.as_str()))
        .map(|n| registry.build(n, &serde_json::Value::Null).unwrap())
        .collect()
}

/// Strings made of the characters that matter to the parsers.
fn mathy() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "\\boxed{",
        "\\frac",
        "{",
        "}",
        "(",
        ")",
        "[",
        "]",
        "\\{",
        "\\}",
        "^",
        "_",
        "\\sqrt",
        "[3]",
        "1",
        "23",
        "0.5",
        ".",
        ",",
        "x",
        "y",
        "e",
        "i",
        "\\pi",
        "+",
        "-",
        "*",
        "/",
        "=",
        "<",
        "\\le",
        "\\pm",
        "\\cup",
        "|",
        "!",
        "\\infty",
        "\\text{cm}",
        "\\left(",
        "\\right)",
        "\\sin",
        "\\log_",
        "<answer>",
        "</answer>",
        "<think>",
        "</think>",
        "answer is",
        " ",
        "\\begin{pmatrix}",
        "&",
        "\\\\",
        "\\end{pmatrix}",
        "%",
        "$",
        "\\",
        "°",
        "é",
        "\u{0}",
        "(A)",
        "or",
        "\\binom",
        "99999999999999999999",
        // the prose sources: math environments, scientific notation, bold, currency
        "e3",
        "E-7",
        "\\(",
        "\\)",
        "\\[",
        "\\]",
        "$$",
        "\\$",
        "**",
        ".4",
        "1,000",
        "answer:",
        "AZ",
        "\n",
        "−",
        "€",
    ]);
    prop::collection::vec(pieces, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn no_checker_panics_on_arbitrary_text(completion in any::<String>(), gold in any::<String>()) {
        let sample: ProblemFields = json!({ "answer": gold, "target": 24, "numbers": [1, 2, 3, 4],
                                     "completion_tokens": 7 }).as_object().unwrap().clone();
        for checker in all_checkers() {
            let verdict = checker.check(&completion, &sample).unwrap();
            if let Some(r) = verdict.reward_value() { prop_assert!(r.is_finite()); }
        }
    }

    #[test]
    fn no_checker_panics_on_mathy_text(completion in mathy(), gold in mathy()) {
        let sample: ProblemFields = json!({ "answer": gold, "target": 24, "numbers": [1, 2, 3, 4],
                                     "completion_tokens": 7 }).as_object().unwrap().clone();
        for checker in all_checkers() {
            let verdict = checker.check(&completion, &sample).unwrap();
            if let Some(r) = verdict.reward_value() { prop_assert!(r.is_finite()); }
            let boxed = format!("\\boxed{{{completion}}}");
            let verdict = checker.check(&boxed, &sample).unwrap();
            if let Some(r) = verdict.reward_value() { prop_assert!((-1.0..=1.0).contains(&r)); }
        }
    }

    #[test]
    fn code_extraction_never_panics(text in "(```|python|\n| |`|py|a|\t)*", other in any::<String>()) {
        for input in [text.as_str(), other.as_str()] {
            if let Some((code, _)) = aha_rewards::code::extract_code(input) {
                prop_assert!(input.contains(code));
            }
        }
    }

    #[test]
    fn an_answer_equals_itself_or_the_gold_skips(answer in mathy()) {
        let registry = Registry::with_builtins();
        let math = registry.build("math", &serde_json::Value::Null).unwrap();
        let sample: ProblemFields = json!({ "answer": answer.clone() }).as_object().unwrap().clone();
        let verdict = math.check(&format!("<answer>{answer}</answer>"), &sample).unwrap();
        // Either the gold cannot be judged, or it is judged; never a panic. When the gold parses
        // and has no answer tags or boxes of its own, the same text must score 1.
        if !verdict.is_skip() && !answer.contains("answer>") && !answer.contains("\\boxed") {
            prop_assert_eq!(verdict.reward_value(), Some(1.0), "{}", verdict.detail);
        }
    }
}
