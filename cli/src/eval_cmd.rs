//! `aha eval`: K sampled completions per problem, scored by a reward checker; per-problem JSON
//! lines, then a one-line JSON summary (pass@1, pass@k, maj@k, mean completion length).
//!
//! A sample is correct when its reward reaches `--threshold` (1 by default: full marks; the
//! countdown checker's 0.1 for a well-formed wrong answer is not correct). A sample the checker
//! skips (the problem cannot be judged) is not correct; a problem whose samples are all skipped
//! is left out of the metrics and counted in `skipped_problems`. maj@k votes over the answers the
//! checker extracted (`detail.extracted` for math, `detail.equation` for countdown; otherwise
//! the last `<answer>` or `\boxed{}`), normalised; with the math checker, answers that are
//! mathematically equivalent (`0.5` and `\frac{1}{2}`) count as one.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use aha_datasets::{normalize_answer, Problem, ProblemScore, ProblemSource, Prompter, SampleOutcome, Summary};
use aha_rewards::math::{answers_match, candidates, parse_answer, Answer, Compare, Source};
use aha_rewards::{Checker, Registry, Verdict};
use aha_rollout::{generate, Completion, FinishReason, GenerationRequest, SamplingParams};

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    model: crate::ModelArgs,
    /// A problem file (.jsonl, .json or .parquet), or a built-in task:
    /// builtin:arithmetic[:digits=3,ops=2,count=100,seed=S] or
    /// builtin:countdown[:numbers=4,max=99,max_target=1000,count=100,seed=S].
    #[arg(long)]
    data: String,
    /// The file's shape: gsm8k, math, countdown or code (default: question/problem/prompt and
    /// answer columns, every other column kept).
    #[arg(long)]
    preset: Option<String>,
    /// The reward checker (default: the preset's or the built-in task's, else math).
    #[arg(long)]
    checker: Option<String>,
    /// Completions per problem (k of pass@k and maj@k).
    #[arg(long, default_value_t = 1)]
    samples: usize,
    /// 0 means greedy. The R1 paper evaluates at 0.6 with top-p 0.95.
    #[arg(long, default_value_t = 0.6)]
    temperature: f64,
    #[arg(long, default_value_t = 0.95)]
    top_p: f64,
    #[arg(long, default_value_t = 512)]
    max_new_tokens: usize,
    /// r1, boxed, plain, template text with {question} (and other {field}s), @FILE for a template
    /// file, or chat / chat:NAME: the model's chat template (add_generation_prompt) around the
    /// boxed (or NAME) prompt as the user message.
    #[arg(long, default_value = "r1")]
    template: String,
    /// Seeds the sampling (problem i draws from a seed derived from it and i) and built-in tasks.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Evaluate only the first N problems.
    #[arg(long)]
    limit: Option<usize>,
    /// Write the per-problem lines here instead of stdout (the summary still goes to stdout).
    #[arg(long)]
    out: Option<PathBuf>,
    /// A row that cannot be a problem is an error instead of a skipped row.
    #[arg(long)]
    strict: bool,
    /// Problems generated together.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// The reward at or above which a sample counts as correct.
    #[arg(long, default_value_t = 1.0)]
    threshold: f64,
}

