//! `aha`: reinforcement learning from verifiable rewards, one subcommand per job.

mod demo_cmd;
mod eval_cmd;
mod reward_cmd;
mod sandbox_cmd;
mod sft_cmd;
mod traces_cmd;
mod train_cmd;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use aha_model::{parse_device, parse_kind, CausalLM, LoadOptions, SaveOptions, Tokenizer};
use aha_rollout::{generate, FinishReason, GenerationRequest, SamplingParams};

#[derive(Parser)]
#[command(name = "aha", version, about = "Reinforcement learning from verifiable rewards (GRPO, R1-Zero style)")]
struct Cli {
    /// Intra-op threads for libtorch (default: libtorch's choice).
    #[arg(long, global = true)]
    threads: Option<i32>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the version, the libtorch build, whether CUDA is available, and the assets found.
    Doctor,
    /// Per-token log-probs of a text: {"tokens": [ids], "logprobs": [log p(t_i | t_<i) for i >= 1]}.
    Logprobs(LogprobsArgs),
    /// Sample completions of a prompt.
    Generate(GenerateArgs),
    /// Load a model and write it back in Hugging Face format (change dtype, re-shard; with
    /// --adapter, the adapter merged into the weights).
    Convert(ConvertArgs),
    /// The built-in default: a miniature R1-Zero. GRPO teaches the bundled tiny base model to work
    /// 3-digit sums out instead of guessing; accuracy before and after, length and the share of
    /// worked solutions over training. `aha demo corpus` writes the base model's pretraining set.
    Demo(demo_cmd::DemoArgs),
    /// Run untrusted programs in the WASM sandbox (CPython as python.wasm, or QuickJS).
    Sandbox(sandbox_cmd::SandboxCommand),
    /// Score JSON lines ({"completion", problem fields...}) with a reward checker: adds "reward" and "detail".
    Reward(reward_cmd::RewardArgs),
    /// Sample K completions per problem of a dataset and report pass@1, pass@k and maj@k.
    Eval(eval_cmd::EvalArgs),
    /// GRPO training: `aha train CONFIG.toml [--set key=value]...`, or `--resume RUN_DIR`.
    Train(train_cmd::TrainArgs),
    /// Supervised fine-tuning on prompt/completion or text JSON lines: `aha sft CONFIG.toml
    /// [--set key=value]...`, or `--resume RUN_DIR`.
    Sft(sft_cmd::SftArgs),
    /// Read a run's traces: steps, completions (filtered), one prompt across training,
    /// statistics (length, accuracy, reflection phrases), export, re-scoring.
    Traces(traces_cmd::TracesArgs),
    /// Write a run's self-contained HTML report (charts and a trace browser), also mid-run.
    Report(traces_cmd::ReportArgs),
}

#[derive(Args)]
struct ConvertArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Output folder (created if needed).
    #[arg(long)]
    out: PathBuf,
    /// Shard above this many MiB, with a model.safetensors.index.json.
    #[arg(long, default_value_t = 5120)]
    max_shard_mb: u64,
}

#[derive(Args)]
struct ModelArgs {
    /// Hugging Face model folder (config.json, *.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// dtype of the weights and forward pass: f32, bf16 or f16 (log-probs are always fp32).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// dtype of the matrix products when narrower than --dtype (bf16 over f32: mixed precision,
    /// as torch.autocast). Default: --dtype.
    #[arg(long)]
    compute_dtype: Option<String>,
    /// A LoRA adapter folder (PEFT's adapter_model.safetensors and adapter_config.json) for the
    /// model in --model. Scoring (logprobs) runs it beside the weights, as PEFT does; generation
    /// and convert merge it into them once.
    #[arg(long)]
    adapter: Option<PathBuf>,
}

#[derive(Args)]
struct LogprobsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The text to score; no special tokens are added.
    #[arg(long)]
    text: String,
    /// Logits are divided by this before the log-softmax.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt text; no special tokens are added.
    #[arg(long)]
    prompt: String,
    /// Number of completions.
    #[arg(long, default_value_t = 1)]
    n: usize,
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// 0 means greedy.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// 0 means no top-k filter.
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 0.0)]
    min_p: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// One JSON line per completion: {"text", "token_ids", "logprobs", "finish_reason"}.
    #[arg(long)]
    json: bool,
}

/// glibc's malloc by default serves blocks over a threshold (128 KiB, raised on the fly up to
/// 32 MiB) with fresh `mmap`s and trims the heap top back to the kernel at twice that threshold.
/// A GRPO step frees and re-allocates the same large activation buffers every pass, so each
/// step paid page faults and kernel page zeroing again (about 9% of CPU samples in a profile of
/// the tiny bench). Fixed settings keep those pages: on the tiny model a step went from
/// 0.19-0.24 s to 0.13-0.14 s (generation and training alike), on the 24.5M model by about 1%.
/// The price: up to 1 GiB of freed memory stays mapped until the process ends.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's tunables; it is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

