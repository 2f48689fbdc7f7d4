//! `aha demo tools`: tool use that pays off under RL. The policy may run Python in the sandbox in
//! the middle of a completion (`[tools.python]`); rewarded only for right answers, it learns to.
//!
//! The bundled base model (`assets/tools-model`) was pretrained with `aha sft` from random weights
//! on 3-digit products: most answers guess (a product of the right size, usually wrong); 30% call
//! the tool (`<python>print( 478 * 356, end='')</python>`), are shown its result exactly as the
//! engine writes it at RL time (` = 170168.`), and answer with it (see `aha_datasets::ToolUse`).
//! GRPO rewarded only for
//! a right final answer (`examples/configs/tools.toml`, the `math` checker, the tool enabled) then
//! makes the model call the tool more and more: its guesses are almost always wrong, its calls
//! almost always right. The demo measures, on held-out problems, before and after and along
//! training: accuracy (greedy and pass@1 at T=1), the share of completions that call the tool,
//! the accuracy of those that do and of those that do not, the share of calls whose result is the
//! product (the operands copied right) and of answers that copy the result; and it shows one
//! held-out problem that the base model guessed wrong and the trained model solves with the tool.
//!
//! `aha demo tools corpus --out DIR` writes what the base model is made from;
//! `scripts/make_tools_model.sh` runs it and `aha sft`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use aha_datasets::{Dataset, Multiplication, Prompter, ToolUse};
use aha_grpo::{build_checker, load_problems, HeldOut, TrainConfig};
use aha_model::{CausalLM, Tokenizer};
use aha_rewards::Registry;

use super::summary::{self, share, CompletionStats};
use super::{write_base_model, BaseShape, DemoKind, DemoRun, RunArgs};

/// The demo's training configuration (also usable with `aha train`).
const CONFIG: &str = include_str!("../../examples/configs/tools.toml");
const CONFIG_NAME: &str = "examples/configs/tools.toml";
const TOOLS: DemoKind = DemoKind {
    name: "tools",
    model: "tools-model",
    make_script: "scripts/make_tools_model.sh",
    config: CONFIG,
    config_name: CONFIG_NAME,
};

#[derive(Args)]
pub struct ToolsArgs {
    #[command(subcommand)]
    action: Option<ToolsAction>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum ToolsAction {
    /// Write the base model's pretraining corpus (train.jsonl), its tokenizer and config.json
    /// (DIR/base), for `aha sft` (see scripts/make_tools_model.sh).
    Corpus(CorpusArgs),
}

#[derive(Args)]
struct CorpusArgs {
    /// Output folder (created).
    #[arg(long)]
    out: PathBuf,
    /// Number of solutions.
    #[arg(long, default_value_t = 80_000)]
    examples: usize,
    /// Share of solutions that call the tool and copy its result; the rest guess.
    #[arg(long, default_value_t = 0.3)]
    tool_share: f64,
    /// Probability that a guess is right.
    #[arg(long, default_value_t = 0.05)]
    guess_right: f64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Largest tokenizer vocabulary.
    #[arg(long, default_value_t = 512)]
    vocab_size: usize,
    /// Hidden size of the model (config.json); intermediate 4x.
    #[arg(long, default_value_t = 128)]
    hidden_size: usize,
    #[arg(long, default_value_t = 4)]
    layers: usize,
}

pub fn run(args: ToolsArgs, assets: &Path) -> Result<()> {
    match &args.action {
        Some(ToolsAction::Corpus(corpus)) => write_corpus(corpus),
        None => demo(&args.run, assets),
    }
}

/// The tool-use statistics of a set of completions, each with its gold answer.
#[derive(Debug, Default, Clone, Copy)]
pub struct ToolStats {
    pub completions: usize,
    /// Completions that call the tool, and how many of them are right.
    pub tool_uses: usize,
    pub tool_right: usize,
    /// Calls whose result is the gold answer (the operands copied right).
    pub outputs_right: usize,
    /// Calls whose result the answer copies.
    pub copies: usize,
    /// Completions without a call that are right.
    pub guesses_right: usize,
}

impl ToolStats {
    pub fn tool_share(&self) -> f64 {
        self.tool_uses as f64 / self.completions.max(1) as f64
    }
}

impl CompletionStats for ToolStats {
    fn add(&mut self, completion: &str, gold: &str) {
        let read = ToolUse::analyse(completion);
        let right = read.final_answer.as_deref() == Some(gold);
        self.completions += 1;
        if read.uses_tool {
            self.tool_uses += 1;
            self.tool_right += usize::from(right);
            self.outputs_right += usize::from(read.output.as_deref() == Some(gold));
            self.copies += usize::from(read.copies_output());
        } else {
            self.guesses_right += usize::from(right);
        }
    }