pub fn run(args: EvalArgs) -> Result<()> {
    anyhow::ensure!(args.samples >= 1, "--samples must be at least 1");
    anyhow::ensure!(args.batch_size >= 1, "--batch-size must be at least 1");
    let started = Instant::now();
    let registry = Registry::with_builtins();

    let (problems, skipped_rows, checker_name) = load_problems(&args, &registry)?;
    let checker = registry.build(&checker_name, &Value::Null)?;
    let prompter = Prompter::new(&args.template, &args.model.model)?;
    let texts = problems.iter().map(|p| prompter.render(p)).collect::<Result<Vec<_>, _>>()?;
    let (model, tokenizer) = crate::load(&args.model, true)?;
    let prompts = problems
        .iter()
        .zip(texts)
        .map(|(p, text)| {
            let ids = tokenizer.encode(&text)?;
            anyhow::ensure!(!ids.is_empty(), "problem {}: the prompt is empty", p.id);
            Ok((text, ids))
        })
        .collect::<Result<Vec<_>>>()?;
    let params = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        max_new_tokens: args.max_new_tokens,
        stop_token_ids: model.config().eos_token_ids.clone(),
        ..SamplingParams::default()
    };

    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let progress = progress_bar(problems.len());
    let mut scores = Vec::with_capacity(problems.len());
    let mut skipped_problems = 0;
    let (mut completion_tokens, mut completions_seen) = (0usize, 0usize);
    for (batch_index, batch) in problems.chunks(args.batch_size).enumerate() {
        let first = batch_index * args.batch_size;
        let requests: Vec<GenerationRequest> = (first..first + batch.len())
            .map(|i| GenerationRequest {
                prompt_ids: prompts[i].1.clone(),
                n: args.samples,
                seed: problem_seed(args.seed, i),
            })
            .collect();
        let generated = generate(&model, &requests, &params)?;
        for ((problem, completions), (prompt, _)) in batch.iter().zip(generated).zip(&prompts[first..]) {
            let texts =
                completions.iter().map(|c| tokenizer.decode(&c.token_ids, true)).collect::<Result<Vec<_>, _>>()?;
            let verdicts = score(&*checker, problem, &texts)?;
            completion_tokens += completions.iter().map(|c| c.token_ids.len()).sum::<usize>();
            completions_seen += completions.len();
            let record = judge(problem, prompt, &completions, &texts, &verdicts, &checker_name, &args);
            if let Some(score) = &record.score {
                scores.push(score.clone());
            } else {
                skipped_problems += 1;
            }
            writeln!(out, "{}", record.line)?;
            progress.inc(1);
        }
    }
    progress.finish_and_clear();
    out.flush()?;
    drop(out);

    let summary = Summary::new(&scores, args.samples);
    let line = json!({
        "n_problems": summary.problems,
        "k": summary.k,
        "pass@1": summary.pass_at_1,
        "pass@k": summary.pass_at_k,
        "maj@k": summary.maj_at_k,
        "mean_completion_tokens": if completions_seen == 0 { 0.0 } else { completion_tokens as f64 / completions_seen as f64 },
        "skipped": skipped_rows,
        "skipped_problems": skipped_problems,
        "checker": checker_name,
        "template": args.template,
        "temperature": args.temperature,
        "seed": args.seed,
        "elapsed_s": started.elapsed().as_secs_f64(),
    });
    println!("{line}");
    Ok(())
}

/// The problems, the number of rows skipped while loading, and the checker's name.
fn load_problems(args: &EvalArgs, registry: &Registry) -> Result<(Vec<Problem>, usize, String)> {
    let source = ProblemSource {
        source: args.data.clone(),
        preset: args.preset.clone(),
        fields: Default::default(),
        strict: args.strict,
        limit: args.limit,
    };
    let checker_name =
        args.checker.clone().or(source.default_checker()?.map(str::to_string)).unwrap_or_else(|| "math".into());
    let required = registry.build(&checker_name, &Value::Null)?.required_fields();
    let dataset = source.load(&required, args.seed)?;
    const SHOWN: usize = 10;
    for skipped in dataset.skipped.iter().take(SHOWN) {
        eprintln!("warning: {skipped}");
    }
    if !dataset.skipped.is_empty() {
        let more = dataset.skipped.len().saturating_sub(SHOWN);
        let tail = if more > 0 { format!(" ({more} not shown)") } else { String::new() };
        eprintln!("warning: {}: {} rows skipped{tail}; --strict makes them errors", args.data, dataset.skipped.len());
    }
    if dataset.is_empty() {
        bail!("{}: no problems to evaluate ({})", args.data, dataset.why_empty());
    }
    Ok((dataset.problems, dataset.skipped.len(), checker_name))
}

/// A per-problem seed: distinct streams for every (seed, problem) pair (SplitMix64 of both).
fn problem_seed(seed: u64, index: usize) -> u64 {
    let mut z = seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Scores every completion of one problem, on as many threads as there are cores (code checkers
/// run sandboxed programs).
fn score(checker: &dyn Checker, problem: &Problem, texts: &[String]) -> Result<Vec<Verdict>> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let chunk = texts.len().div_ceil(threads).max(1);
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = texts
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(|t| checker.check(t, &problem.fields)).collect::<Vec<_>>()))
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a reward thread panicked")).collect()
    });
    results
        .into_iter()
        .map(|r| r.with_context(|| format!("problem {}: checker {}", problem.id, checker.name())))
        .collect()
}

