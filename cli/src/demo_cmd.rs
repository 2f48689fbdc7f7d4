//! `aha demo`: the built-in default, a miniature DeepSeek-R1-Zero on a laptop CPU.
//!
//! The bundled base model (`assets/demo-model`, about a million parameters) was pretrained with
//! `aha sft` on 3-digit additions answered in two ways: a worked, column-by-column solution with
//! carries, and a bare guess (see `aha_datasets::Addition`). Like a real base model it usually
//! guesses, and its guesses are mostly wrong. GRPO with nothing but a correctness reward
//! (`examples/configs/demo.toml`) then teaches it to work sums out: accuracy climbs while the
//! answers grow longer. The demo measures held-out accuracy before and after (greedy, and pass@1
//! at temperature 1 over several samples), the curve of completion length, and the share of
//! completions that work the sum out; it prints them and writes them into the run directory
//! (`demo.json`, `demo.md`) next to the traces and the report.
//!
//! `aha demo corpus --out DIR` writes what the base model is made from (the pretraining corpus,
//! a tokenizer learned from it, config.json); `scripts/make_demo_model.sh` runs it and `aha sft`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use aha_datasets::{Addition, Dataset, Prompter};
use aha_grpo::{build_checker, load_problems, EvalReport, EvalSettings, HeldOut, TrainConfig, TrainOutcome};
use aha_model::{train_byte_level_bpe, CausalLM, Tokenizer};
use aha_rewards::{CombinedChecker, Registry};
use aha_traces::{TraceReader, TRACE_FILE};

use crate::train_cmd::{finished, number, Progress};

#[path = "aha_moment.rs"]
pub mod aha_moment;
#[path = "demo_summary.rs"]
pub(crate) mod summary;
#[path = "tools_demo.rs"]
pub mod tools_demo;

/// The demo's training configuration (also usable with `aha train`).
const DEMO_CONFIG: &str = include_str!("../../examples/configs/demo.toml");
/// Where `DEMO_CONFIG` lives, for error messages.
const DEMO_CONFIG_NAME: &str = "examples/configs/demo.toml";
/// The phrase that marks a worked solution, counted per step in the traces.
const WORKED_MARK: &str = Addition::WORKED_MARK;

#[derive(Args)]
pub struct DemoArgs {
    #[command(subcommand)]
    action: Option<DemoAction>,
    #[command(flatten)]
    run: RunArgs,
}

/// The command line of a demo run (`aha demo`, `aha demo aha-moment` and `aha demo tools`).
#[derive(Args)]
pub struct RunArgs {
    /// Seed of the training run (data order, sampling).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Override a key of the demo's training configuration (examples/configs/demo.toml, or
    /// aha-moment.toml for `aha demo aha-moment`, tools.toml for `aha demo tools`), e.g.
    /// `--set run.steps=20` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// The run directory (default: runs/<demo>-seed<SEED>-<time>, <demo> being demo,
    /// aha-moment or tools).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Completions per held-out problem for pass@1 at temperature 1.
    #[arg(long, default_value_t = 4)]
    eval_samples: usize,
}

#[derive(Subcommand)]
enum DemoAction {
    /// Write the demo base model's pretraining corpus (train.jsonl), its tokenizer and config.json
    /// (DIR/base), for `aha sft` (see scripts/make_demo_model.sh).
    Corpus(CorpusArgs),
    /// The "aha moment": self-checking ("Wait, let me check:") that emerges under RL rewarded
    /// only for right answers (a second base model, assets/aha-moment-model).
    AhaMoment(aha_moment::AhaMomentArgs),
    /// Tool use that pays off: calls to the Python tool (`print( a * b, end='')`) that grow under
    /// RL rewarded only for right answers, on 3-digit products (a third base model,
    /// assets/tools-model).
    Tools(tools_demo::ToolsArgs),
}

#[derive(Args)]
struct CorpusArgs {
    /// Output folder (created).
    #[arg(long)]
    out: PathBuf,
    /// Number of prompt/completion examples.
    #[arg(long, default_value_t = 60_000)]
    examples: usize,
    /// Share of examples answered with a worked solution; the rest are bare (correct) answers.
    #[arg(long, default_value_t = 0.3)]
    worked_share: f64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Largest tokenizer vocabulary.
    #[arg(long, default_value_t = 512)]
    vocab_size: usize,
}

