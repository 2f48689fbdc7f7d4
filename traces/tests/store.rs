use std::collections::BTreeMap;

use aha_traces::{TraceCompletion, TraceGroup, TraceReader, TraceWriter};
use serde_json::json;

fn group(step: u64, index: u64, rewards: &[Option<f64>]) -> TraceGroup {
    TraceGroup {
        step,
        index,
        prompt_id: format!("p{index}"),
        prompt: format!("What is {index} + 1?"),
        sample: json!({ "answer": (index + 1).to_string() }),
        completions: rewards
            .iter()
            .enumerate()
            .map(|(i, &reward)| TraceCompletion {
                text: format!("<answer>{}</answer>", index + i as u64),
                tokens: 10 + i as u32,
                finish_reason: if i == 0 { "length".into() } else { "stop".into() },
                reward,
                rewards: BTreeMap::from([("math".to_string(), reward)]),
                advantage: reward.map(|r| r - 0.5),
                detail: json!({ "extracted": index + i as u64 }),
            })
            .collect(),
    }
}

#[test]
fn steps_round_trip_and_a_resume_drops_the_steps_it_will_redo() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.sqlite");
    let writer = TraceWriter::open(&path, None).unwrap();
    writer.write(vec![group(1, 0, &[Some(1.0), Some(0.0)]), group(1, 1, &[None, Some(1.0)])]).unwrap();
    writer.flush().unwrap();
    // A reader sees flushed steps while the writer is still open.
    let reader = TraceReader::open(&path).unwrap();
    assert_eq!(reader.steps().unwrap().len(), 1);
    writer.write(vec![group(2, 2, &[Some(0.0), Some(0.0)])]).unwrap();
    writer.write(vec![group(3, 3, &[Some(1.0), Some(1.0)])]).unwrap();
    writer.close().unwrap();

    let steps = reader.steps().unwrap();
    assert_eq!(steps.iter().map(|s| s.step).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!((steps[0].groups, steps[0].completions, steps[0].truncated), (2, 4, 2));
    // AVG ignores the unjudged completion: (1 + 0 + 1) / 3.
    assert!((steps[0].reward_mean.unwrap() - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(steps[0].tokens_mean, 10.5);
    let rows = reader.completions(1).unwrap();
    assert_eq!(
        rows.iter().map(|r| (r.prompt_id.as_str(), r.sample_index)).collect::<Vec<_>>(),
        [("p0", 0), ("p0", 1), ("p1", 0), ("p1", 1)]
    );
    assert_eq!(rows[2].reward, None);
    assert_eq!(rows[3].advantage, Some(0.5));

    // Resuming from the checkpoint of step 2 forgets step 3.
    TraceWriter::open(&path, Some(2)).unwrap().close().unwrap();
    assert_eq!(reader.steps().unwrap().iter().map(|s| s.step).collect::<Vec<_>>(), [1, 2]);
}

#[test]
fn a_missing_store_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let error = TraceReader::open(&dir.path().join("nope.sqlite")).err().unwrap().to_string();
    assert!(error.contains("nope.sqlite") && error.contains("no trace store"), "{error}");
}

#[test]
fn filters_statistics_and_prompt_history() {
    use aha_traces::TraceFilter;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.sqlite");
    let writer = TraceWriter::open(&path, None).unwrap();
    let mut step1 = group(1, 0, &[Some(1.0), Some(0.0)]);
    step1.completions[1].text = "Wait, let me check: <answer>2</answer>".into();
    writer.write(vec![step1, group(1, 1, &[Some(0.0), None])]).unwrap();
    let mut again = group(2, 0, &[Some(1.0), Some(1.0)]);
    again.step = 2;
    writer.write(vec![again]).unwrap();
    writer.close().unwrap();
    let reader = TraceReader::open(&path).unwrap();

    let all = reader.query(&TraceFilter::default()).unwrap();
    assert_eq!(all.len(), 6);
    assert_eq!(all[0].prompt, "What is 0 + 1?");
    assert_eq!(all[0].sample["answer"], "1");
    let count = |filter: TraceFilter| reader.query(&filter).unwrap().len();
    assert_eq!(count(TraceFilter { first_step: Some(2), ..Default::default() }), 2);
    assert_eq!(count(TraceFilter { last_step: Some(1), min_reward: Some(0.5), ..Default::default() }), 1);
    assert_eq!(count(TraceFilter { max_reward: Some(0.5), ..Default::default() }), 2, "NULL rewards match no range");
    assert_eq!(count(TraceFilter { finish_reason: Some("length".into()), ..Default::default() }), 3);
    assert_eq!(count(TraceFilter { prompt_id: Some("p1".into()), ..Default::default() }), 2);
    let wait = regex::Regex::new(r"(?i)\bwait\b").unwrap();
    assert_eq!(count(TraceFilter { text: Some(wait), ..Default::default() }), 1);
    assert_eq!(count(TraceFilter { checker_passed: Some(("math".into(), true)), ..Default::default() }), 3);
    assert_eq!(
        count(TraceFilter { checker_passed: Some(("math".into(), false)), limit: Some(2), ..Default::default() }),
        2
    );

    assert_eq!(reader.prompt_steps("p0").unwrap(), [1, 2]);
    assert!(reader.prompt_steps("nope").unwrap().is_empty());

    let phrases = vec!["wait".to_string(), "let me check".to_string(), "never".to_string()];
    let stats = reader.statistics(&phrases).unwrap();
    assert_eq!(stats.len(), 2);
    assert_eq!((stats[0].step, stats[0].completions), (1, 4));
    assert_eq!(stats[0].phrases["wait"], 0.25);
    assert_eq!(stats[0].phrases["let me check"], 0.25);
    assert_eq!(stats[0].phrases["never"], 0.0);
    assert_eq!(stats[0].accuracy["math"], 0.25);
    assert_eq!(stats[1].accuracy["math"], 1.0);
    assert!((stats[0].reward_mean.unwrap() - 1.0 / 3.0).abs() < 1e-12);
    assert_eq!(stats[0].tokens_mean, 10.5);
}

#[test]
fn the_report_draws_the_metrics_and_cannot_be_injected_by_model_output() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.sqlite");
    let writer = TraceWriter::open(&path, None).unwrap();
    let mut hostile = group(1, 0, &[Some(1.0), Some(0.0)]);
    hostile.completions[0].text = "</script><script>alert('x')</script><img src=x onerror=alert(1)>".into();
    writer.write(vec![hostile]).unwrap();
    writer.close().unwrap();
    let metrics = dir.path().join("metrics.jsonl");
    std::fs::write(
        &metrics,
        "{\"step\":1,\"reward_mean\":0.25,\"accuracy\":0.5,\"completion_length_mean\":12.0,\"entropy\":2.0,\"train_s\":0.5}\n\
         {\"step\":2,\"reward_mean\":0.75,\"accuracy\":0.5,\"completion_length_mean\":20.0,\"entropy\":1.5,\"train_s\":0.4}\n",
    )
    .unwrap();
    let html = aha_traces::render_report("run <1>", &metrics, &path).unwrap();
    assert!(html.contains("<title>run &lt;1&gt; · aha report</title>"));
    for title in ["Reward and accuracy", "Completion length (tokens)", "Entropy", "Seconds per step"] {
        assert!(html.contains(title), "no chart {title}");
    }
    assert_eq!(html.matches("<svg").count(), 4, "charts without data are left out");
    // The completion is data for the script, never markup: no closing tag leaks out of the JSON.
    assert_eq!(html.matches("</script>").count(), 2, "only the report's own two scripts close");
    assert!(!html.contains("<img src=x"));
    // Without a store yet (a run that just started), the report still renders.
    let empty = aha_traces::render_report("new", &metrics, &dir.path().join("missing.sqlite")).unwrap();
    assert!(empty.contains("no trace store yet") && empty.contains("<svg"));
    // A store that is there but damaged is an error naming it, never "no trace store yet".
    let bytes = std::fs::read(&path).unwrap();
    let damaged: [(&str, Vec<u8>); 2] = [
        ("random.sqlite", (0..bytes.len()).map(|i| (i * 7919 % 251) as u8).collect()),
        ("truncated.sqlite", bytes[..bytes.len() / 2].to_vec()),
    ];
    for (name, content) in damaged {
        let damaged = dir.path().join(name);
        std::fs::write(&damaged, content).unwrap();
        let error = aha_traces::render_report("damaged", &metrics, &damaged).unwrap_err().to_string();
        assert!(error.contains(name), "{name}: {error}");
    }
}