struct Judged {
    line: Value,
    /// `None` when every sample was skipped by the checker.
    score: Option<ProblemScore>,
}

fn judge(
    problem: &Problem,
    prompt: &str,
    completions: &[Completion],
    texts: &[String],
    verdicts: &[Verdict],
    checker_name: &str,
    args: &EvalArgs,
) -> Judged {
    let answers = vote_keys(texts, verdicts, checker_name == "math");
    let outcomes: Vec<SampleOutcome> = verdicts
        .iter()
        .zip(&answers)
        .map(|(v, answer)| SampleOutcome {
            correct: v.reward_value().is_some_and(|r| r >= args.threshold),
            answer: answer.clone(),
        })
        .collect();
    let all_skipped = verdicts.iter().all(Verdict::is_skip);
    let score = (!all_skipped).then(|| ProblemScore::new(&outcomes, args.samples));
    let samples: Vec<Value> = completions
        .iter()
        .zip(texts)
        .zip(verdicts.iter().zip(&outcomes))
        .map(|((completion, text), (verdict, outcome))| {
            json!({
                "completion": text,
                "tokens": completion.token_ids.len(),
                "finish_reason": match completion.finish_reason {
                    FinishReason::Stop => "stop",
                    FinishReason::Length => "length",
                },
                "reward": verdict.reward_value(),
                "skipped": match &verdict.score {
                    aha_rewards::Score::Skip { reason } => Some(reason.as_str()),
                    aha_rewards::Score::Reward { .. } => None,
                },
                "correct": outcome.correct,
                "answer": outcome.answer,
                "detail": verdict.detail,
            })
        })
        .collect();
    let line = json!({
        "id": problem.id,
        "question": problem.question,
        "prompt": prompt,
        "gold": problem.answer(),
        "n": score.as_ref().map(|s| s.n),
        "correct": score.as_ref().map(|s| s.correct),
        "pass@1": score.as_ref().map(|s| s.pass_at_1),
        "pass@k": score.as_ref().and_then(|s| s.pass_at_k),
        "maj@k": score.as_ref().map(|s| s.maj_at_k),
        "majority_answer": score.as_ref().and_then(|s| s.majority).and_then(|i| answers[i].clone()),
        "samples": samples,
    });
    Judged { line, score }
}

/// Each sample's vote: the checker's extracted answer (else the last `<answer>` or `\boxed{}`),
/// normalised; with `math_equivalence`, an answer equivalent to an earlier one takes its key.
fn vote_keys(texts: &[String], verdicts: &[Verdict], math_equivalence: bool) -> Vec<Option<String>> {
    let raw: Vec<Option<String>> = texts
        .iter()
        .zip(verdicts)
        .map(|(text, verdict)| {
            let from_detail =
                ["extracted", "equation"].iter().find_map(|k| verdict.detail.get(*k)?.as_str().map(str::to_string));
            from_detail
                .or_else(|| candidates(text, &[Source::AnswerTag, Source::Boxed]).into_iter().next().map(|c| c.text))
                .map(|a| normalize_answer(&a))
                .filter(|a| !a.is_empty())
        })
        .collect();
    if !math_equivalence {
        return raw;
    }
    let compare = Compare::default();
    let mut representatives: Vec<(String, Answer)> = Vec::new();
    raw.into_iter()
        .map(|key| {
            let key = key?;
            let Ok(parsed) = parse_answer(&key) else { return Some(key) };
            if let Some((existing, _)) = representatives
                .iter()
                .find(|(text, answer)| *text == key || answers_match(&compare, answer, &parsed, &key))
            {
                return Some(existing.clone());
            }
            representatives.push((key.clone(), parsed));
            Some(key)
        })
        .collect()
}

fn progress_bar(problems: usize) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(problems as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} problems, {elapsed} elapsed, {eta} left")
            .expect("a valid progress template"),
    );
    bar
}