    fn to_json(self) -> Value {
        json!({
            "tool_share": share(self.tool_uses, self.completions),
            "accuracy_with_tool": share(self.tool_right, self.tool_uses),
            "accuracy_without_tool": share(self.guesses_right, self.completions - self.tool_uses),
            "output_right_share_of_calls": share(self.outputs_right, self.tool_uses),
            "copy_share_of_calls": share(self.copies, self.tool_uses),
            "completions": self.completions,
            "tool_uses": self.tool_uses,
        })
    }
}

type Measured = summary::Measured<ToolStats>;

fn demo(args: &RunArgs, assets: &Path) -> Result<()> {
    let (run, base) = DemoRun::set_up(&TOOLS, args, assets)?;
    let measure = |model: &CausalLM| -> Result<Measured> {
        let (greedy, sampled) = run.evaluate(model)?;
        Ok(Measured::new(&run.held_out, greedy, sampled))
    };

    println!(
        "aha demo tools: tool use paying off under RL. Base model {} ({:.2}M parameters), 3-digit \
         products, a Python call ({}...{}) in about one answer in three, the rest guesses; rewarded only \
         for a right final answer; seed {}.",
        run.model_dir.display(),
        base.num_parameters() as f64 / 1e6,
        ToolUse::CALL_OPEN,
        ToolUse::CALL_CLOSE,
        run.seed
    );
    eprintln!("evaluating the base model on {} held-out problems...", run.held_out.len());
    let before = measure(&base)?;
    drop(base);
    eprintln!(
        "before: pass@1 at T=1 {:.1}%, greedy {:.1}%, tool use {:.1}%",
        100.0 * before.sampled.accuracy,
        100.0 * before.greedy.accuracy,
        100.0 * before.sampled_stats.tool_share()
    );

    let trained = run.train()?;
    eprintln!("evaluating the trained model...");
    let after = measure(&trained.model)?;

    let run_dir = &trained.outcome.run_dir;
    let curve = training_curve(run_dir)?;
    let example = solved_with_the_tool(&run.held_out, &before, &after);
    let mut summary = run.summary(&trained, before.to_json(), after.to_json(), curve, example);
    summary["call"] = json!(ToolUse::CALL_OPEN);
    run.report(&trained, &summary_text(&summary, run_dir), &summary)
}

/// Per step: reward, accuracy and mean length (metrics.jsonl), and the tool-use statistics of the
/// sampled completions (traces.sqlite, against each problem's gold answer).
fn training_curve(run_dir: &Path) -> Result<Vec<Value>> {
    summary::stats_curve::<ToolStats>(run_dir, &["tool_share", "accuracy_with_tool", "accuracy_without_tool"])
}

fn summary_text(summary: &Value, run_dir: &Path) -> String {
    use summary::Format::{Number, Percent};
    let mut text = summary::Summary::new(summary);
    text.before_and_after(&[
        ("pass@1 at temperature 1", "/pass_at_1_t1", Percent),
        ("greedy accuracy", "/greedy_accuracy", Percent),
        ("completions calling the tool (T=1)", "/t1/tool_share", Percent),
        ("  accuracy with the tool (T=1)", "/t1/accuracy_with_tool", Percent),
        ("  accuracy without the tool (T=1)", "/t1/accuracy_without_tool", Percent),
        ("  calls whose result is right (T=1)", "/t1/output_right_share_of_calls", Percent),
        ("  calls whose result is copied (T=1)", "/t1/copy_share_of_calls", Percent),
        ("completions calling the tool (greedy)", "/greedy/tool_share", Percent),
        ("  accuracy with the tool (greedy)", "/greedy/accuracy_with_tool", Percent),
        ("mean length, tokens (T=1)", "/length_mean_t1", Number),
    ]);
    text.training(
        &[
            ("accuracy", "accuracy", Percent),
            ("length", "length", Number),
            ("tool use", "tool_share", Percent),
            ("right with", "accuracy_with_tool", Percent),
            ("right without", "accuracy_without_tool", Percent),
        ],
        "(per step, over the sampled training completions; right with/without: accuracy with and without the tool)",
    );
    text.example("one held-out problem, greedy, that the trained model solves with the tool");
    text.finish(run_dir, "stats")
}

/// A held-out problem whose trained greedy answer calls the tool and is right (preferring one the
/// base model guessed wrong); else the first right call at T=1.
fn solved_with_the_tool(held_out: &HeldOut, before: &Measured, after: &Measured) -> Value {
    let solves = |text: &str, correct: bool| correct && ToolUse::uses_tool(text);
    let pairs = || before.greedy.completions.iter().zip(&after.greedy.completions);
    let chosen = pairs()
        .find(|(b, a)| !b.correct && !ToolUse::uses_tool(&b.text) && solves(&a.text, a.correct))
        .or_else(|| pairs().find(|(_, a)| solves(&a.text, a.correct)));
    let (before_text, before_correct, after_completion, greedy) = match chosen {
        Some((b, a)) => (b.text.as_str(), b.correct, a, true),
        None => match after.sampled.completions.iter().find(|a| solves(&a.text, a.correct)) {
            Some(a) => {
                let b = before.greedy.completions.iter().find(|b| b.problem == a.problem);
                (b.map_or("", |b| b.text.as_str()), b.is_some_and(|b| b.correct), a, false)
            }
            None => return Value::Null,
        },
    };
    json!({
        "question": held_out.problem(after_completion.problem).map_or("", |p| p.question.as_str()),
        "answer": summary::gold(held_out, after_completion.problem),
        "before": before_text, "before_correct": before_correct,
        "after": after_completion.text, "after_correct": after_completion.correct,
        "greedy": greedy,
    })
}

/// The base model's pretraining set: multiplication problems (never the demo's evaluation
/// problems), each answered by a call to the tool with probability `tool_share` (its result
/// written with the `[tools.python]` delimiters of the demo's configuration, exactly as the engine
/// injects it) and by a guess otherwise; a tokenizer learned from it; config.json of a small
/// Qwen2. Checks that a call's completion tokenizes the way the engine builds it at RL time (the
/// model's text, the result tokenized alone, the model's text again).
fn write_corpus(args: &CorpusArgs) -> Result<()> {
    for (name, value) in [("--tool-share", args.tool_share), ("--guess-right", args.guess_right)] {
        if !(0.0..=1.0).contains(&value) {
            bail!("{name} must be in [0, 1], got {value}");
        }
    }
    let config = TrainConfig::from_toml(CONFIG, CONFIG_NAME, &[])?;
    let tools = &config.tools.python;
    let (open, close) = (tools.output_open.as_str(), tools.output_close.as_str());
    if (open, close) != (ToolUse::OUTPUT_OPEN, ToolUse::OUTPUT_CLOSE) {
        bail!(
            "{CONFIG_NAME} writes a call's result as {open:?}...{close:?}, the corpus as {:?}...{:?}",
            ToolUse::OUTPUT_OPEN,
            ToolUse::OUTPUT_CLOSE
        );
    }
    let (_, eval_set) = load_problems(&config, &build_checker(&config, &Registry::with_builtins())?)?;
    let base_dir = args.out.join("base");
    std::fs::create_dir_all(&base_dir).with_context(|| format!("creating {}", base_dir.display()))?;
    let prompter = Prompter::new(&config.data.template, &base_dir)?;
    let task = Multiplication { digits: 3 };
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let mut lines = Vec::with_capacity(args.examples);
    let (mut calls, mut guesses_right) = (0, 0);
    let (candidates, _) =
        Dataset::from_problems(task.generate(args.examples * 2, args.seed)?).without_questions_of(&eval_set);
    for problem in &candidates.problems {
        if lines.len() == args.examples {
            break;
        }
        let (a, b) = Multiplication::operands(problem).context("a multiplication problem")?;
        let completion = if rng.random_bool(args.tool_share) {
            calls += 1;
            ToolUse::tool_completion(a, b)
        } else {
            let guess = ToolUse::guess(a, b, args.guess_right, &mut rng);
            guesses_right += usize::from(guess == a * b);
            ToolUse::guessed_completion(a, b, guess)
        };
        lines.push(json!({ "prompt": prompter.render(problem)?, "completion": completion }));
    }
    // The tokenizer sees both forms whatever the mix, so that it has a token for each word.
    let mut texts: Vec<String> = lines
        .iter()
        .take(4000)
        .map(|l| format!("{}{}", l["prompt"].as_str().unwrap_or(""), l["completion"].as_str().unwrap_or("")))
        .collect();
    texts.extend((0..500u64).map(|i| ToolUse::tool_completion(100 + i * 7 % 900, 999 - i * 13 % 900)));
    let shape =
        BaseShape { hidden: args.hidden_size, layers: args.layers, max_positions: 256, vocab_limit: args.vocab_size };
    let (corpus, tokens, vocab_size) = write_base_model(&args.out, &base_dir, &lines, &texts, &shape)?;

    // `aha sft` tokenizes a completion in one piece; at RL time the engine appends the result's
    // tokens (each delimiter and the stdout tokenized alone) to the model's own. They must agree,
    // or the model meets token sequences after a real call that it never saw in pretraining.
    let tokenizer = Tokenizer::from_dir(&base_dir, vocab_size as i64)?;
    for (a, b) in [(478, 356), (999, 999), (100, 100), (123, 987)] {
        let whole = tokenizer.encode(&ToolUse::tool_completion(a, b))?;
        let [model, _, rest] = ToolUse::tool_completion_parts(a, b);
        let mut pieces = tokenizer.encode(&model)?;
        for piece in [open, ToolUse::stdout(a, b).as_str(), close, rest.as_str()] {
            pieces.extend(tokenizer.encode(piece)?);
        }
        if whole != pieces {
            bail!(
                "a call's completion tokenizes differently in one piece ({whole:?}) and as the engine builds it \
                 ({pieces:?}); choose tools.python.output_open/output_close in {CONFIG_NAME} that start and end \
                 on token boundaries"
            );
        }
    }
    let tool_tokens = tokenizer.encode(&ToolUse::tool_completion(999, 999))?.len();
    let guess_tokens = tokenizer.encode(&ToolUse::guessed_completion(999, 999, 998_001))?.len();
    let prompt_tokens =
        lines.iter().find_map(|l| l["prompt"].as_str()).map_or(Ok(0), |p| tokenizer.encode(p).map(|ids| ids.len()))?;
    println!(
        "{}",
        json!({
            "corpus": corpus, "solutions": lines.len(), "calls": calls, "guesses": lines.len() - calls, "guesses_right": guesses_right, "base": base_dir,
            "tokenizer_tokens": tokens, "vocab_size": vocab_size, "prompt_tokens": prompt_tokens,
            "tool_completion_tokens": tool_tokens, "guess_tokens": guess_tokens,
        })
    );
    Ok(())
}