#[test]
fn tool_calls_are_kept_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.sqlite");
    let writer = TraceWriter::open(&path, None).unwrap();
    let mut with_tools = group(1, 0, &[Some(1.0), Some(0.0), Some(0.0), Some(1.0)]);
    let call = |status: &str, seconds: f64| {
        json!({ "code": "print(123 * 456)", "status": status, "output": "56088", "seconds": seconds,
                "output_start": 5, "output_tokens": 4, "truncated": false })
    };
    with_tools.completions[0].detail = json!({ "math": {}, "tool_calls": [call("ok", 0.5), call("timeout", 1.0)] });
    with_tools.completions[3].detail = json!({ "math": {}, "tool_calls": [call("ok", 0.25)] });
    writer.write(vec![with_tools, group(2, 1, &[Some(1.0)])]).unwrap();
    writer.close().unwrap();

    let reader = TraceReader::open(&path).unwrap();
    let rows = reader.completions(1).unwrap();
    assert_eq!(rows[0].detail["tool_calls"][1]["status"], "timeout");
    let stats = reader.statistics(&[]).unwrap();
    let tools = stats[0].tools.as_ref().expect("step 1 used the tool");
    assert_eq!(tools.calls_per_completion, 3.0 / 4.0);
    assert_eq!(tools.use_frac, 2.0 / 4.0);
    assert_eq!(tools.error_frac, 1.0 / 3.0);
    assert_eq!(tools.seconds, 1.75);
    assert!(stats[1].tools.is_none(), "no calls, no tool statistics");
}
