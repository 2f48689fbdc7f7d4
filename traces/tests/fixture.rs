//! Every query of the trace store on the committed fixture (`tests/fixtures/traces/`), whose
//! rows are known one by one (see `make_fixture.rs` there): each filter returns exactly the
//! completions it should, in order.
//!
//! Rewrite the fixture after a schema change with
//!   AHA_WRITE_TRACE_FIXTURE=1 cargo test -p aha-traces --test fixture committed_fixture

#[path = "../../tests/fixtures/traces/make_fixture.rs"]
mod make_fixture;

use std::path::{Path, PathBuf};

use aha_traces::{CompletionRow, TraceFilter, TraceReader, REFLECTION_PHRASES, SCHEMA_VERSION};
use regex::{Regex, RegexBuilder};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/traces/traces.sqlite")
}

fn reader() -> TraceReader {
    TraceReader::open(&fixture()).unwrap()
}

/// (step, prompt id, sample index) of each row: what identifies a completion.
fn ids(rows: &[CompletionRow]) -> Vec<(u64, &str, u32)> {
    rows.iter().map(|r| (r.step, r.prompt_id.as_str(), r.sample_index)).collect()
}

fn query(filter: TraceFilter) -> Vec<(u64, String, u32)> {
    reader().query(&filter).unwrap().iter().map(|r| (r.step, r.prompt_id.clone(), r.sample_index)).collect()
}

fn owned(ids: &[(u64, &str, u32)]) -> Vec<(u64, String, u32)> {
    ids.iter().map(|&(s, p, j)| (s, p.to_string(), j)).collect()
}

/// Every table of a store, as text: its schema (tables and indexes), version, and rows.
fn dump(path: &Path) -> String {
    let connection = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut out = String::new();
    let version: i64 = connection.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    out.push_str(&format!("user_version {version}\n"));
    let mut schema = connection.prepare("SELECT type, name, sql FROM sqlite_master ORDER BY type, name").unwrap();
    for row in schema
        .query_map([], |r| {
            Ok(format!("{:?}", (r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?)))
        })
        .unwrap()
    {
        out.push_str(&row.unwrap());
        out.push('\n');
    }
    for table in ["groups", "completions"] {
        let mut rows = connection.prepare(&format!("SELECT * FROM {table} ORDER BY id")).unwrap();
        let columns = rows.column_count();
        let mut rows = rows.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            let values: Vec<rusqlite::types::Value> = (0..columns).map(|i| row.get(i).unwrap()).collect();
            out.push_str(&format!("{table} {values:?}\n"));
        }
    }
    out
}

#[test]
fn the_committed_fixture_is_what_the_helper_writes_with_this_schema() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("traces.sqlite");
    make_fixture::write(&fresh);
    if std::env::var_os("AHA_WRITE_TRACE_FIXTURE").is_some() {
        std::fs::copy(&fresh, fixture()).unwrap();
    }
    let committed = dump(&fixture());
    assert!(committed.starts_with(&format!("user_version {SCHEMA_VERSION}\n")), "{committed}");
    assert_eq!(
        committed,
        dump(&fresh),
        "tests/fixtures/traces/traces.sqlite is not what this version writes (a schema change?): \
         rewrite it with AHA_WRITE_TRACE_FIXTURE=1 cargo test -p aha-traces --test fixture committed_fixture"
    );
    // One self-contained file, small, that reading leaves alone (no -wal / -shm beside it).
    let size = std::fs::metadata(fixture()).unwrap().len();
    assert!(size < 64 * 1024, "{size} bytes");
    let journal: String = rusqlite::Connection::open_with_flags(fixture(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap()
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "delete");
}

#[test]
fn a_store_of_another_schema_version_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.sqlite");
    std::fs::copy(fixture(), &path).unwrap();
    rusqlite::Connection::open(&path).unwrap().pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
    let error = TraceReader::open(&path).err().expect("refused").to_string();
    assert!(
        error.contains("traces.sqlite") && error.contains(&format!("schema version {}", SCHEMA_VERSION + 1)),
        "{error}"
    );
}

#[test]
fn steps_summarise_each_step() {
    let steps = reader().steps().unwrap();
    let rows: Vec<(u64, u64, u64, u64)> =
        steps.iter().map(|s| (s.step, s.groups, s.completions, s.truncated)).collect();
    assert_eq!(rows, [(1, 2, 8, 1), (2, 2, 8, 1), (3, 2, 8, 1), (4, 2, 8, 1)]);
    // Step 1: rewards 0.25 1.25 0 0 | 0.25 1.25 0 1; words 1 6 4 12 | 1 6 5 4.
    assert_eq!(steps[0].reward_mean, Some(0.5));
    assert_eq!(steps[0].tokens_mean, 39.0 / 8.0);
    // Step 4: six 1.25, one 1.0 and one unjudged completion.
    assert!((steps[3].reward_mean.unwrap() - 8.5 / 7.0).abs() < 1e-12);
}

