//! The custom checker registered by name, alone and in a weighted combination.

use aha_example_custom_checker::registry;
use aha_rewards::{CheckError, Checker, ConfigError, MeanTracker, ProblemFields, RewardConfig};
use serde_json::{json, Value};

fn sample(v: Value) -> ProblemFields {
    v.as_object().unwrap().clone()
}

#[test]
fn registered_by_name_next_to_the_builtins() {
    let registry = registry();
    assert!(registry.names().contains(&"keywords".to_string()));
    assert!(registry.names().contains(&"math".to_string()));
    let checker = registry.build("keywords", &Value::Null).unwrap();
    let s = sample(json!({ "keywords": ["wait", "verify", "check", "answer"] }));
    let verdict = checker.check("Wait, let me CHECK that.", &s).unwrap();
    assert_eq!(verdict.reward_value(), Some(0.5));
    assert_eq!(verdict.detail["found"], json!(["wait", "check"]));
    // Options reach the checker; unknown options are a config error.
    let checker = registry.build("keywords", &json!({ "min_chars": 10 })).unwrap();
    assert!(checker.check("anything", &s).unwrap().is_skip());
    assert!(matches!(registry.build("keywords", &json!({ "minchars": 1 })), Err(ConfigError::BadOptions { .. })));
    // A missing field is the caller's error, named.
    let err = registry.build("keywords", &Value::Null).unwrap().check("x", &sample(json!({}))).unwrap_err();
    assert_eq!(err, CheckError::MissingField { field: "keywords".into() });
}

#[test]
fn used_in_a_weighted_combination_from_a_config() {
    let config: RewardConfig = serde_json::from_value(json!({ "checkers": [
        { "name": "math", "weight": 1.0 },
        { "name": "keywords", "weight": 0.5 },
    ]}))
    .unwrap();
    let combined = registry().build_combined(&config).unwrap();
    assert_eq!(combined.labels(), vec!["math", "keywords"]);
    assert_eq!(combined.required_fields(), vec!["answer".to_string(), "keywords".to_string()]);
    let s = sample(json!({ "answer": "12", "keywords": ["verify"] }));
    let mut means = MeanTracker::new();
    for (completion, expected) in
        [("Let me verify: \\boxed{12}", 1.5), ("\\boxed{12}", 1.0), ("verify... \\boxed{13}", 0.5), ("no idea", 0.0)]
    {
        let breakdown = combined.breakdown(completion, &s).unwrap();
        assert_eq!(breakdown.total, Some(expected), "{completion}");
        means.add_breakdown(&breakdown);
        assert_eq!(combined.check(completion, &s).unwrap().reward_value(), Some(expected));
    }
    assert_eq!(means.means()["keywords"], 0.5);
    assert_eq!(means.means()["math"], 0.5);
    assert_eq!(means.means()["total"], 0.75);
}