/// `assets`: aha's assets folder (`aha_sandbox::assets`), which holds the demos' base models.
pub fn run(args: DemoArgs, assets: &Path) -> Result<()> {
    match args.action {
        Some(DemoAction::Corpus(corpus)) => write_corpus(&corpus),
        Some(DemoAction::AhaMoment(aha)) => aha_moment::run(aha, assets),
        Some(DemoAction::Tools(tools)) => tools_demo::run(tools, assets),
        None => demo(&args.run, assets),
    }
}

/// One of the bundled demos: its base model and its training configuration.
pub(crate) struct DemoKind {
    /// Its name in messages and in the default run directory (`runs/<name>-seed<N>-<time>`).
    pub name: &'static str,
    /// The base model's folder in the assets folder.
    pub model: &'static str,
    /// The script that makes the base model, named when it is missing.
    pub make_script: &'static str,
    /// The training configuration (TOML text) and where it lives, for error messages.
    pub config: &'static str,
    pub config_name: &'static str,
}

const DEMO: DemoKind = DemoKind {
    name: "demo",
    model: "demo-model",
    make_script: "scripts/make_demo_model.sh",
    config: DEMO_CONFIG,
    config_name: DEMO_CONFIG_NAME,
};

/// What every demo sets up before training: the base model, the run's configuration (the demo's
/// file with the command line's seed, run directory and overrides), the checker and the held-out
/// problems, evaluated as the trainer would.
pub(crate) struct DemoRun {
    pub started: Instant,
    pub seed: u64,
    pub model_dir: PathBuf,
    pub config: TrainConfig,
    pub held_out: HeldOut,
    tokenizer: Tokenizer,
    checker: CombinedChecker,
    label: Option<String>,
    eval_samples: usize,
}

/// A finished demo training run.
pub(crate) struct Trained {
    pub outcome: TrainOutcome,
    pub checkpoint: PathBuf,
    pub model: CausalLM,
    pub train_seconds: f64,
}

impl DemoRun {
    /// Sets `kind` up from `args`, its base model read from `assets`; returns the base model too.
    pub fn set_up(kind: &DemoKind, args: &RunArgs, assets: &Path) -> Result<(Self, CausalLM)> {
        let started = Instant::now();
        let model_dir = assets.join(kind.model);
        let model_dir = model_dir.canonicalize().unwrap_or(model_dir);
        if !model_dir.join("model.safetensors").is_file() {
            bail!(
                "the {} base model is missing: {} ({} makes it)",
                kind.name,
                model_dir.join("model.safetensors").display(),
                kind.make_script
            );
        }
        let out = args.out.clone().unwrap_or_else(|| {
            let time = chrono::Local::now().format("%Y%m%d-%H%M%S");
            PathBuf::from(format!("runs/{}-seed{}-{time}", kind.name, args.seed))
        });
        let mut overrides = vec![
            format!("model.path={}", toml_string(&model_dir.display().to_string())),
            format!("run.seed={}", args.seed),
            format!("run.output_dir={}", toml_string(&out.display().to_string())),
        ];
        overrides.extend(args.overrides.iter().cloned());
        let config = TrainConfig::from_toml(kind.config, kind.config_name, &overrides)?;

        // The held-out problems and the checker, as the trainer sees them.
        let checker = build_checker(&config, &Registry::with_builtins())?;
        let (_, eval_set) = load_problems(&config, &checker)?;
        let base = CausalLM::load(&model_dir, config.model.load_options(false))
            .with_context(|| format!("loading {}", model_dir.display()))?;
        let tokenizer = Tokenizer::from_dir(&model_dir, base.config().vocab_size)?;
        let prompter = Prompter::new(&config.data.template, &model_dir)?;
        let held_out = HeldOut::new(&eval_set.problems, &prompter, &tokenizer, config.sampling.max_prompt_tokens)?;
        let label = config.rewards.checkers.first().map(|c| c.reported_label());
        let run = DemoRun {
            started,
            seed: args.seed,
            model_dir,
            config,
            held_out,
            tokenizer,
            checker,
            label,
            eval_samples: args.eval_samples,
        };
        Ok((run, base))
    }

