//! Verdicts per second of the `math` checker on one core, on typical boxed answers.
//!
//! `cargo bench -p aha-rewards --bench math_verdicts -- CASES.jsonl [OUT.jsonl]`: CASES from
//! `bench/make_math_cases.py`; OUT gets one `{"reward"}` line per case (for the agreement table
//! of `bench/compare_math_verify.sh`). Without arguments, a built-in set of boxed answers.

use std::io::Write;
use std::time::Instant;

use aha_rewards::math::MathChecker;

fn builtin() -> Vec<(String, String)> {
    let preds = [
        ("\\frac{3}{4}", "0.75"),
        ("42", "42"),
        ("2\\sqrt{3}", "\\sqrt{12}"),
        ("(1, 2)", "(1,2)"),
        ("x^2+2x+1", "(x+1)^2"),
        ("\\frac{\\pi}{4}", "\\pi/4"),
        ("[0, 1)", "[0,1)"),
        ("30^\\circ", "30"),
    ];
    (0..1000)
        .map(|i| {
            let (gold, pred) = preds[i % preds.len()];
            (format!("Let's compute step by step. So we get $\\boxed{{{pred}}}$."), gold.to_string())
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let cases: Vec<(String, String)> = match args.first() {
        Some(path) => std::fs::read_to_string(path)
            .expect("reading the cases")
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
                let gold = match &v["answer"] {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (v["completion"].as_str().unwrap_or_default().to_string(), gold)
            })
            .collect(),
        None => builtin(),
    };
    let checker = MathChecker::default();
    let rewards: Vec<f64> = cases.iter().map(|(c, g)| checker.verdict(c, g).reward_value().unwrap_or(0.0)).collect();
    // Best of 5 passes over all cases, one thread.
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        let mut sum = 0.0;
        for (completion, gold) in &cases {
            sum += checker.verdict(completion, gold).reward_value().unwrap_or(0.0);
        }
        std::hint::black_box(sum);
        best = best.min(start.elapsed().as_secs_f64());
    }
    if let Some(out) = args.get(1) {
        let mut f = std::io::BufWriter::new(std::fs::File::create(out).expect("creating OUT"));
        for r in &rewards {
            writeln!(f, "{{\"reward\": {r}}}").unwrap();
        }
    }
    println!(
        "{{\"tool\": \"aha\", \"cases\": {}, \"seconds\": {best:.4}, \"verdicts_per_s\": {:.0}}}",
        cases.len(),
        cases.len() as f64 / best
    );
}