#[test]
fn every_column_reads_back() {
    let rows = reader().completions(4).unwrap();
    assert_eq!(rows.len(), 8);
    let unjudged = &rows[7];
    assert_eq!((unjudged.prompt_id.as_str(), unjudged.sample_index, unjudged.group_index), ("p-sub", 3, 7));
    assert_eq!(unjudged.prompt, "What is 9 - 4? Answer in <answer></answer> tags.");
    assert_eq!(unjudged.sample, serde_json::json!({"answer": "5"}));
    assert_eq!(unjudged.text, "<answer>five</answer>");
    assert_eq!((unjudged.tokens, unjudged.finish_reason.as_str()), (1, "stop"));
    assert_eq!((unjudged.reward, unjudged.advantage), (None, None));
    assert_eq!(unjudged.rewards["math"], None);
    assert_eq!(unjudged.rewards["format"], Some(1.0));
    assert_eq!(unjudged.detail["math"]["extracted"], "five");
    // The group's judged mean is (1.25 + 1.25 + 1.0) / 3.
    let truncated = &rows[6];
    assert_eq!((truncated.finish_reason.as_str(), truncated.reward), ("length", Some(1.0)));
    assert!((truncated.advantage.unwrap() - (1.0 - 3.5 / 3.0)).abs() < 1e-12);
}

#[test]
fn step_ranges() {
    let two_three = query(TraceFilter { first_step: Some(2), last_step: Some(3), ..Default::default() });
    assert_eq!(two_three.len(), 16);
    assert!(two_three.windows(2).all(|w| w[0] < w[1]), "by step, group, sample: {two_three:?}");
    assert_eq!(two_three.first(), Some(&(2, "p-add".into(), 0)));
    assert_eq!(two_three.last(), Some(&(3, "p-mul".into(), 3)));
    assert_eq!(query(TraceFilter { first_step: Some(4), ..Default::default() }).len(), 8);
    assert_eq!(query(TraceFilter { last_step: Some(1), ..Default::default() }).len(), 8);
    assert!(query(TraceFilter { first_step: Some(5), ..Default::default() }).is_empty());
    assert!(query(TraceFilter { first_step: Some(3), last_step: Some(2), ..Default::default() }).is_empty());
}

#[test]
fn rewards_and_finish_reasons() {
    // 22 completions with the right number (1.0 or 1.25), 9 at 0.25 or less, one unjudged in neither.
    assert_eq!(query(TraceFilter { min_reward: Some(1.0), ..Default::default() }).len(), 22);
    assert_eq!(
        query(TraceFilter { max_reward: Some(0.25), ..Default::default() }),
        owned(&[
            (1, "p-add", 0),
            (1, "p-add", 2),
            (1, "p-add", 3),
            (1, "p-mul", 0),
            (1, "p-mul", 2),
            (2, "p-add", 2),
            (2, "p-add", 3),
            (2, "p-mul", 2),
            (3, "p-mul", 2)
        ])
    );
    // Exactly 1.0: right, but no tag.
    assert_eq!(
        query(TraceFilter { min_reward: Some(1.0), max_reward: Some(1.0), ..Default::default() }),
        owned(&[(1, "p-mul", 3), (2, "p-mul", 3), (3, "p-add", 3), (4, "p-sub", 2)])
    );
    assert_eq!(
        query(TraceFilter { finish_reason: Some("length".into()), ..Default::default() }),
        owned(&[(1, "p-add", 3), (2, "p-add", 3), (3, "p-add", 3), (4, "p-sub", 2)])
    );
    assert_eq!(query(TraceFilter { finish_reason: Some("stop".into()), ..Default::default() }).len(), 28);
}

#[test]
fn checker_verdicts() {
    let passed = |label: &str, passed: bool| {
        query(TraceFilter { checker_passed: Some((label.to_string(), passed)), ..Default::default() })
    };
    assert_eq!(passed("math", true).len(), 22);
    // The unjudged completion has no full marks: it counts among the failed.
    assert_eq!(
        passed("math", false),
        owned(&[
            (1, "p-add", 0),
            (1, "p-add", 2),
            (1, "p-add", 3),
            (1, "p-mul", 0),
            (1, "p-mul", 2),
            (2, "p-add", 2),
            (2, "p-add", 3),
            (2, "p-mul", 2),
            (3, "p-mul", 2),
            (4, "p-sub", 3)
        ])
    );
    assert_eq!(passed("format", true).len(), 24);
    assert_eq!(
        passed("format", false),
        owned(&[
            (1, "p-add", 2),
            (1, "p-add", 3),
            (1, "p-mul", 2),
            (1, "p-mul", 3),
            (2, "p-add", 3),
            (2, "p-mul", 3),
            (3, "p-add", 3),
            (4, "p-sub", 2)
        ])
    );
    // A label no checker has: nothing passed, everything failed.
    assert!(passed("code", true).is_empty());
    assert_eq!(passed("code", false).len(), 32);
    // With the other conditions: right (reward >= 1) but untagged, in steps 2..4.
    assert_eq!(
        query(TraceFilter {
            first_step: Some(2),
            min_reward: Some(1.0),
            checker_passed: Some(("format".into(), false)),
            ..Default::default()
        }),
        owned(&[(2, "p-mul", 3), (3, "p-add", 3), (4, "p-sub", 2)])
    );
}

