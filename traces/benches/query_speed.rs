//! Query speed on a store of one million completions (1,000 steps x 125 groups x 8 samples,
//! ~300-character texts): how long `aha traces` filters take. Goal: under a second each.
//!
//!   cargo bench -p aha-traces --bench query_speed [-- --completions N]

use std::collections::BTreeMap;
use std::time::Instant;

use aha_traces::{TraceCompletion, TraceFilter, TraceGroup, TraceReader, TraceWriter};
use serde_json::json;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let completions: usize = args
        .iter()
        .position(|a| a == "--completions")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let (groups_per_step, samples) = (125usize, 8usize);
    let steps = completions.div_ceil(groups_per_step * samples);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.sqlite");

    let start = Instant::now();
    let writer = TraceWriter::open(&path, None).unwrap();
    for step in 1..=steps as u64 {
        let groups = (0..groups_per_step as u64)
            .map(|g| {
                let index = (step - 1) * groups_per_step as u64 + g;
                TraceGroup {
                    step,
                    index,
                    prompt_id: format!("problem-{}", index % 5000),
                    prompt: format!("Using the numbers [{}, 7, 3], create an equation that equals {}.", g, index % 97),
                    sample: json!({"target": index % 97, "numbers": [g, 7, 3]}),
                    completions: (0..samples)
                        .map(|j| {
                            let reward = ((index as usize + j) % 3) as f64 / 2.0;
                            let reflect = if (index as usize + j) % 17 == 0 { " Wait, let me verify this." } else { "" };
                            TraceCompletion {
                                text: format!(
                                    "<think> First I try {g} * 7 = {}, then subtract 3 to get {}.{reflect} That is step {step}. \
                                     Other orders give different values, so I keep this one. </think> <answer> {g} * 7 - 3 </answer>",
                                    g * 7,
                                    g * 7 - 3
                                ),
                                tokens: 40 + (j as u32 * 13 + step as u32) % 200,
                                finish_reason: if j == 7 { "length".into() } else { "stop".into() },
                                reward: Some(reward),
                                rewards: BTreeMap::from([("countdown".to_string(), Some(reward))]),
                                advantage: Some(reward - 0.5),
                                detail: json!({"equation": format!("{g} * 7 - 3")}),
                            }
                        })
                        .collect(),
                }
            })
            .collect();
        writer.write(groups).unwrap();
    }
    writer.close().unwrap();
    let build_s = start.elapsed().as_secs_f64();
    let size_mb = std::fs::metadata(&path).unwrap().len() as f64 / 1e6;

    let reader = TraceReader::open(&path).unwrap();
    let mut timings = serde_json::Map::new();
    let mut time = |name: &str, filter: TraceFilter| {
        let start = Instant::now();
        let rows = reader.query(&filter).unwrap().len();
        let seconds = start.elapsed().as_secs_f64();
        timings.insert(name.into(), json!({"seconds": (seconds * 1e4).round() / 1e4, "rows": rows}));
    };
    let mid = steps as u64 / 2;
    time("one_step", TraceFilter { first_step: Some(mid), last_step: Some(mid), ..Default::default() });
    time("step_range_and_reward", TraceFilter { first_step: Some(mid), last_step: Some(mid + 9), min_reward: Some(1.0), ..Default::default() });
    time("one_prompt", TraceFilter { prompt_id: Some("problem-1234".into()), ..Default::default() });
    time(
        "regex_first_100",
        TraceFilter { text: Some(regex::Regex::new(r"(?i)wait, let me verify").unwrap()), limit: Some(100), ..Default::default() },
    );
    time("regex_whole_store", TraceFilter { text: Some(regex::Regex::new(r"(?i)wait, let me verify").unwrap()), ..Default::default() });
    time("truncated_in_late_steps", TraceFilter { first_step: Some(steps as u64 - 20), finish_reason: Some("length".into()), ..Default::default() });
    let start = Instant::now();
    let prompt_steps = reader.prompt_steps("problem-1234").unwrap().len();
    timings.insert("prompt_steps".into(), json!({"seconds": start.elapsed().as_secs_f64(), "rows": prompt_steps}));
    println!(
        "{}",
        json!({"completions": steps * groups_per_step * samples, "build_s": build_s, "store_mb": size_mb, "queries": timings})
    );
}
