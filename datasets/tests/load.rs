//! Loading the committed fixtures (scripts/make_dataset_fixtures.py) of each shape, malformed rows
//! included; shuffling, splits and epochs.

use std::path::{Path, PathBuf};

use aha_datasets::{Dataset, DatasetError, FieldMapping, LoadOptions, Preset, Problem, SplitSize};
use serde_json::json;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn load(name: &str, preset: Preset) -> Dataset {
    Dataset::load(&fixture(name), &LoadOptions { mapping: preset.mapping(), ..Default::default() }).unwrap()
}

fn skipped(dataset: &Dataset) -> Vec<String> {
    dataset.skipped.iter().map(|s| s.to_string().replace(&fixture("").display().to_string(), "")).collect()
}

#[test]
fn gsm8k_jsonl_extracts_answers_and_skips_bad_lines() {
    let dataset = load("gsm8k.jsonl", Preset::Gsm8k);
    let answers: Vec<_> = dataset.problems.iter().map(|p| (p.id.as_str(), p.fields["answer"].clone())).collect();
    assert_eq!(
        answers,
        [("gsm8k.jsonl:1", json!("7")), ("gsm8k.jsonl:2", json!("2500")), ("gsm8k.jsonl:5", json!("6"))]
    );
    assert_eq!(dataset.problems[0].question, "Tom has 3 apples and buys 4 more. How many apples does he have?");
    // Extra columns reach the checker; the raw solution does not.
    assert_eq!(dataset.problems[2].fields, json!({"answer": "6", "split": "test"}).as_object().unwrap().clone());
    assert_eq!(
        skipped(&dataset),
        [
            "gsm8k.jsonl:3: field `answer` has no `####` before the final answer (skipped)",
            "gsm8k.jsonl:4: missing field `question` (skipped)",
            "gsm8k.jsonl:7: not JSON (EOF while parsing a string at line 1 column 23) (skipped)",
            "gsm8k.jsonl:8: not a JSON object (got an array) (skipped)",
        ]
    );
}

#[test]
fn strict_mode_makes_the_first_bad_row_an_error() {
    let options = LoadOptions { mapping: Preset::Gsm8k.mapping(), strict: true, limit: None };
    let error = Dataset::load(&fixture("gsm8k.jsonl"), &options).unwrap_err();
    assert!(matches!(error, DatasetError::Row { .. }));
    let message = error.to_string();
    assert!(message.ends_with("gsm8k.jsonl:3: field `answer` has no `####` before the final answer"), "{message}");
}

#[test]
fn math_json_array_takes_the_last_boxed_answer() {
    let dataset = load("math.json", Preset::Math);
    let answers: Vec<_> = dataset.problems.iter().map(|p| (p.id.as_str(), p.answer().unwrap())).collect();
    assert_eq!(
        answers,
        [
            ("math.json#0", "\\frac{3}{4}".to_string()),
            ("math.json#1", "\\{-1, 1\\}".to_string()),
            ("math.json#2", "1024".to_string()),
            ("math.json#4", "7".to_string()),
        ]
    );
    assert_eq!(dataset.problems[0].fields["level"], json!("Level 1"));
    assert!(!dataset.problems[0].fields.contains_key("solution"));
    assert_eq!(
        skipped(&dataset),
        [
            "math.json row 3: field `solution` has no complete \\boxed{...} (skipped)",
            "math.json row 5: not a JSON object (got a string) (skipped)",
        ]
    );
}

#[test]
fn countdown_parquet_snappy() {
    let dataset = load("countdown.parquet", Preset::Countdown);
    let fields: Vec<_> = dataset.problems.iter().map(|p| json!(p.fields)).collect();
    assert_eq!(
        fields,
        [
            json!({"target": 24, "numbers": [2, 3, 4]}),
            json!({"target": 98, "numbers": [44, 19, 35]}),
            json!({"target": 10, "numbers": [5, 5]}),
        ]
    );
    assert!(dataset.problems[1]
        .question
        .starts_with("Using the numbers [44, 19, 35], create an equation that equals 98."));
    assert_eq!(skipped(&dataset), ["countdown.parquet row 2: missing field `target` (skipped)"]);
}

#[test]
fn gsm8k_parquet_gzip_and_lz4_read_like_the_jsonl() {
    let jsonl: Vec<_> =
        load("gsm8k.jsonl", Preset::Gsm8k).problems.into_iter().map(|p| (p.answer(), p.question)).collect();
    for name in ["gsm8k.gzip.parquet", "gsm8k.lz4.parquet"] {
        let dataset = load(name, Preset::Gsm8k);
        let parquet: Vec<_> = dataset.problems.into_iter().map(|p| (p.answer(), p.question)).collect();
        assert_eq!(parquet, jsonl, "{name}");
        assert_eq!(dataset.skipped.len(), 2, "{name}");
    }
}

#[test]
fn code_rows_need_tests_or_asserts() {
    let dataset = load("code.jsonl", Preset::Code);
    assert_eq!(dataset.problems.len(), 3);
    assert_eq!(dataset.problems[0].fields["tests"][1], json!({"stdin": "5 7\n", "stdout": "12\n"}));
    assert_eq!(dataset.problems[1].question, "Write a function add(a, b).");
    assert_eq!(dataset.problems[1].fields["asserts"], json!(["assert add(1, 2) == 3", "assert add(0, 0) == 0"]));
    assert_eq!(dataset.problems[2].fields["asserts"], json!("[\"assert f() == 1\"]"));
    assert_eq!(skipped(&dataset), ["code.jsonl:3: missing field `tests` or `asserts` (any of them) (skipped)"]);
}

