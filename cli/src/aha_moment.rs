//! `aha demo aha-moment`: the "aha moment" of DeepSeek-R1-Zero, self-checking that emerges under
//! RL, on a laptop CPU.
//!
//! The bundled base model (`assets/aha-moment-model`) was pretrained with `aha sft` from random
//! weights on 3-digit additions answered with a first attempt (right about half of the time);
//! 10% of the answers then stop to check the attempt ("Wait, let me check:"), recompute the sum
//! column by column and confirm or correct it (see `aha_datasets::SelfCheck`). GRPO rewarded only
//! for a right final answer (`examples/configs/aha-moment.toml`, the `math` checker) then makes
//! the model check itself more and more: its own first attempts are mostly wrong and its checks
//! mostly right. The demo measures, on held-out problems, before and after and along training:
//! accuracy (greedy and pass@1 at T=1), the share of completions that check themselves, the
//! share of checks that change the answer and how many of those changes go from wrong to right,
//! and the length; and it shows one held-out problem where the trained model catches and fixes
//! its own mistake.
//!
//! `aha demo aha-moment corpus --out DIR` writes what the base model is made from;
//! `scripts/make_aha_moment_model.sh` runs it and `aha sft`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use aha_datasets::{Addition, Dataset, Prompter, SelfCheck};
use aha_grpo::{build_checker, load_problems, EvalReport, EvalSettings, HeldOut, TrainConfig};
use aha_model::{train_byte_level_bpe, CausalLM, Tokenizer};
use aha_rewards::Registry;
use aha_traces::{TraceFilter, TraceReader, TRACE_FILE};

use crate::train_cmd::{finished, number, Progress};

/// The demo's training configuration (also usable with `aha train`).
const CONFIG: &str = include_str!("../../examples/configs/aha-moment.toml");
const CONFIG_NAME: &str = "examples/configs/aha-moment.toml";
/// Where the base model lives, relative to the repository.
const MODEL_DIR: &str = "assets/aha-moment-model";

#[derive(Args)]
pub struct AhaMomentArgs {
    #[command(subcommand)]
    action: Option<AhaMomentAction>,
    /// Seed of the training run (data order, sampling).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Override a key of the training configuration (examples/configs/aha-moment.toml), e.g.
    /// `--set run.steps=20` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// The run directory (default: runs/aha-moment-seed<SEED>-<time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Completions per held-out problem for pass@1 at temperature 1.
    #[arg(long, default_value_t = 4)]
    eval_samples: usize,
}

#[derive(Subcommand)]
enum AhaMomentAction {
    /// Write the base model's pretraining corpus (train.jsonl), its tokenizer and config.json
    /// (DIR/base), for `aha sft` (see scripts/make_aha_moment_model.sh).
    Corpus(CorpusArgs),
}

#[derive(Args)]
struct CorpusArgs {
    /// Output folder (created).
    #[arg(long)]
    out: PathBuf,
    /// Number of lines (solutions and practice texts).
    #[arg(long, default_value_t = 100_000)]
    examples: usize,
    /// Share of examples whose first attempt is checked (confirmed or corrected).
    #[arg(long, default_value_t = 0.1)]
    check_share: f64,
    /// Probability that a first attempt is right.
    #[arg(long, default_value_t = 0.4)]
    attempt_right: f64,
    /// Share of the corpus's lines that are practice texts (a column-by-column sum alone, no
    /// prompt, no check) rather than solutions.
    #[arg(long, default_value_t = 0.3)]
    practice_share: f64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Largest tokenizer vocabulary.
    #[arg(long, default_value_t = 512)]
    vocab_size: usize,
    /// Hidden size of the model (config.json); 4 layers, intermediate 4x.
    #[arg(long, default_value_t = 128)]
    hidden_size: usize,
    #[arg(long, default_value_t = 4)]
    layers: usize,
}

pub fn run(args: AhaMomentArgs, repo_root: &Path) -> Result<()> {
    match &args.action {
        Some(AhaMomentAction::Corpus(corpus)) => write_corpus(corpus),
        None => demo(&args, repo_root),
    }
}