    /// `model`'s completions of the held-out problems: greedy (one each), and at temperature 1
    /// (`--eval-samples` each).
    pub fn evaluate(&self, model: &CausalLM) -> Result<(EvalReport, EvalReport)> {
        let sampling = &self.config.sampling;
        let settings = |temperature: f64| EvalSettings {
            temperature,
            max_new_tokens: sampling.max_new_tokens,
            samples: self.eval_samples,
            seed: 1_000_003,
            stop_strings: sampling.stop_strings.clone(),
            engine: sampling.engine(),
            tools: self.config.tools.python.clone(),
        };
        let label = self.label.as_deref();
        let greedy = self.held_out.evaluate(model, &self.tokenizer, &self.checker, label, &settings(0.0))?;
        let sampled = self.held_out.evaluate(model, &self.tokenizer, &self.checker, label, &settings(1.0))?;
        Ok((greedy, sampled))
    }

    /// Runs the demo's GRPO training (a progress line a step) and loads the trained model.
    pub fn train(&self) -> Result<Trained> {
        let progress = Progress::new(self.config.run.steps);
        let train_started = Instant::now();
        let outcome = aha_grpo::train(self.config.clone(), false, |metrics| {
            let summary = format!(
                "accuracy {:.3} length {:.1}",
                number(metrics, "accuracy"),
                number(metrics, "completion_length_mean")
            );
            progress.step(metrics, summary);
        })?;
        finished(progress, outcome.clone());
        let train_seconds = train_started.elapsed().as_secs_f64();
        let checkpoint = outcome.last_checkpoint.clone().context("the run saved no checkpoint")?;
        let model = CausalLM::load(&checkpoint, self.config.model.load_options(false))?;
        Ok(Trained { outcome, checkpoint, model, train_seconds })
    }

    /// The summary every demo writes (`demo.json`): the run, the measurements `before` and
    /// `after` training, the training `curve` and the `example`; a demo adds its own keys.
    pub fn summary(&self, trained: &Trained, before: Value, after: Value, curve: Vec<Value>, example: Value) -> Value {
        json!({
            "seed": self.seed,
            "steps": self.config.run.steps,
            "before": before,
            "after": after,
            "curve": curve,
            "train_seconds": trained.train_seconds,
            "wall_seconds": self.started.elapsed().as_secs_f64(),
            "run_dir": trained.outcome.run_dir,
            "checkpoint": trained.checkpoint,
            "example": example,
        })
    }

    /// Prints the demo's summary and writes it into the run directory (`demo.md`, `demo.json`).
    pub fn report(&self, trained: &Trained, text: &str, summary: &Value) -> Result<()> {
        print!("{text}");
        let run_dir = &trained.outcome.run_dir;
        std::fs::write(run_dir.join("demo.md"), text)?;
        std::fs::write(run_dir.join("demo.json"), serde_json::to_string_pretty(summary)? + "\n")?;
        Ok(())
    }
}

/// What one evaluation of the demo measures.
struct Measured {
    greedy: EvalReport,
    sampled: EvalReport,
}

impl Measured {
    fn worked_share(report: &EvalReport) -> f64 {
        let worked = report.completions.iter().filter(|c| Addition::is_worked(&c.text)).count();
        worked as f64 / report.completions.len().max(1) as f64
    }

    fn to_json(&self) -> Value {
        json!({
            "pass_at_1_t1": self.sampled.accuracy,
            "greedy_accuracy": self.greedy.accuracy,
            "worked_share_t1": Self::worked_share(&self.sampled),
            "worked_share_greedy": Self::worked_share(&self.greedy),
            "length_mean_t1": self.sampled.length_mean,
            "length_mean_greedy": self.greedy.length_mean,
            "problems": self.sampled.problems,
            "samples": self.sampled.completions.len(),
        })
    }
}