#[test]
fn custom_mapping_from_toml() {
    let mapping: FieldMapping = toml::from_str(
        r#"
        question = ["question"]
        answer = [{ column = "answer", format = "gsm8k" }]
        fields = { tag = ["split"] }
        keep_other_columns = false
        required = [["answer"], ["tag"]]
        "#,
    )
    .unwrap();
    let dataset = Dataset::load(&fixture("gsm8k.jsonl"), &LoadOptions { mapping, ..Default::default() }).unwrap();
    assert_eq!(dataset.problems.len(), 1);
    assert_eq!(dataset.problems[0].fields, json!({"answer": "6", "tag": "test"}).as_object().unwrap().clone());
}

#[test]
fn limit_stops_early() {
    let options = LoadOptions { mapping: Preset::Gsm8k.mapping(), limit: Some(2), ..Default::default() };
    let dataset = Dataset::load(&fixture("gsm8k.jsonl"), &options).unwrap();
    assert_eq!(dataset.problems.len(), 2);
    assert!(dataset.skipped.is_empty());
}

#[test]
fn unreadable_files_are_one_line_errors() {
    let options = LoadOptions::default();
    let not_parquet = Dataset::load(&fixture("not_parquet.parquet"), &options).unwrap_err().to_string();
    assert!(not_parquet.contains("not_parquet.parquet: not Parquet"), "{not_parquet}");
    let missing = Dataset::load(&fixture("missing.jsonl"), &options).unwrap_err().to_string();
    assert!(missing.contains("missing.jsonl: No such file"), "{missing}");
    let unknown = Dataset::load(&fixture("data.csv"), &options).unwrap_err().to_string();
    assert!(unknown.ends_with("data.csv: unknown file type (expected .jsonl, .json or .parquet)"), "{unknown}");
    for error in [not_parquet, missing, unknown] {
        assert!(!error.contains('\n'), "{error}");
    }
}

fn numbered(n: usize) -> Dataset {
    Dataset::from_problems(
        (0..n).map(|i| Problem { id: i.to_string(), question: format!("q{i}"), fields: Default::default() }).collect(),
    )
}

fn ids<'a>(problems: impl IntoIterator<Item = &'a Problem>) -> Vec<String> {
    problems.into_iter().map(|p| p.id.clone()).collect()
}

#[test]
fn shuffle_is_deterministic_per_seed() {
    let (mut a, mut b, mut c) = (numbered(20), numbered(20), numbered(20));
    a.shuffle(7);
    b.shuffle(7);
    c.shuffle(8);
    assert_eq!(ids(&a.problems), ids(&b.problems));
    assert_ne!(ids(&a.problems), ids(&c.problems));
    assert_ne!(ids(&a.problems), ids(&numbered(20).problems));
}

#[test]
fn split_is_deterministic_disjoint_and_ordered() {
    let (train, eval) = numbered(10).split(SplitSize::Fraction(0.3), 1).unwrap();
    let (train2, eval2) = numbered(10).split(SplitSize::Count(3), 1).unwrap();
    assert_eq!((ids(&train.problems), ids(&eval.problems)), (ids(&train2.problems), ids(&eval2.problems)));
    assert_eq!((train.len(), eval.len()), (7, 3));
    let mut all: Vec<usize> =
        ids(train.problems.iter().chain(&eval.problems)).iter().map(|i| i.parse().unwrap()).collect();
    let eval_ids: Vec<usize> = ids(&eval.problems).iter().map(|i| i.parse().unwrap()).collect();
    assert!(eval_ids.windows(2).all(|w| w[0] < w[1]), "eval keeps file order: {eval_ids:?}");
    all.sort();
    assert_eq!(all, (0..10).collect::<Vec<_>>());
    let (_, other) = numbered(10).split(SplitSize::Count(3), 2).unwrap();
    assert_ne!(ids(&other.problems), ids(&eval.problems));
    assert!(numbered(3).split(SplitSize::Count(4), 0).is_err());
    assert!(numbered(3).split(SplitSize::Fraction(1.5), 0).is_err());
}

#[test]
fn epochs_cover_every_problem_once_per_epoch_in_a_new_order() {
    let dataset = numbered(6);
    let seen: Vec<(u64, String)> = dataset.epochs(3).take(18).map(|(e, p)| (e, p.id.clone())).collect();
    let epoch = |e: u64| -> Vec<String> { seen.iter().filter(|(x, _)| *x == e).map(|(_, id)| id.clone()).collect() };
    for e in 0..3 {
        let mut ids = epoch(e);
        assert_eq!(ids.len(), 6);
        ids.sort();
        assert_eq!(ids, ["0", "1", "2", "3", "4", "5"]);
    }
    assert_ne!(epoch(0), epoch(1));
    let again: Vec<(u64, String)> = dataset.epochs(3).take(18).map(|(e, p)| (e, p.id.clone())).collect();
    assert_eq!(seen, again);
    assert_eq!(Dataset::default().epochs(0).next(), None);
}