/// The self-checking statistics of a set of completions, each with its gold answer.
#[derive(Debug, Default, Clone, Copy)]
pub struct CheckStats {
    pub completions: usize,
    pub checks: usize,
    /// Checks whose final answer differs from the first attempt.
    pub changes: usize,
    pub wrong_to_right: usize,
    pub right_to_wrong: usize,
    /// Checks that keep a right first attempt.
    pub confirmed_right: usize,
    /// Checked completions whose final answer is right.
    pub checks_right: usize,
    /// Unchecked completions, and how many of them are right.
    pub unchecked_right: usize,
}

impl CheckStats {
    pub fn add(&mut self, completion: &str, gold: &str) {
        let read = SelfCheck::analyse(completion);
        let right = |answer: &Option<String>| answer.as_deref() == Some(gold);
        self.completions += 1;
        if read.checks {
            self.checks += 1;
            self.checks_right += usize::from(right(&read.final_answer));
            if read.changes_answer() {
                self.changes += 1;
                if !right(&read.first_attempt) && right(&read.final_answer) {
                    self.wrong_to_right += 1;
                }
                if right(&read.first_attempt) && !right(&read.final_answer) {
                    self.right_to_wrong += 1;
                }
            } else if right(&read.first_attempt) {
                self.confirmed_right += 1;
            }
        } else {
            self.unchecked_right += usize::from(right(&read.final_answer));
        }
    }

    fn share(part: usize, whole: usize) -> Value {
        if whole == 0 {
            Value::Null
        } else {
            json!(part as f64 / whole as f64)
        }
    }

    pub fn to_json(self) -> Value {
        json!({
            "check_share": Self::share(self.checks, self.completions),
            "change_share_of_checks": Self::share(self.changes, self.checks),
            "wrong_to_right_share_of_changes": Self::share(self.wrong_to_right, self.changes),
            "right_to_wrong_share_of_changes": Self::share(self.right_to_wrong, self.changes),
            "accuracy_checked": Self::share(self.checks_right, self.checks),
            "accuracy_unchecked": Self::share(self.unchecked_right, self.completions - self.checks),
            "completions": self.completions,
            "checks": self.checks,
            "changes": self.changes,
            "wrong_to_right": self.wrong_to_right,
            "right_to_wrong": self.right_to_wrong,
        })
    }
}

fn report_stats(held_out: &HeldOut, report: &EvalReport) -> CheckStats {
    let mut stats = CheckStats::default();
    for c in &report.completions {
        let gold =
            held_out.problem(c.problem).and_then(|p| p.sample.get("answer")).and_then(Value::as_str).unwrap_or("");
        stats.add(&c.text, gold);
    }
    stats
}

struct Measured {
    greedy: EvalReport,
    sampled: EvalReport,
    greedy_checks: CheckStats,
    sampled_checks: CheckStats,
}

impl Measured {
    fn to_json(&self) -> Value {
        json!({
            "pass_at_1_t1": self.sampled.accuracy,
            "greedy_accuracy": self.greedy.accuracy,
            "length_mean_t1": self.sampled.length_mean,
            "length_mean_greedy": self.greedy.length_mean,
            "t1": self.sampled_checks.to_json(),
            "greedy": self.greedy_checks.to_json(),
            "problems": self.sampled.problems,
            "samples": self.sampled.completions.len(),
        })
    }
}