fn demo(args: &RunArgs, assets: &Path) -> Result<()> {
    let (run, base) = DemoRun::set_up(&DEMO, args, assets)?;
    let measure = |model: &CausalLM| -> Result<Measured> {
        let (greedy, sampled) = run.evaluate(model)?;
        Ok(Measured { greedy, sampled })
    };

    println!(
        "aha demo: a miniature DeepSeek-R1-Zero. Base model {} ({:.2}M parameters), 3-digit addition in the \
         R1-Zero format, rewarded only for a right answer; seed {}.",
        run.model_dir.display(),
        base.num_parameters() as f64 / 1e6,
        run.seed
    );
    eprintln!("evaluating the base model on {} held-out problems...", run.held_out.len());
    let before = measure(&base)?;
    drop(base);
    eprintln!(
        "before: pass@1 at T=1 {:.1}%, greedy {:.1}%, worked solutions {:.1}%",
        100.0 * before.sampled.accuracy,
        100.0 * before.greedy.accuracy,
        100.0 * Measured::worked_share(&before.sampled)
    );

    let trained = run.train()?;
    eprintln!("evaluating the trained model...");
    let after = measure(&trained.model)?;

    let run_dir = &trained.outcome.run_dir;
    let curve = training_curve(run_dir)?;
    let example = before_and_after(&run.held_out, &before.greedy, &after.greedy);
    let summary = run.summary(&trained, before.to_json(), after.to_json(), curve, example);
    run.report(&trained, &summary_text(&summary, run_dir), &summary)
}

/// Per step: reward, accuracy and mean length (metrics.jsonl), and the share of worked
/// solutions among the sampled completions (traces.sqlite).
fn training_curve(run_dir: &Path) -> Result<Vec<Value>> {
    let worked: std::collections::BTreeMap<u64, f64> = TraceReader::open(&run_dir.join(TRACE_FILE))?
        .statistics(&[WORKED_MARK.to_string()])?
        .into_iter()
        .map(|s| (s.step, s.phrases.get(WORKED_MARK).copied().unwrap_or(0.0)))
        .collect();
    summary::training_curve(run_dir, |step| {
        [("worked_share".to_string(), json!(worked.get(&step)))].into_iter().collect()
    })
}

fn summary_text(summary: &Value, run_dir: &Path) -> String {
    use summary::Format::{Number, Percent};
    let mut text = summary::Summary::new(summary);
    text.before_and_after(&[
        ("pass@1 at temperature 1", "/pass_at_1_t1", Percent),
        ("greedy accuracy", "/greedy_accuracy", Percent),
        ("worked solutions (T=1)", "/worked_share_t1", Percent),
        ("mean length, tokens (T=1)", "/length_mean_t1", Number),
    ]);
    text.training(
        &[("accuracy", "accuracy", Percent), ("length", "length", Number), ("worked", "worked_share", Percent)],
        "",
    );
    text.example("one held-out problem, greedy");
    text.finish(run_dir, "show --step 1..5")
}

/// The first held-out problem whose greedy answer went from a wrong guess to a right worked
/// solution (else the first problem): what the change looks like on one example.
fn before_and_after(held_out: &HeldOut, before: &EvalReport, after: &EvalReport) -> Value {
    let pairs = || before.completions.iter().zip(&after.completions);
    let chosen = pairs()
        .find(|(b, a)| !b.correct && a.correct && !Addition::is_worked(&b.text) && Addition::is_worked(&a.text))
        .or_else(|| pairs().next());
    chosen.map_or(Value::Null, |(b, a)| {
        json!({
            "question": held_out.problem(b.problem).map_or("", |p| p.question.as_str()),
            "before": b.text, "before_correct": b.correct,
            "after": a.text, "after_correct": a.correct,
        })
    })
}

