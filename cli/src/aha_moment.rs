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

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use aha_datasets::{Addition, Dataset, Prompter, SelfCheck};
use aha_grpo::{build_checker, load_problems, HeldOut, TrainConfig};
use aha_model::{CausalLM, Tokenizer};
use aha_rewards::Registry;

use super::summary::{self, share, CompletionStats};
use super::{write_base_model, BaseShape, DemoKind, DemoRun, RunArgs};

/// The demo's training configuration (also usable with `aha train`).
const CONFIG: &str = include_str!("../../examples/configs/aha-moment.toml");
const CONFIG_NAME: &str = "examples/configs/aha-moment.toml";
const AHA_MOMENT: DemoKind = DemoKind {
    name: "aha-moment",
    model: "aha-moment-model",
    make_script: "scripts/make_aha_moment_model.sh",
    config: CONFIG,
    config_name: CONFIG_NAME,
};

#[derive(Args)]
pub struct AhaMomentArgs {
    #[command(subcommand)]
    action: Option<AhaMomentAction>,
    #[command(flatten)]
    run: RunArgs,
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

pub fn run(args: AhaMomentArgs, assets: &Path) -> Result<()> {
    match &args.action {
        Some(AhaMomentAction::Corpus(corpus)) => write_corpus(corpus),
        None => demo(&args.run, assets),
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

impl CompletionStats for CheckStats {
    fn add(&mut self, completion: &str, gold: &str) {
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

    fn to_json(self) -> Value {
        json!({
            "check_share": share(self.checks, self.completions),
            "change_share_of_checks": share(self.changes, self.checks),
            "wrong_to_right_share_of_changes": share(self.wrong_to_right, self.changes),
            "right_to_wrong_share_of_changes": share(self.right_to_wrong, self.changes),
            "accuracy_checked": share(self.checks_right, self.checks),
            "accuracy_unchecked": share(self.unchecked_right, self.completions - self.checks),
            "completions": self.completions,
            "checks": self.checks,
            "changes": self.changes,
            "wrong_to_right": self.wrong_to_right,
            "right_to_wrong": self.right_to_wrong,
        })
    }
}

type Measured = summary::Measured<CheckStats>;

fn demo(args: &RunArgs, assets: &Path) -> Result<()> {
    let (run, base) = DemoRun::set_up(&AHA_MOMENT, args, assets)?;
    let measure = |model: &CausalLM| -> Result<Measured> {
        let (greedy, sampled) = run.evaluate(model)?;
        Ok(Measured::new(&run.held_out, greedy, sampled))
    };

    println!(
        "aha demo aha-moment: self-checking emerging under RL. Base model {} ({:.2}M parameters), 3-digit \
         addition, a first attempt that the base model checks ({:?}) in about one answer in ten; \
         rewarded only for a right final answer; seed {}.",
        run.model_dir.display(),
        base.num_parameters() as f64 / 1e6,
        SelfCheck::MARK,
        run.seed
    );
    eprintln!("evaluating the base model on {} held-out problems...", run.held_out.len());
    let before = measure(&base)?;
    drop(base);
    eprintln!(
        "before: pass@1 at T=1 {:.1}%, greedy {:.1}%, self-checking {:.1}%",
        100.0 * before.sampled.accuracy,
        100.0 * before.greedy.accuracy,
        100.0 * before.sampled_stats.checks as f64 / before.sampled_stats.completions.max(1) as f64
    );

    let trained = run.train()?;
    eprintln!("evaluating the trained model...");
    let after = measure(&trained.model)?;

    let run_dir = &trained.outcome.run_dir;
    let curve = training_curve(run_dir)?;
    let example = caught_mistake(&run.held_out, &before, &after);
    let mut summary = run.summary(&trained, before.to_json(), after.to_json(), curve, example);
    summary["mark"] = json!(SelfCheck::MARK);
    run.report(&trained, &summary_text(&summary, run_dir), &summary)
}

/// Per step: reward, accuracy and mean length (metrics.jsonl), and the self-checking statistics
/// of the sampled completions (traces.sqlite, against each problem's gold answer).
fn training_curve(run_dir: &Path) -> Result<Vec<Value>> {
    summary::stats_curve::<CheckStats>(
        run_dir,
        &["check_share", "change_share_of_checks", "wrong_to_right_share_of_changes"],
    )
}

fn summary_text(summary: &Value, run_dir: &Path) -> String {
    use summary::Format::{Number, Percent};
    let mut text = summary::Summary::new(summary);
    text.before_and_after(&[
        ("pass@1 at temperature 1", "/pass_at_1_t1", Percent),
        ("greedy accuracy", "/greedy_accuracy", Percent),
        ("self-checking completions (T=1)", "/t1/check_share", Percent),
        ("  accuracy when checked (T=1)", "/t1/accuracy_checked", Percent),
        ("  accuracy when not checked (T=1)", "/t1/accuracy_unchecked", Percent),
        ("checks that change the answer", "/t1/change_share_of_checks", Percent),
        ("  of those, wrong -> right", "/t1/wrong_to_right_share_of_changes", Percent),
        ("self-checking completions (greedy)", "/greedy/check_share", Percent),
        ("mean length, tokens (T=1)", "/length_mean_t1", Number),
    ]);
    text.training(
        &[
            ("accuracy", "accuracy", Percent),
            ("length", "length", Number),
            ("checks", "check_share", Percent),
            ("changes", "change_share_of_checks", Percent),
            ("wrong->right", "wrong_to_right_share_of_changes", Percent),
        ],
        "(per step, over the sampled training completions; changes: share of checks that change the answer)",
    );
    text.example("one held-out problem, greedy, where the trained model catches its own mistake");
    text.finish(run_dir, "stats")
}

/// A held-out problem whose trained greedy answer checks a wrong first attempt and corrects it
/// (preferring one the base model got wrong); else the first greedy wrong-to-right check at T=1.
fn caught_mistake(held_out: &HeldOut, before: &Measured, after: &Measured) -> Value {
    let gold = |problem: usize| summary::gold(held_out, problem).to_string();
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
    let shape =
        BaseShape { hidden: args.hidden_size, layers: args.layers, max_positions: 256, vocab_limit: args.vocab_size };
    let (corpus, tokens, vocab_size) = write_base_model(&args.out, &base_dir, &lines, &texts, &shape)?;

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