fn demo(args: &AhaMomentArgs, repo_root: &Path) -> Result<()> {
    let started = Instant::now();
    let model_dir = repo_root.join(MODEL_DIR);
    let model_dir = model_dir.canonicalize().unwrap_or(model_dir);
    if !model_dir.join("model.safetensors").is_file() {
        bail!(
            "the aha-moment base model is missing: {} (scripts/make_aha_moment_model.sh makes it)",
            model_dir.join("model.safetensors").display()
        );
    }
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!("runs/aha-moment-seed{}-{}", args.seed, chrono::Local::now().format("%Y%m%d-%H%M%S")))
    });
    let mut overrides = vec![
        format!("model.path={}", toml_string(&model_dir.display().to_string())),
        format!("run.seed={}", args.seed),
        format!("run.output_dir={}", toml_string(&out.display().to_string())),
    ];
    overrides.extend(args.overrides.iter().cloned());
    let config = TrainConfig::from_toml(CONFIG, CONFIG_NAME, &overrides)?;

    let checker = build_checker(&config, &Registry::with_builtins())?;
    let (_, eval_set) = load_problems(&config, &checker)?;
    let options = config.model.load_options(false);
    let base = CausalLM::load(&model_dir, options).with_context(|| format!("loading {}", model_dir.display()))?;
    let tokenizer = Tokenizer::from_dir(&model_dir, base.config().vocab_size)?;
    let prompter = Prompter::new(&config.data.template, &model_dir)?;
    let held_out = HeldOut::new(&eval_set.problems, &prompter, &tokenizer, config.sampling.max_prompt_tokens)?;
    let label = config.rewards.checkers.first().map(|c| c.reported_label());
    let measure = |model: &CausalLM| -> Result<Measured> {
        let settings = |temperature: f64| EvalSettings {
            temperature,
            max_new_tokens: config.sampling.max_new_tokens,
            samples: args.eval_samples,
            seed: 1_000_003,
            stop_strings: config.sampling.stop_strings.clone(),
            engine: config.sampling.engine(),
            tools: config.tools.python.clone(),
        };
        let greedy = held_out.evaluate(model, &tokenizer, &checker, label.as_deref(), &settings(0.0))?;
        let sampled = held_out.evaluate(model, &tokenizer, &checker, label.as_deref(), &settings(1.0))?;
        Ok(Measured {
            greedy_checks: report_stats(&held_out, &greedy),
            sampled_checks: report_stats(&held_out, &sampled),
            greedy,
            sampled,
        })
    };

    println!(
        "aha demo aha-moment: self-checking emerging under RL. Base model {} ({:.2}M parameters), 3-digit \
         addition, a first attempt that the base model checks ({:?}) in about one answer in ten; \
         rewarded only for a right final answer; seed {}.",
        model_dir.display(),
        base.num_parameters() as f64 / 1e6,
        SelfCheck::MARK,
        args.seed
    );
    eprintln!("evaluating the base model on {} held-out problems...", held_out.len());
    let before = measure(&base)?;
    drop(base);
    eprintln!(
        "before: pass@1 at T=1 {:.1}%, greedy {:.1}%, self-checking {:.1}%",
        100.0 * before.sampled.accuracy,
        100.0 * before.greedy.accuracy,
        100.0 * before.sampled_checks.checks as f64 / before.sampled_checks.completions.max(1) as f64
    );

    let steps = config.run.steps;
    let progress = Progress::new(steps);
    let train_started = Instant::now();
    let outcome = aha_grpo::train(config.clone(), false, |metrics| {
        let summary = format!(
            "accuracy {:.3} length {:.1}",
            number(metrics, "accuracy"),
            number(metrics, "completion_length_mean")
        );
        progress.step(metrics, summary);
    })?;
    finished(progress, outcome.clone());
    let train_seconds = train_started.elapsed().as_secs_f64();
    let checkpoint = outcome.last_checkpoint.context("the run saved no checkpoint")?;
    let trained = CausalLM::load(&checkpoint, options)?;
    eprintln!("evaluating the trained model...");
    let after = measure(&trained)?;

    let curve = training_curve(&outcome.run_dir)?;
    let example = caught_mistake(&held_out, &before, &after);
    let summary = json!({
        "seed": args.seed,
        "steps": steps,
        "mark": SelfCheck::MARK,
        "before": before.to_json(),
        "after": after.to_json(),
        "curve": curve,
        "train_seconds": train_seconds,
        "wall_seconds": started.elapsed().as_secs_f64(),
        "run_dir": outcome.run_dir,
        "checkpoint": checkpoint,
        "example": example,
    });
    let text = summary_text(&summary, &outcome.run_dir);
    print!("{text}");
    std::fs::write(outcome.run_dir.join("demo.md"), &text)?;
    std::fs::write(outcome.run_dir.join("demo.json"), serde_json::to_string_pretty(&summary)? + "\n")?;
    Ok(())
}

