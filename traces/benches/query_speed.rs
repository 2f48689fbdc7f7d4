//! Query speed on a store of one million completions (1,000 steps x 125 groups x 8 samples,
//! ~300-character texts): how long `aha traces` filters take. Goal: under a second each.
//!
//!   cargo bench -p aha-traces --bench query_speed [-- --completions N] [--store PATH] [--repeat N] [--only NAME] [--statistics]
//!
//! With `--store PATH` the store is built there, or reused if it is already there (to time the
//! queries again without rebuilding it). `--repeat N` times each query N times and reports the best
//! (`seconds`) and the median; `--only NAME` times the queries whose name contains NAME;
//! `--statistics` also times the per-step statistics (a pass over every completion).

use std::collections::BTreeMap;
use std::time::Instant;

use aha_traces::{TraceCompletion, TraceFilter, TraceGroup, TraceReader, TraceWriter};
use serde_json::json;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let completions: usize = flag("--completions").and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
    let (groups_per_step, samples) = (125usize, 8usize);
    let steps = completions.div_ceil(groups_per_step * samples);
    let dir = tempfile::tempdir().unwrap();
    let path = match flag("--store") {
        Some(path) => std::path::PathBuf::from(path),
        None => dir.path().join("traces.sqlite"),
    };
    let reuse = path.is_file();

    let start = Instant::now();
    if !reuse {
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
                            let reflect = if (index as usize + j).is_multiple_of(17) { " Wait, let me verify this." } else { "" };
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
    }
    let build_s = start.elapsed().as_secs_f64();
    let size_mb = std::fs::metadata(&path).unwrap().len() as f64 / 1e6;

    let reader = TraceReader::open(&path).unwrap();
    let repeat: usize = flag("--repeat").and_then(|n| n.parse().ok()).unwrap_or(1).max(1);
    let only = flag("--only");
    let mut timings = serde_json::Map::new();
    // The best and the median of `repeat` runs: the minimum is the least disturbed by other load.
    let mut time = |name: &str, filter: TraceFilter| {
        if only.as_ref().is_some_and(|only| !name.contains(only.as_str())) {
            return;
        }
        let (mut seconds, mut cpu) = (Vec::new(), Vec::new());
        let mut rows = 0;
        for _ in 0..repeat {
            let (start, start_cpu) = (Instant::now(), thread_cpu_seconds());
            rows = reader.query(&filter).unwrap().len();
            seconds.push(start.elapsed().as_secs_f64());
            cpu.extend(thread_cpu_seconds().zip(start_cpu).map(|(end, start)| end - start));
        }
        seconds.sort_by(f64::total_cmp);
        cpu.sort_by(f64::total_cmp);
        let round = |s: f64| (s * 1e4).round() / 1e4;
        timings.insert(
            name.into(),
            json!({"seconds": round(seconds[0]), "median_s": round(seconds[seconds.len() / 2]),
                   "cpu_s": cpu.first().copied().map(round), "rows": rows}),
        );
    };
    let mid = steps as u64 / 2;
    time("one_step", TraceFilter { first_step: Some(mid), last_step: Some(mid), ..Default::default() });
    time(
        "step_range_and_reward",
        TraceFilter { first_step: Some(mid), last_step: Some(mid + 9), min_reward: Some(1.0), ..Default::default() },
    );
    time("one_prompt", TraceFilter { prompt_id: Some("problem-1234".into()), ..Default::default() });
    time(
        "regex_first_100",
        TraceFilter {
            text: Some(regex::Regex::new(r"(?i)wait, let me verify").unwrap()),
            limit: Some(100),
            ..Default::default()
        },
    );
    time(
        "regex_whole_store",
        TraceFilter { text: Some(regex::Regex::new(r"(?i)wait, let me verify").unwrap()), ..Default::default() },
    );
    // A regex that matches rarely (8 rows) and one that matches nothing: SQLite scans every text.
    time(
        "regex_rare_whole_store",
        TraceFilter { text: Some(regex::Regex::new(r"step 777\. .*<answer> 124 \*").unwrap()), ..Default::default() },
    );
    time(
        "regex_no_match",
        TraceFilter { text: Some(regex::Regex::new(r"(?i)let me re-?examine").unwrap()), ..Default::default() },
    );
    // With a limit the step index is walked in order to stop early: a rare match walks it all.
    time(
        "regex_rare_first_100",
        TraceFilter {
            text: Some(regex::Regex::new(r"step 777\. .*<answer> 124 \*").unwrap()),
            limit: Some(100),
            ..Default::default()
        },
    );
    time(
        "checker_passed_and_regex",
        TraceFilter {
            checker_passed: Some(("countdown".into(), true)),
            text: Some(regex::Regex::new(r"(?i)wait, let me verify").unwrap()),
            ..Default::default()
        },
    );
    time(
        "checker_failed_first_100",
        TraceFilter { checker_passed: Some(("countdown".into(), false)), limit: Some(100), ..Default::default() },
    );
    time(
        "truncated_in_late_steps",
        TraceFilter { first_step: Some(steps as u64 - 20), finish_reason: Some("length".into()), ..Default::default() },
    );
    let start = Instant::now();
    let prompt_steps = reader.prompt_steps("problem-1234").unwrap().len();
    timings.insert("prompt_steps".into(), json!({"seconds": start.elapsed().as_secs_f64(), "rows": prompt_steps}));
    let start = Instant::now();
    let follow: usize = reader.follow("problem-1234").unwrap().iter().map(|(_, rows)| rows.len()).sum();
    timings.insert("follow".into(), json!({"seconds": start.elapsed().as_secs_f64(), "rows": follow}));
    if args.iter().any(|a| a == "--statistics") {
        // Not a filter: reads every completion once (what `aha traces stats` and the report do).
        let phrases: Vec<String> = aha_traces::REFLECTION_PHRASES.iter().map(|p| p.to_string()).collect();
        let start = Instant::now();
        let steps = reader.statistics(&phrases).unwrap().len();
        timings.insert("statistics".into(), json!({"seconds": start.elapsed().as_secs_f64(), "rows": steps}));
    }
    println!(
        "{}",
        json!({"completions": steps * groups_per_step * samples, "reused_store": reuse, "build_s": build_s, "store_mb": size_mb, "queries": timings})
    );
}

/// The CPU time of this thread (Linux; `None` elsewhere): what a query cost, whatever else the
/// machine is running, next to the wall time a user waits.
fn thread_cpu_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(text.split_whitespace().next()?.parse::<f64>().ok()? / 1e9)
}
