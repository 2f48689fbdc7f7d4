//! Time of one GRPO training pass (forward, loss, backward over a whole batch; no optimizer
//! step), in the weights' dtype or in mixed precision, on CPU or GPU: the part of a step that
//! `bench/compare_grpo.sh` times as `train_s`, without generation around it.
//!
//!   cargo bench -p aha-tests --bench train_pass -- --model DIR [--compute-dtype bf16] ...
//!
//! The batch: `--sequences` completions of exactly `--completion-tokens` random tokens, in groups
//! of `--group-size` that answer the same `--prompt-tokens` random prompt tokens (as in GRPO),
//! advantages +1 and -1 alternately, dapo, beta 0, one micro-batch of `--micro-batch` completions
//! at a time. A small fp32 model trains through its fused pass (`CausalLM::trains_fused`) unless
//! `--autograd` is given. Prints one JSON line: the
//! best of `--repeats` passes after a warm-up, and the tokens per second it trains on.

use std::path::PathBuf;
use std::time::Instant;

use aha_grpo::{accumulate_gradients, prepare_batch, LossParams, LossType, StepSettings, TrainBatch, TrainSequence};
use aha_model::{parse_kind, CausalLM, LoadOptions};
use clap::Parser;
use rand::{Rng, SeedableRng};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    model: PathBuf,
    #[arg(long, default_value_t = 2)]
    threads: i32,
    #[arg(long, default_value = "f32")]
    dtype: String,
    #[arg(long)]
    compute_dtype: Option<String>,
    #[arg(long, default_value_t = 64)]
    sequences: usize,
    #[arg(long, default_value_t = 8)]
    group_size: usize,
    #[arg(long, default_value_t = 40)]
    prompt_tokens: usize,
    #[arg(long, default_value_t = 64)]
    completion_tokens: usize,
    #[arg(long, default_value_t = 64)]
    micro_batch: usize,
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Train through autograd even where the model could train fused.
    #[arg(long)]
    autograd: bool,
    /// cargo bench passes --bench; ignore it.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let args = Args::parse();
    tch::set_num_threads(args.threads);
    let options = LoadOptions {
        kind: parse_kind(&args.dtype).expect("--dtype"),
        compute: args.compute_dtype.as_deref().map(|k| parse_kind(k).expect("--compute-dtype")),
        trainable: true,
        ..LoadOptions::default()
    };
    let mut model = CausalLM::load(&args.model, options).expect("load the model");
    model.set_fused_training(!args.autograd);
    let vocab = model.config().vocab_size as u32;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut tokens = |n: usize| (0..n).map(|_| rng.random_range(0..vocab)).collect::<Vec<u32>>();
    let prompts: Vec<Vec<u32>> =
        (0..args.sequences.div_ceil(args.group_size)).map(|_| tokens(args.prompt_tokens)).collect();
    let sequences: Vec<TrainSequence> = (0..args.sequences)
        .map(|i| TrainSequence {
            prompt_ids: prompts[i / args.group_size].clone(),
            completion_ids: tokens(args.completion_tokens),
            advantage: if i % 2 == 0 { 1.0 } else { -1.0 },
            old_logprobs: None,
            truncated: false,
            tool_output: vec![],
        })
        .collect();
    let settings = StepSettings {
        loss: LossParams { loss_type: LossType::Dapo, epsilon_low: 0.2, epsilon_high: 0.2, beta: 0.0, tis_cap: None },
        num_iterations: 1,
        mask_truncated_completions: false,
        temperature: 1.0,
        max_completion_len: args.completion_tokens,
        micro_batch_size: args.micro_batch,
        max_grad_norm: 1.0,
    };
    // The same sequences scored without gradient (as for old or reference log-probs).
    let whole: Vec<Vec<u32>> =
        sequences.iter().map(|s| [s.prompt_ids.clone(), s.completion_ids.clone()].concat()).collect();
    let mut no_grad_times = Vec::new();
    for _ in 0..=args.repeats {
        let start = Instant::now();
        model.sequence_logprobs(&whole, 1.0).expect("log-probs");
        no_grad_times.push(start.elapsed().as_secs_f64());
    }
    let batch = prepare_batch(&model, None, &TrainBatch { sequences }, &settings).expect("batch");
    let mut times = Vec::new();
    for _ in 0..=args.repeats {
        let start = Instant::now();
        accumulate_gradients(&model, &batch, &settings).expect("pass");
        times.push(start.elapsed().as_secs_f64());
    }
    let best = times[1..].iter().copied().fold(f64::INFINITY, f64::min);
    let trained = (args.sequences * (args.prompt_tokens + args.completion_tokens)) as f64;
    println!(
        "{}",
        serde_json::json!({
            "model": args.model, "threads": args.threads, "dtype": args.dtype,
            "compute_dtype": args.compute_dtype.unwrap_or(args.dtype.clone()),
            "sequences": args.sequences, "group_size": args.group_size, "prompt_tokens": args.prompt_tokens,
            "completion_tokens": args.completion_tokens, "micro_batch": args.micro_batch,
            "fused": model.trains_fused(),
            "best_s": (best * 1e4).round() / 1e4,
            "all_s": times.iter().map(|t| (t * 1e3).round() / 1e3).collect::<Vec<_>>(),
            "tokens_per_s": (trained / best).round(),
            "no_grad_forward_best_s": (no_grad_times[1..].iter().copied().fold(f64::INFINITY, f64::min) * 1e4).round() / 1e4,
        })
    );
}
