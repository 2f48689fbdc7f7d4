//! countdown (one case per trap), format, format_tags, length, the registry and combinations.

use aha_rewards::countdown::{CountdownChecker, CountdownOptions};
use aha_rewards::length::{LengthChecker, LengthOptions};
use aha_rewards::{
    CheckError, Checker, ConfigError, MeanTracker, ProblemFields, Registry, RewardConfig, Score, Verdict,
};
use serde_json::{json, Value};

fn sample(v: Value) -> ProblemFields {
    v.as_object().unwrap().clone()
}

fn countdown(answer: &str) -> f64 {
    let checker = CountdownChecker::default();
    let s = sample(json!({ "target": 24, "numbers": [4, 6, 8, 2] }));
    checker.check(&format!("<think>hmm</think>\n<answer>{answer}</answer>"), &s).unwrap().reward_value().unwrap()
}

#[test]
fn countdown_rules_and_traps() {
    let cases: &[(&str, f64, &str)] = &[
        ("(8 - 6) * 4 * 2 + 0", 0.1, "a number not in the list"),
        ("(8 - 6) * 4 * 2", 0.1, "not all numbers used... and 16 != 24"),
        ("4 * 6 * (8 - 2) / 6", 0.1, "6 used twice"),
        ("8 * (6 - 4) + 2 * 4", 0.1, "4 used twice, 6 missing... (wrong multiset)"),
        ("4 * 6 + 8 - 2 * 4", 0.1, "extra number"),
        ("(6 - 2) * 8 - 4", 0.1, "28 != 24"),
        ("4 * 6 * (8 / 8)", 0.1, "8 used twice, 2 missing"),
        ("6 * 4 + 8 - 8", 0.1, "wrong numbers"),
        ("(8 + 4) * (6 / 2) - 12", 0.1, "12 not given"),
        ("8 * 6 / 2 - 4 * 0", 0.1, "0 not given"),
        ("6 / (2 - 8 / 4)", 0.1, "division by zero"),
        ("4 ^ 2 + 8 * 6 / 2", 0.1, "^ is not allowed"),
        ("4 ** 2 + 8 - 2 + 6", 0.1, "** is not allowed"),
        ("4 * 6 + 8 - 8 // 2", 0.1, "// comment trick"),
        ("4 * 6 /* 8 2 */", 0.1, "/* comment trick"),
        ("-4 + 6 * 8 / 2", 0.1, "unary minus"),
        ("+4 * 6 + 8 - 2 - 6", 0.1, "unary plus"),
        ("4 * 6 + (8 - 2) * 0", 0.1, "zero trick"),
        ("46 - 8 * 2 - 6", 0.1, "concatenated digits"),
        ("4.0 * 6 + 8 - 8", 0.1, "decimal"),
        ("4(6) + 8 - 8", 0.1, "implicit product"),
        ("4 * 6 + 8 - 2 = 24", 0.1, "= is not allowed"),
        ("04 * 6 + 8 - 8", 0.1, "leading zero"),
        ("((4 * 6) + (8 - 2)", 0.1, "unbalanced"),
        ("", 0.1, "empty"),
        ("four times six", 0.1, "words"),
        // correct ones, exact rationals: 8 / (2 - 4/6)...
        ("4 * 6 * (8 - 2 - 6 + 1)", 0.1, "1 not given"),
        ("(8 - 4) * 6 * 2 / 2", 0.1, "2 used twice"),
        ("(8 / 2 - 4 + 6) * 4", 0.1, "4 used twice"),
        ("(8 - 6 + 2) * 4", 0.1, "16"),
        ("4 * (6 + 8) / 2 - 4", 0.1, "4 twice"),
        ("(6 - 4) * 8 + 2", 0.1, "18"),
        ("(8 - 4 - 2) * 6 * 2", 0.1, "2 twice"),
        ("6 * 8 / 2 * 4 / 4", 0.1, "4 twice"),
        ("(8 * 2 - 4) * 6 / 3", 0.1, "3 not given"),
        ("4 * 6 - 8 + 8", 0.1, "8 twice"),
        ("(8 - 2) * 4 * 6 / 6", 0.1, "6 twice"),
        ("8 * 2 + 6 + 4 - 2", 0.1, "2 twice"),
        ("8 * 2 + 6 - 4 + 6", 0.1, "6 twice"),
        ("6 * 4 * (8 / 2 - 3)", 0.1, "3 not given"),
        ("2 * 8 + 6 + 4", 0.1, "26"),
        ("8 * 2 + 4 + 6", 0.1, "26"),
        ("(6 + 2) * 4 - 8", 1.0, "correct"),
        ("8 * (6 - 4) + 2 * 4", 0.1, "4 twice"),
        ("((6 + 2) * 4) - 8", 1.0, "redundant parentheses are fine"),
        ("(6+2)*4-8", 1.0, "no spaces"),
        ("(6 × 2) + 8 + 4", 1.0, "× is accepted as *"),
        ("6 × 2 + 8 - 4", 0.1, "16: × accepted, value wrong"),
        ("6 ÷ 2 × 8", 0.1, "4 missing"),
        ("(8 - 2) ÷ 6 + 4", 0.1, "5"),
        ("8 / (2 / 6) - 4 + 4", 0.1, "4 twice"),
        ("6 * 8 / (4 / 2)", 1.0, "correct"),
        ("4 / (2 / (8 - 6)) * 6", 0.1, "6 used twice"),
        ("6 / (2 / 8) * 4 / 4", 0.1, "4 twice"),
    ];
    let mut failures = vec![];
    for (answer, expected, why) in cases {
        let got = countdown(answer);
        if (got - expected).abs() > 1e-12 {
            failures.push(format!("{answer:?} ({why}): expected {expected}, got {got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn countdown_division_is_exact_not_truncating() {
    let checker = CountdownChecker::default();
    // 7 / 2 * 2 = 7 exactly (truncating division would give 6).
    let s = sample(json!({ "target": 7, "numbers": [7, 2, 2] }));
    assert_eq!(checker.check("<answer>7 / 2 * 2</answer>", &s).unwrap().reward_value(), Some(1.0));
    let s = sample(json!({ "target": 6, "numbers": [7, 2, 2] }));
    assert_eq!(checker.check("<answer>7 / 2 * 2</answer>", &s).unwrap().reward_value(), Some(0.1));
    // A fraction that is only an intermediate value: 1 / 3 * 3 * 8 = 8.
    let s = sample(json!({ "target": 8, "numbers": [1, 3, 3, 8] }));
    assert_eq!(checker.check("<answer>1 / 3 * 3 * 8</answer>", &s).unwrap().reward_value(), Some(1.0));
}

#[test]
fn countdown_no_answer_and_options() {
    let checker = CountdownChecker::default();
    let s = sample(json!({ "target": 24, "numbers": [4, 6, 8, 2] }));
    assert_eq!(checker.check("(6 + 2) * 4 - 8", &s).unwrap().reward_value(), Some(0.0));
    assert_eq!(checker.check("<answer>(6 + 2) * 4 - 8", &s).unwrap().reward_value(), Some(0.0));
    // The last answer counts.
    let two = "<answer>(6 + 2) * 4 - 8</answer> no wait <answer>6 * 4</answer>";
    assert_eq!(checker.check(two, &s).unwrap().reward_value(), Some(0.1));
    let custom = CountdownChecker::new(CountdownOptions { format_score: 0.0, score: 2.0 });
    assert_eq!(custom.check("<answer>6 * 4</answer>", &s).unwrap().reward_value(), Some(0.0));
    assert_eq!(custom.check("<answer>(6 + 2) * 4 - 8</answer>", &s).unwrap().reward_value(), Some(2.0));
    // Numbers given as strings work; a missing field is an error naming it.
    let s2 = sample(json!({ "target": "24", "numbers": ["4", "6", "8", "2"] }));
    assert_eq!(checker.check("<answer>(6 + 2) * 4 - 8</answer>", &s2).unwrap().reward_value(), Some(1.0));
    let err = checker.check("<answer>1</answer>", &sample(json!({ "target": 24 }))).unwrap_err();
    assert_eq!(err, CheckError::MissingField { field: "numbers".into() });
    let err = checker.check("<answer>1</answer>", &sample(json!({ "target": 2.5, "numbers": [1] }))).unwrap_err();
    assert_eq!(err.field(), "target");
    let v = checker.check("<answer>6 / (2 - 8 / 4)</answer>", &s).unwrap();
    assert_eq!(v.detail["why"], json!("division by zero"));
}

#[test]
fn format_r1_template() {
    let registry = Registry::with_builtins();
    let format = registry.build("format", &Value::Null).unwrap();
    let s = ProblemFields::new();
    let r = |c: &str| format.check(c, &s).unwrap().reward_value().unwrap();
    assert_eq!(r("<think>a\nb</think>\n<answer>5</answer>"), 1.0);
    assert_eq!(r("  <think>a</think><answer>5</answer>\n"), 1.0);
    assert_eq!(r("<answer>5</answer>"), 0.0);
    assert_eq!(r("<think>a</think>"), 0.0);
    assert_eq!(r("<answer>5</answer><think>a</think>"), 0.0);
    assert_eq!(r("<think>a</think><answer>5</answer> trailing text"), 0.0);
    let custom = registry.build("format", &json!({ "pattern": r"(?s)^.*</think>\s*<answer>.*</answer>$" })).unwrap();
    assert_eq!(custom.check("a</think><answer>5</answer>", &s).unwrap().reward_value(), Some(1.0));
    assert!(matches!(registry.build("format", &json!({ "pattern": "(" })), Err(ConfigError::BadOptions { .. })));
    assert!(matches!(registry.build("format", &json!({ "patern": "x" })), Err(ConfigError::BadOptions { .. })));
}

#[test]
fn format_tag_count_partial_credit() {
    let registry = Registry::with_builtins();
    let tags = registry.build("format_tags", &Value::Null).unwrap();
    let s = ProblemFields::new();
    let r = |c: &str| tags.check(c, &s).unwrap().reward_value().unwrap();
    assert_eq!(r("<think>a</think><answer>5</answer>"), 1.0);
    assert_eq!(r("<think>a</think>"), 0.5);
    assert_eq!(r("<think>a</think> <answer>5"), 0.75);
    assert_eq!(r("<think><think>a</think><answer>5</answer>"), 0.75);
    assert_eq!(r("nothing"), 0.0);
    let v = tags.check("<think>a</think>", &s).unwrap();
    assert_eq!(v.detail["counts"]["<think>"], json!(1));
    assert_eq!(v.detail["counts"]["<answer>"], json!(0));
}

#[test]
fn length_is_dapo_soft_overlong_penalty() {
    let checker =
        LengthChecker::new(LengthOptions { max_tokens: 100, cache_tokens: 20, ..LengthOptions::default() }).unwrap();
    for (len, expected) in [(0, 0.0), (80, 0.0), (81, -0.05), (90, -0.5), (100, -1.0), (101, -1.0), (10_000, -1.0)] {
        assert!((checker.penalty(len) - expected).abs() < 1e-12, "len {len}: {}", checker.penalty(len));
        let s = sample(json!({ "completion_tokens": len }));
        assert_eq!(checker.check("", &s).unwrap().reward_value(), Some(checker.penalty(len)));
    }
    assert_eq!(checker.check("", &ProblemFields::new()).unwrap_err().field(), "completion_tokens");
    assert!(checker.check("", &sample(json!({ "completion_tokens": -3 }))).is_err());
    assert!(LengthChecker::new(LengthOptions { max_tokens: 10, cache_tokens: 20, ..LengthOptions::default() }).is_err());
    assert!(LengthChecker::new(LengthOptions { max_tokens: 10, cache_tokens: 0, ..LengthOptions::default() }).is_err());
}

/// A checker defined outside the crate, registered by name.
struct ContainsChecker;

impl Checker for ContainsChecker {
    fn name(&self) -> &str {
        "contains"
    }
    fn required_fields(&self) -> Vec<String> {
        vec!["needle".into()]
    }
    fn check(&self, completion: &str, sample: &ProblemFields) -> Result<Verdict, CheckError> {
        let needle = aha_rewards::field(sample, "needle")?.as_str().unwrap_or_default();
        let hit = completion.contains(needle);
        Ok(Verdict::reward(if hit { 1.0 } else { 0.0 }, json!({ "hit": hit })))
    }
}

#[test]
fn registry_weighted_combination_and_means() {
    let mut registry = Registry::with_builtins();
    registry.register("contains", |_| Ok(Box::new(ContainsChecker)));
    assert!(registry.names().contains(&"contains".to_string()));
    assert!(matches!(registry.build("nope", &Value::Null), Err(ConfigError::UnknownChecker { .. })));
    let config: RewardConfig = serde_json::from_value(json!({ "checkers": [
        { "name": "math", "weight": 1.0 },
        { "name": "format", "weight": 0.5 },
        { "name": "contains", "weight": 0.25, "label": "mentions_wait" },
    ]}))
    .unwrap();
    let combined = registry.build_combined(&config).unwrap();
    assert_eq!(combined.labels(), ["math", "format", "mentions_wait"]);
    assert_eq!(combined.required_fields(), ["answer", "needle"]);
    let s = sample(json!({ "answer": "4", "needle": "wait" }));
    let v = combined.check("<think>wait</think><answer>4</answer>", &s).unwrap();
    assert_eq!(v.reward_value(), Some(1.75));
    assert_eq!(v.detail["parts"]["math"]["reward"], json!(1.0));
    assert_eq!(v.detail["parts"]["format"]["weight"], json!(0.5));
    let v2 = combined.check("<answer>5</answer>", &s).unwrap();
    assert_eq!(v2.reward_value(), Some(0.0));
    // A gold that does not parse makes the whole combination skip.
    let bad = sample(json!({ "answer": "\\frac{1}{0}", "needle": "x" }));
    let v3 = combined.check("<answer>5</answer>", &bad).unwrap();
    assert!(matches!(v3.score, Score::Skip { .. }));
    assert_eq!(v3.detail["parts"]["math"]["status"], json!("skip"));

    let mut means = MeanTracker::new();
    for (completion, smp) in [("<think>wait</think><answer>4</answer>", &s), ("<answer>5</answer>", &s), ("x", &bad)] {
        means.add_breakdown(&combined.breakdown(completion, smp).unwrap());
    }
    let m = means.means();
    assert_eq!(m["math"], 0.5);
    assert_eq!(m["format"], (1.0 + 0.0 + 0.0) / 3.0);
    assert_eq!(m["total"], (1.75 + 0.0) / 2.0);
    assert_eq!(means.get("math").unwrap().skipped, 1);
    assert!(matches!(registry.build_combined(&RewardConfig { checkers: vec![] }), Err(ConfigError::Empty)));
    // Missing field errors name the field.
    let err = combined.check("x", &sample(json!({ "answer": "1" }))).unwrap_err();
    assert_eq!(err.field(), "needle");
}

#[test]
fn verdict_serialises_flat() {
    let v = Verdict::reward(1.0, json!({ "x": 1 }));
    assert_eq!(serde_json::to_value(&v).unwrap(), json!({ "status": "reward", "reward": 1.0, "detail": { "x": 1 } }));
    let v = Verdict::skip("bad gold", json!(null));
    assert_eq!(serde_json::to_value(&v).unwrap(), json!({ "status": "skip", "reason": "bad gold", "detail": null }));
}