#[test]
fn a_checker_label_that_a_json_path_cannot_quote() {
    // Labels are the user's: one with a quote or a backslash is looked up by key.
    use aha_traces::{TraceCompletion, TraceGroup, TraceWriter};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.sqlite");
    let writer = TraceWriter::open(&path, None).unwrap();
    let completion = |text: &str, reward: f64| TraceCompletion {
        text: text.into(),
        tokens: 1,
        finish_reason: "stop".into(),
        reward: Some(reward),
        rewards: [
            (r#"my "odd" \ label"#.to_string(), Some(reward)),
            ("a.b".to_string(), Some(1.0 - reward)),
            ("tab\tnew\nline".to_string(), Some(reward)),
        ]
        .into(),
        advantage: None,
        detail: serde_json::Value::Null,
    };
    writer
        .write(vec![TraceGroup {
            step: 1,
            index: 0,
            prompt_id: "q".into(),
            prompt: "?".into(),
            sample: serde_json::json!({}),
            completions: vec![completion("right", 1.0), completion("wrong", 0.0)],
        }])
        .unwrap();
    writer.close().unwrap();
    let reader = TraceReader::open(&path).unwrap();
    let texts = |label: &str, passed: bool| -> Vec<String> {
        let filter = TraceFilter { checker_passed: Some((label.into(), passed)), ..Default::default() };
        reader.query(&filter).unwrap().into_iter().map(|r| r.text).collect()
    };
    assert_eq!(texts(r#"my "odd" \ label"#, true), ["right"]);
    assert_eq!(texts(r#"my "odd" \ label"#, false), ["wrong"]);
    assert_eq!(texts("tab\tnew\nline", true), ["right"]);
    // A dot is part of a quoted key, not a path step.
    assert_eq!(texts("a.b", true), ["wrong"]);
}

#[test]
fn regular_expressions_over_the_text() {
    let grep = |re: Regex| query(TraceFilter { text: Some(re), ..Default::default() });
    let waits = owned(&[(2, "p-add", 0), (2, "p-mul", 1), (3, "p-add", 2), (4, "p-mul", 0), (4, "p-sub", 2)]);
    assert_eq!(grep(Regex::new(r"(?i)\bwait\b").unwrap()), waits);
    // Case counts unless asked otherwise, inline or through the builder.
    assert_eq!(grep(Regex::new(r"let me").unwrap()), owned(&[(2, "p-add", 0), (4, "p-mul", 0)]));
    let any_case = RegexBuilder::new(r"let me").case_insensitive(true).build().unwrap();
    assert_eq!(grep(any_case).len(), 7);
    assert_eq!(grep(Regex::new(r"(?i)let me").unwrap()).len(), 7);
    // Anywhere in the text, anchors and classes included.
    assert_eq!(grep(Regex::new(r"^<answer>\d+</answer>$").unwrap()).len(), 5);
    assert_eq!(grep(Regex::new(r"five").unwrap()), owned(&[(4, "p-sub", 3)]));
    assert!(grep(Regex::new(r"(?i)recheck").unwrap()).is_empty());
    // With every other condition, and a limit that counts matching rows only.
    assert_eq!(
        query(TraceFilter { text: Some(Regex::new(r"(?i)\bwait\b").unwrap()), limit: Some(2), ..Default::default() }),
        waits[..2]
    );
    assert_eq!(
        query(TraceFilter {
            first_step: Some(3),
            text: Some(Regex::new(r"(?i)\bwait\b").unwrap()),
            checker_passed: Some(("format".into(), false)),
            ..Default::default()
        }),
        owned(&[(4, "p-sub", 2)])
    );
    assert_eq!(
        query(TraceFilter {
            prompt_id: Some("p-mul".into()),
            text: Some(Regex::new(r"(?i)\bwait\b").unwrap()),
            ..Default::default()
        }),
        owned(&[(2, "p-mul", 1), (4, "p-mul", 0)])
    );
}

#[test]
fn prompts_and_limits() {
    assert_eq!(
        query(TraceFilter { prompt_id: Some("p-sub".into()), ..Default::default() }),
        owned(&[(4, "p-sub", 0), (4, "p-sub", 1), (4, "p-sub", 2), (4, "p-sub", 3)])
    );
    assert_eq!(query(TraceFilter { prompt_id: Some("p-mul".into()), ..Default::default() }).len(), 16);
    assert!(query(TraceFilter { prompt_id: Some("nope".into()), ..Default::default() }).is_empty());
    assert_eq!(
        query(TraceFilter {
            prompt_id: Some("p-mul".into()),
            first_step: Some(2),
            limit: Some(3),
            ..Default::default()
        }),
        owned(&[(2, "p-mul", 0), (2, "p-mul", 1), (2, "p-mul", 2)])
    );
    assert!(query(TraceFilter { limit: Some(0), ..Default::default() }).is_empty());
    assert_eq!(query(TraceFilter::default()).len(), 32);
}

#[test]
fn follow_picks_the_first_middle_and_last_steps() {
    let reader = reader();
    assert_eq!(reader.prompt_steps("p-mul").unwrap(), [1, 2, 3, 4]);
    let steps = |prompt: &str| reader.follow(prompt).unwrap().into_iter().map(|(step, _)| step).collect::<Vec<_>>();
    // Four steps: 1, the middle one (steps[4 / 2] = 3), 4.
    assert_eq!(steps("p-mul"), [1, 3, 4]);
    assert_eq!(steps("p-add"), [1, 2, 3]);
    assert_eq!(steps("p-sub"), [4]);
    assert!(steps("nope").is_empty());
    let followed = reader.follow("p-mul").unwrap();
    for (step, rows) in &followed {
        assert_eq!(ids(rows), [(*step, "p-mul", 0), (*step, "p-mul", 1), (*step, "p-mul", 2), (*step, "p-mul", 3)]);
    }
    assert_eq!(followed[2].1[0].text, "4 * 6 = 24. Wait, let me double-check: 6 * 4 = 24. <answer>24</answer>");

    assert_eq!(aha_traces::follow_steps(&[]), Vec::<u64>::new());
    assert_eq!(aha_traces::follow_steps(&[7]), [7]);
    assert_eq!(aha_traces::follow_steps(&[7, 9]), [7, 9]);
    assert_eq!(aha_traces::follow_steps(&[1, 2, 3, 4, 5]), [1, 3, 5]);
    assert_eq!(aha_traces::follow_steps(&[10, 20, 30, 40, 50, 60]), [10, 40, 60]);
}

#[test]
fn statistics_count_reflection_phrases_and_accuracy_per_step() {
    let phrases: Vec<String> = REFLECTION_PHRASES.iter().map(|p| p.to_string()).collect();
    let stats = reader().statistics(&phrases).unwrap();
    assert_eq!(stats.iter().map(|s| (s.step, s.completions)).collect::<Vec<_>>(), [(1, 8), (2, 8), (3, 8), (4, 8)]);
    // Shares of the step's 8 completions, in REFLECTION_PHRASES order:
    // wait, let me check, let me verify, verify, re-examine, recheck, mistake, double-check.
    let expected: [[f64; 8]; 4] = [
        [0.0; 8],
        [0.25, 0.125, 0.0, 0.0, 0.0, 0.0, 0.125, 0.0],
        [0.125, 0.25, 0.125, 0.125, 0.0, 0.0, 0.0, 0.0],
        [0.25, 0.0, 0.125, 0.125, 0.125, 0.0, 0.125, 0.125],
    ];
    for (step, shares) in stats.iter().zip(expected) {
        let got: Vec<f64> = phrases.iter().map(|p| step.phrases[p]).collect();
        assert_eq!(got, shares, "step {}", step.step);
    }
    let accuracy: Vec<(f64, f64)> = stats.iter().map(|s| (s.accuracy["math"], s.accuracy["format"])).collect();
    // The unjudged completion of step 4 counts as not right.
    assert_eq!(accuracy, [(0.375, 0.5), (0.625, 0.75), (0.875, 0.875), (0.875, 0.875)]);
    assert_eq!(stats[0].reward_mean, Some(0.5));
    assert_eq!(stats[0].tokens_mean, 39.0 / 8.0);
    assert!((stats[3].reward_mean.unwrap() - 8.5 / 7.0).abs() < 1e-12);
    // Phrases are matched ignoring case, as given.
    let custom = reader().statistics(&["LET ME".to_string(), "answer>2".to_string()]).unwrap();
    assert_eq!(custom.iter().map(|s| s.phrases["LET ME"]).collect::<Vec<_>>(), [0.125, 0.125, 0.375, 0.25]);
    assert_eq!(custom.iter().map(|s| s.phrases["answer>2"]).collect::<Vec<_>>(), [0.125, 0.375, 0.5, 0.5]);
}