/// A TOML string literal (for `--set` values that are paths).
pub(crate) fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// The demo base model's pretraining set: problems of the demo's task (never its evaluation
/// problems), each answered by a worked solution with probability `worked_share` and by a bare
/// answer otherwise; a tokenizer learned from it; config.json of a small Qwen2.
fn write_corpus(args: &CorpusArgs) -> Result<()> {
    if !(0.0..=1.0).contains(&args.worked_share) {
        bail!("--worked-share must be in [0, 1], got {}", args.worked_share);
    }
    let config = TrainConfig::from_toml(DEMO_CONFIG, DEMO_CONFIG_NAME, &[])?;
    // The demo's evaluation problems, exactly as `aha demo` (the trainer) loads them.
    let (_, eval_set) = load_problems(&config, &build_checker(&config, &Registry::with_builtins())?)?;
    let base_dir = args.out.join("base");
    std::fs::create_dir_all(&base_dir).with_context(|| format!("creating {}", base_dir.display()))?;
    let prompter = Prompter::new(&config.data.template, &base_dir)?;
    let task = Addition { digits: 3 };
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let mut lines = Vec::with_capacity(args.examples);
    let mut worked = 0;
    let (candidates, _) =
        Dataset::from_problems(task.generate(args.examples * 2, args.seed)?).without_questions_of(&eval_set);
    for problem in &candidates.problems {
        if lines.len() == args.examples {
            break;
        }
        let (a, b) = Addition::operands(problem).context("an addition problem")?;
        let completion = if rng.random_bool(args.worked_share) {
            worked += 1;
            Addition::worked_completion(a, b)
        } else {
            Addition::guessed_completion(a + b)
        };
        lines.push(json!({ "prompt": prompter.render(problem)?, "completion": completion }));
    }
    // The tokenizer sees both answer forms whatever the mix, so that it has a token for each word.
    let mut texts: Vec<String> = lines
        .iter()
        .take(4000)
        .map(|l| format!("{}{}", l["prompt"].as_str().unwrap_or(""), l["completion"].as_str().unwrap_or("")))
        .collect();
    texts.extend((0..500u64).map(|i| Addition::worked_completion(100 + i * 7 % 900, 999 - i * 13 % 900)));
    let shape = BaseShape { hidden: 128, layers: 4, max_positions: 512, vocab_limit: args.vocab_size };
    let (corpus, tokens, vocab_size) = write_base_model(&args.out, &base_dir, &lines, &texts, &shape)?;

    // How long the two forms are in tokens (the demo's max_new_tokens must fit the worked one).
    let tokenizer = Tokenizer::from_dir(&base_dir, vocab_size as i64)?;
    let worked_tokens = tokenizer.encode(&Addition::worked_completion(999, 999))?.len();
    let prompt_tokens = tokenizer.encode(lines[0]["prompt"].as_str().unwrap_or(""))?.len();
    println!(
        "{}",
        json!({
            "corpus": corpus, "examples": lines.len(), "worked": worked, "base": base_dir,
            "tokenizer_tokens": tokens, "vocab_size": vocab_size,
            "prompt_tokens": prompt_tokens, "longest_worked_tokens": worked_tokens,
        })
    );
    Ok(())
}

/// The shape of a demo's base model (a small Qwen2: 4 attention heads, 2 key-value heads, an
/// intermediate size of 4 x `hidden`).
pub(crate) struct BaseShape {
    pub hidden: usize,
    pub layers: usize,
    pub max_positions: usize,
    /// Largest tokenizer vocabulary.
    pub vocab_limit: usize,
}

/// What a demo's base model is made from: the corpus `out/train.jsonl` (`lines`, one JSON line
/// each) and, in `base_dir`, a byte-level BPE tokenizer learned from `tokenizer_texts`
/// (`tokenizer.json`, `tokenizer_config.json`) and the model's `config.json`. Returns the
/// corpus's path, the tokenizer's number of tokens and the model's vocabulary size (that number
/// rounded up to a multiple of 64).
pub(crate) fn write_base_model(
    out: &Path,
    base_dir: &Path,
    lines: &[Value],
    tokenizer_texts: &[String],
    shape: &BaseShape,
) -> Result<(PathBuf, usize, usize)> {
    let mut jsonl = String::new();
    for line in lines {
        jsonl.push_str(&line.to_string());
        jsonl.push('\n');
    }
    let corpus = out.join("train.jsonl");
    std::fs::write(&corpus, jsonl).with_context(|| format!("writing {}", corpus.display()))?;

    const EOS: &str = "<|endoftext|>";
    let tokenizer_json = train_byte_level_bpe(tokenizer_texts.iter().map(String::as_str), shape.vocab_limit, &[EOS])?;
    std::fs::write(base_dir.join("tokenizer.json"), &tokenizer_json)?;
    let tokens = serde_json::from_str::<Value>(&tokenizer_json)?["model"]["vocab"].as_object().map_or(0, |v| v.len());
    let vocab_size = tokens.div_ceil(64) * 64;
    let model_config = json!({
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": shape.hidden,
        "intermediate_size": 4 * shape.hidden,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "max_position_embeddings": shape.max_positions,
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
        "model_max_length": shape.max_positions,
    });
    std::fs::write(base_dir.join("tokenizer_config.json"), serde_json::to_string_pretty(&tokenizer_config)? + "\n")?;
    Ok((corpus, tokens, vocab_size))
}