/// Per step: reward, accuracy and mean length (metrics.jsonl), and the self-checking statistics
/// of the sampled completions (traces.sqlite, against each problem's gold answer).
fn training_curve(run_dir: &Path) -> Result<Vec<Value>> {
    let reader = TraceReader::open(&run_dir.join(TRACE_FILE))?;
    let mut per_step: BTreeMap<u64, CheckStats> = BTreeMap::new();
    for row in reader.query(&TraceFilter::default())? {
        let gold = row.sample.get("answer").and_then(Value::as_str).unwrap_or("");
        per_step.entry(row.step).or_default().add(&row.text, gold);
    }
    let metrics = std::fs::read_to_string(run_dir.join(aha_grpo::run_dir::METRICS_FILE))?;
    metrics
        .lines()
        .map(|line| {
            let m: Value = serde_json::from_str(line)?;
            let step = m["step"].as_u64().unwrap_or(0);
            let stats = per_step.get(&step).copied().unwrap_or_default().to_json();
            Ok(json!({
                "step": step,
                "reward": m["reward_mean"],
                "accuracy": m["accuracy"],
                "length": m["completion_length_mean"],
                "check_share": stats["check_share"],
                "change_share_of_checks": stats["change_share_of_checks"],
                "wrong_to_right_share_of_changes": stats["wrong_to_right_share_of_changes"],
                "elapsed_s": m["elapsed_s"],
            }))
        })
        .collect()
}