fn main() {
    keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("AHA_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in a log file or a pipe.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    if let Some(threads) = cli.threads {
        tch::set_num_threads(threads);
    }
    let result = match cli.command {
        Command::Doctor => doctor(),
        Command::Logprobs(args) => logprobs(args),
        Command::Generate(args) => run_generate(args),
        Command::Convert(args) => convert(args),
        Command::Demo(args) => demo_cmd::run(args, &aha_sandbox::assets::dir()),
        Command::Sandbox(command) => sandbox_cmd::run(command),
        Command::Reward(args) => reward_cmd::run(args),
        Command::Eval(args) => eval_cmd::run(args),
        Command::Train(args) => train_cmd::run(args),
        Command::Sft(args) => sft_cmd::run(args),
        Command::Traces(args) => traces_cmd::run(args),
        Command::Report(args) => traces_cmd::report(args),
    };
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

/// The model and tokenizer of `args`; its adapter merged into the weights when `merge` (faster
/// generation: the fused decode step), kept apart otherwise (PEFT's numbers exactly).
fn load(args: &ModelArgs, merge: bool) -> Result<(CausalLM, Tokenizer)> {
    let options = LoadOptions {
        device: parse_device(&args.device).context("--device")?,
        kind: parse_kind(&args.dtype).context("--dtype")?,
        compute: args.compute_dtype.as_deref().map(parse_kind).transpose().context("--compute-dtype")?,
        trainable: false,
    };
    let mut model = CausalLM::load(&args.model, options)?;
    if let Some(adapter) = &args.adapter {
        model.load_adapter(adapter, false)?;
        if merge {
            model.merge_adapters();
        }
    }
    let tokenizer = Tokenizer::from_dir(&args.model, model.config().vocab_size)?;
    Ok((model, tokenizer))
}

fn doctor() -> Result<()> {
    println!("aha {}", env!("CARGO_PKG_VERSION"));
    println!("libtorch: {} intra-op threads", tch::get_num_threads());
    if tch::Cuda::is_available() {
        println!(
            "cuda: available ({} device(s), cudnn {})",
            tch::Cuda::device_count(),
            tch::Cuda::cudnn_is_available()
        );
    } else {
        println!("cuda: not available (CPU only)");
    }
    let (assets, found) = aha_sandbox::assets::locate();
    println!("assets: {} ({})", assets.display(), found.describe());
    for name in ["python.wasm", "python-snapshot.wasm"] {
        let wasm = assets.join("wasm").join(name);
        println!(
            "{name}: {}",
            if wasm.is_file() { wasm.display().to_string() } else { "missing (run scripts/setup.sh)".into() }
        );
    }
    Ok(())
}

fn logprobs(args: LogprobsArgs) -> Result<()> {
    let (model, tokenizer) = load(&args.model, false)?;
    let tokens = tokenizer.encode(&args.text)?;
    anyhow::ensure!(!tokens.is_empty(), "--text is empty: there is nothing to score");
    let logprobs = model.sequence_logprobs(std::slice::from_ref(&tokens), args.temperature)?.remove(0);
    println!("{}", json!({ "tokens": tokens, "logprobs": logprobs }));
    Ok(())
}

fn run_generate(args: GenerateArgs) -> Result<()> {
    let (model, tokenizer) = load(&args.model, true)?;
    let prompt_ids = tokenizer.encode(&args.prompt)?;
    anyhow::ensure!(!prompt_ids.is_empty(), "--prompt is empty: there is nothing to continue");
    let params = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        min_p: args.min_p,
        max_new_tokens: args.max_new_tokens,
        stop_token_ids: model.config().eos_token_ids.clone(),
    };
    let request = GenerationRequest { prompt_ids, n: args.n, seed: args.seed };
    let completions = generate(&model, &[request], &params)?.remove(0);
    let mut out = std::io::stdout().lock();
    for (i, completion) in completions.iter().enumerate() {
        let text = tokenizer.decode(&completion.token_ids, true)?;
        if args.json {
            writeln!(
                out,
                "{}",
                json!({
                    "text": text,
                    "token_ids": completion.token_ids,
                    "logprobs": completion.logprobs,
                    "finish_reason": completion.finish_reason,
                })
            )?;
        } else {
            let reason = match completion.finish_reason {
                FinishReason::Stop => "stop",
                FinishReason::Length => "length",
            };
            writeln!(
                out,
                "--- completion {} ({} tokens, {reason})\n{}{text}",
                i + 1,
                completion.token_ids.len(),
                args.prompt
            )?;
        }
    }
    Ok(())
}

fn convert(args: ConvertArgs) -> Result<()> {
    let (model, _) = load(&args.model, true)?;
    let options = SaveOptions { kind: Some(model.kind()), max_shard_bytes: args.max_shard_mb << 20 };
    model.save(&args.out, options).with_context(|| format!("writing {}", args.out.display()))?;
    println!("{}", json!({ "out": args.out, "parameters": model.num_parameters(), "dtype": args.model.dtype }));
    Ok(())
}
