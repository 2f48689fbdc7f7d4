//! Throughput of aha's decoder on CPU, the Rust twin of bench/transformers_bench.py (same
//! workload, same JSON line); bench/compare_transformers.sh runs both side by side.
//!
//!   cargo bench -p aha-tests --bench model_throughput -- --model DIR [--threads N] ...
//!
//! (a) generate: batch B of random P-token prompts, greedy, exactly G new tokens (no stop
//!     token), KV cache; tok/s = B*G / seconds, best of R runs after one warm-up.
//! (b) logprobs: batch BL of random L-token sequences; full forward and fp32 next-token
//!     log-probs (chunked over the vocabulary); tok/s = BL*L / seconds, best of R after warm-up.

use std::path::PathBuf;
use std::time::Instant;

use aha_model::{CausalLM, LoadOptions};
use aha_rollout::{generate, GenerationRequest, SamplingParams};
use clap::Parser;
use rand::{Rng, SeedableRng};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    model: PathBuf,
    #[arg(long, default_value_t = 1)]
    threads: i32,
    #[arg(long, default_value_t = 32)]
    prompt_tokens: usize,
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    #[arg(long, default_value_t = 4)]
    batch: usize,
    #[arg(long, default_value_t = 256)]
    logprob_tokens: usize,
    #[arg(long, default_value_t = 4)]
    logprob_batch: usize,
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cargo bench passes --bench; ignore it.
    #[arg(long, hide = true)]
    bench: bool,
}

fn best_of(repeats: usize, mut run: impl FnMut()) -> f64 {
    run(); // warm-up
    (0..repeats)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let args = Args::parse();
    tch::set_num_threads(args.threads);
    let model = CausalLM::load(&args.model, LoadOptions::default()).expect("load the model");
    let vocab = model.config().vocab_size as u32;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
    let mut random_tokens = |n: usize| -> Vec<u32> { (0..n).map(|_| rng.random_range(0..vocab)).collect() };

    let requests: Vec<GenerationRequest> = (0..args.batch)
        .map(|i| GenerationRequest { prompt_ids: random_tokens(args.prompt_tokens), n: 1, seed: i as u64 })
        .collect();
    let params = SamplingParams { temperature: 0.0, max_new_tokens: args.new_tokens, ..Default::default() };
    let generate_s = best_of(args.repeats, || {
        let out = generate(&model, &requests, &params).expect("generate");
        assert!(out.iter().all(|c| c[0].token_ids.len() == args.new_tokens));
    });

    let sequences: Vec<Vec<u32>> = (0..args.logprob_batch).map(|_| random_tokens(args.logprob_tokens)).collect();
    let logprobs_s = best_of(args.repeats, || {
        let out = model.sequence_logprobs(&sequences, 1.0).expect("logprobs");
        assert!(out.iter().all(|l| l.len() == args.logprob_tokens - 1));
    });

    let round = |x: f64| (x * 10.0).round() / 10.0;
    println!(
        "{}",
        serde_json::json!({
            "impl": "aha",
            "model": args.model,
            "threads": args.threads,
            "generate_tok_s": round((args.batch * args.new_tokens) as f64 / generate_s),
            "logprobs_tok_s": round((args.logprob_batch * args.logprob_tokens) as f64 / logprobs_s),
        })
    );
}