fn summary_text(summary: &Value, run_dir: &Path) -> String {
    let (before, after) = (&summary["before"], &summary["after"]);
    let percent = |v: &Value| v.as_f64().map_or_else(|| format!("{:>7}", "-"), |x| format!("{:>6.1}%", 100.0 * x));
    let number = |v: &Value| format!("{:>7.1}", v.as_f64().unwrap_or(f64::NAN));
    let mut text = String::new();
    let _ = writeln!(text, "\nheld-out: {} problems, {} samples each at T=1", before["problems"], {
        before["samples"].as_u64().unwrap_or(0) / before["problems"].as_u64().unwrap_or(1).max(1)
    });
    let _ = writeln!(text, "                                        before    after");
    let rows: [(&str, &Value, &Value, bool); 9] = [
        ("pass@1 at temperature 1", &before["pass_at_1_t1"], &after["pass_at_1_t1"], true),
        ("greedy accuracy", &before["greedy_accuracy"], &after["greedy_accuracy"], true),
        ("self-checking completions (T=1)", &before["t1"]["check_share"], &after["t1"]["check_share"], true),
        ("  accuracy when checked (T=1)", &before["t1"]["accuracy_checked"], &after["t1"]["accuracy_checked"], true),
        (
            "  accuracy when not checked (T=1)",
            &before["t1"]["accuracy_unchecked"],
            &after["t1"]["accuracy_unchecked"],
            true,
        ),
        (
            "checks that change the answer",
            &before["t1"]["change_share_of_checks"],
            &after["t1"]["change_share_of_checks"],
            true,
        ),
        (
            "  of those, wrong -> right",
            &before["t1"]["wrong_to_right_share_of_changes"],
            &after["t1"]["wrong_to_right_share_of_changes"],
            true,
        ),
        ("self-checking completions (greedy)", &before["greedy"]["check_share"], &after["greedy"]["check_share"], true),
        ("mean length, tokens (T=1)", &before["length_mean_t1"], &after["length_mean_t1"], false),
    ];
    for (name, b, a, is_percent) in rows {
        let format = |v: &Value| if is_percent { percent(v) } else { number(v) };
        let _ = writeln!(text, "{name:<38} {}  {}", format(b), format(a));
    }
    let curve = summary["curve"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(
        text,
        "\ntraining: {} GRPO steps in {:.0} s (whole demo {:.0} s)",
        summary["steps"],
        summary["train_seconds"].as_f64().unwrap_or(0.0),
        summary["wall_seconds"].as_f64().unwrap_or(0.0)
    );
    let _ = writeln!(text, " step  accuracy   length   checks  changes  wrong->right");
    let every = (curve.len() / 10).max(1);
    for (i, point) in curve.iter().enumerate() {
        if i % every == every - 1 || i + 1 == curve.len() {
            let _ = writeln!(
                text,
                "{:>5}  {}  {}  {}  {}  {}",
                point["step"].as_u64().unwrap_or(0),
                percent(&point["accuracy"]),
                number(&point["length"]),
                percent(&point["check_share"]),
                percent(&point["change_share_of_checks"]),
                percent(&point["wrong_to_right_share_of_changes"])
            );
        }
    }
    let _ = writeln!(
        text,
        "(per step, over the sampled training completions; changes: share of checks that change the answer)"
    );
    if let Some(example) = summary["example"].as_object() {
        let verdict = |right: &Value| if right.as_bool() == Some(true) { "right" } else { "wrong" };
        let _ = writeln!(
            text,
            "\none held-out problem, greedy, where the trained model catches its own mistake: {} (answer {})",
            example["question"].as_str().unwrap_or(""),
            example["answer"].as_str().unwrap_or("")
        );
        let _ = writeln!(
            text,
            "  before ({}):{}",
            verdict(&example["before_correct"]),
            example["before"].as_str().unwrap_or("")
        );
        let _ = writeln!(
            text,
            "  after  ({}):{}",
            verdict(&example["after_correct"]),
            example["after"].as_str().unwrap_or("")
        );
    }
    let root = run_dir.display();
    let _ = writeln!(text, "\nrun directory: {root}");
    let _ = writeln!(text, "  traces: {root}/{TRACE_FILE}  (aha traces {root} stats)");
    let _ = writeln!(text, "  report: {root}/report.html");
    let _ = writeln!(text, "  trained model: {}", summary["checkpoint"].as_str().unwrap_or(""));
    text
}

/// A held-out problem whose trained greedy answer checks a wrong first attempt and corrects it
/// (preferring one the base model got wrong); else the first greedy wrong-to-right check at T=1.
fn caught_mistake(held_out: &HeldOut, before: &Measured, after: &Measured) -> Value {
    let gold = |problem: usize| {
        held_out.problem(problem).and_then(|p| p.sample.get("answer")).and_then(Value::as_str).unwrap_or("").to_string()
    };
    let fixes = |text: &str, problem: usize| {
        let read = SelfCheck::analyse(text);
        let gold = gold(problem);
        read.changes_answer()
            && read.first_attempt.as_deref() != Some(&gold)
            && read.final_answer.as_deref() == Some(&gold)
    };
    // A check that also says so in words ("So it is <gold>, not <attempt>.") reads best.
    let says_so = |text: &str, problem: usize| {
        let read = SelfCheck::analyse(text);
        fixes(text, problem)
            && text.contains(&format!("So it is {}, not {}.", gold(problem), read.first_attempt.unwrap_or_default()))
    };
    let pairs = || before.greedy.completions.iter().zip(&after.greedy.completions);
    let chosen = pairs()
        .find(|(b, a)| !b.correct && says_so(&a.text, a.problem))
        .or_else(|| pairs().find(|(b, a)| !b.correct && fixes(&a.text, a.problem)))
        .or_else(|| pairs().find(|(_, a)| fixes(&a.text, a.problem)));
    if let Some((b, a)) = chosen {
        return json!({
            "question": held_out.problem(b.problem).map_or("", |p| p.question.as_str()),
            "answer": gold(a.problem),
            "before": b.text, "before_correct": b.correct,
            "after": a.text, "after_correct": a.correct,
            "greedy": true,
        });
    }
    after.sampled.completions.iter().find(|a| fixes(&a.text, a.problem)).map_or(Value::Null, |a| {
        json!({
            "question": held_out.problem(a.problem).map_or("", |p| p.question.as_str()),
            "answer": gold(a.problem),
            "before": before.greedy.completions.iter().find(|b| b.problem == a.problem).map_or("", |b| b.text.as_str()),
            "before_correct": before.greedy.completions.iter().find(|b| b.problem == a.problem).is_some_and(|b| b.correct),
            "after": a.text, "after_correct": a.correct,
            "greedy": false,
        })
    })
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// The base model's pretraining set: addition problems (never the demo's evaluation problems),
/// each answered by a first attempt (right with probability `attempt_right`), checked with
/// probability `check_share`; a tokenizer learned from it; config.json of a small Qwen2.
fn write_corpus(args: &CorpusArgs) -> Result<()> {
    for (name, value) in [
        ("--check-share", args.check_share),
        ("--attempt-right", args.attempt_right),
        ("--practice-share", args.practice_share),
    ] {
        if !(0.0..=1.0).contains(&value) {
            bail!("{name} must be in [0, 1], got {value}");
        }
    }
    let config = TrainConfig::from_toml(CONFIG, CONFIG_NAME, &[])?;
    let (_, eval_set) = load_problems(&config, &build_checker(&config, &Registry::with_builtins())?)?;
    let base_dir = args.out.join("base");
    std::fs::create_dir_all(&base_dir).with_context(|| format!("creating {}", base_dir.display()))?;
    let prompter = Prompter::new(&config.data.template, &base_dir)?;
    let task = Addition { digits: 3 };
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let mut lines = Vec::with_capacity(args.examples);
    let (mut checked, mut attempts_right, mut corrected, mut practice) = (0, 0, 0, 0);
    let (candidates, _) =
        Dataset::from_problems(task.generate(args.examples * 2, args.seed)?).without_questions_of(&eval_set);
    for problem in &candidates.problems {
        if lines.len() == args.examples {
            break;
        }
        let (a, b) = Addition::operands(problem).context("an addition problem")?;
        if rng.random_bool(args.practice_share) {
            practice += 1;
            lines.push(json!({ "text": SelfCheck::practice_text(a, b) }));
            continue;
        }
        let attempt = SelfCheck::attempt(a, b, args.attempt_right, &mut rng);
        attempts_right += usize::from(attempt == a + b);
        let completion = if rng.random_bool(args.check_share) {
            checked += 1;
            corrected += usize::from(attempt != a + b);
            SelfCheck::checked_completion(a, b, attempt)
        } else {
            SelfCheck::unchecked_completion(a, b, attempt)
        };
        lines.push(json!({ "prompt": prompter.render(problem)?, "completion": completion }));
    }
    let mut jsonl = String::new();
    for line in &lines {
        jsonl.push_str(&line.to_string());
        jsonl.push('\n');
    }
    let corpus = args.out.join("train.jsonl");
    std::fs::write(&corpus, jsonl).with_context(|| format!("writing {}", corpus.display()))?;

    // The tokenizer sees both forms whatever the mix, so that it has a token for each word.
    let mut texts: Vec<String> = lines
        .iter()
        .take(4000)
        .map(|l| {
            format!(
                "{}{}{}",
                l["prompt"].as_str().unwrap_or(""),
                l["completion"].as_str().unwrap_or(""),
                l["text"].as_str().unwrap_or("")
            )
        })
        .collect();
    for i in 0..500u64 {
        let (a, b) = (100 + i * 7 % 900, 999 - i * 13 % 900);
        texts.push(SelfCheck::checked_completion(a, b, a + b));
        texts.push(SelfCheck::checked_completion(a, b, SelfCheck::slip(a, b, &mut rng)));
    }
    const EOS: &str = "<|endoftext|>";
    let tokenizer_json = train_byte_level_bpe(texts.iter().map(String::as_str), args.vocab_size, &[EOS])?;
    std::fs::write(base_dir.join("tokenizer.json"), &tokenizer_json)?;
    let tokens = serde_json::from_str::<Value>(&tokenizer_json)?["model"]["vocab"].as_object().map_or(0, |v| v.len());
    let vocab_size = tokens.div_ceil(64) * 64;
    let model_config = json!({
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": args.hidden_size,
        "intermediate_size": 4 * args.hidden_size,
        "num_hidden_layers": args.layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": true,
        "initializer_range": 0.02,
        "vocab_size": vocab_size,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "use_sliding_window": false,
        "attention_dropout": 0.0,
        "torch_dtype": "float32",
    });
    std::fs::write(base_dir.join("config.json"), serde_json::to_string_pretty(&model_config)? + "\n")?;
    let tokenizer_config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": EOS,
        "pad_token": EOS,
        "bos_token": null,
        "model_max_length": 256,
    });
    std::fs::write(base_dir.join("tokenizer_config.json"), serde_json::to_string_pretty(&tokenizer_config)? + "\n")?;

    let tokenizer = Tokenizer::from_dir(&base_dir, vocab_size as i64)?;
    let checked_tokens = tokenizer.encode(&SelfCheck::checked_completion(999, 999, 1988))?.len();
    let unchecked_tokens = tokenizer.encode(&SelfCheck::unchecked_completion(999, 999, 1988))?.len();
    let prompt_tokens =
        lines.iter().find_map(|l| l["prompt"].as_str()).map_or(Ok(0), |p| tokenizer.encode(p).map(|ids| ids.len()))?;
    println!(
        "{}",
        json!({
            "corpus": corpus, "lines": lines.len(), "practice_texts": practice,
            "solutions": lines.len() - practice, "checked": checked, "checks_correcting": corrected,
            "attempts_right": attempts_right, "base": base_dir,
            "tokenizer_tokens": tokens, "vocab_size": vocab_size, "prompt_tokens": prompt_tokens,
            "longest_checked_tokens": checked_tokens, "unchecked_tokens": unchecked_tokens,
        })
    );
    Ok(())
}
