//! Rollout throughput: GRPO-shaped sampling (P prompts x G samples, temperature 1, up to N new
//! tokens) through the continuous-batching engine. The Rust twin of
//! bench/transformers_rollout_bench.py; bench/compare_rollout.sh runs both side by side.
//!
//!   cargo bench -p aha-tests --bench rollout_throughput -- --model DIR [--threads N] [--ragged]
//!       [--shards S]
//!
//! The engine is the one `aha train` and `generate` use: a `ShardedEngine`, by default one shard
//! per thread on a CPU (`--shards 1`: a single engine whose steps use every thread).
//!
//! Without `--ragged` every sequence runs to exactly N tokens (no stop token: the same work for
//! both implementations). With `--ragged` a set of stop tokens ends sequences at spread-out
//! lengths, as real answers do; only real completion tokens count.
//!
//! Prints one JSON line: completion tokens/s (best of R after a warm-up), the achieved GFLOP/s
//! (matrix multiplications and attention of prefill and decode), peak RSS, the engine's peak KV
//! cache, and the share of time in prefill, decode, sampling and cache re-packing (of the
//! shards' thread time).

use std::path::PathBuf;
use std::time::Instant;

use aha_model::{CausalLM, LoadOptions};
use aha_rollout::{generate_all, EngineConfig, EngineStats, GenerationRequest, SamplingParams, ShardedEngine};
use clap::Parser;
use rand::{Rng, SeedableRng};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    model: PathBuf,
    #[arg(long, default_value_t = 2)]
    threads: i32,
    #[arg(long, default_value_t = 8)]
    prompts: usize,
    #[arg(long, default_value_t = 8)]
    group_size: usize,
    #[arg(long, default_value_t = 32)]
    prompt_tokens: usize,
    #[arg(long, default_value_t = 256)]
    new_tokens: usize,
    /// Stop on the lowest `ragged_stop_ids` token ids (0 = exactly `new_tokens` tokens).
    #[arg(long, default_value_t = 0)]
    ragged_stop_ids: u32,
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Engines side by side (default: one per thread on a CPU, `ShardedEngine::shards_for`).
    #[arg(long)]
    shards: Option<usize>,
    /// dtype of the forward passes over the fp32 weights (bf16: mixed precision).
    #[arg(long, default_value = "f32")]
    compute_dtype: String,
    /// cargo bench passes --bench; ignore it.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Multiply-adds x 2 of one token at context length `context`: every projection, the MLP, the LM
/// head, and attention over the context (QK^T and AV).
fn flops_per_token(model: &CausalLM, context: usize) -> f64 {
    let c = model.config();
    let (h, d, layers) = (c.hidden_size as f64, c.head_dim as f64, c.num_hidden_layers as f64);
    let (heads, kv) = (c.num_attention_heads as f64, c.num_key_value_heads as f64);
    let projections = h * heads * d * 2.0 + h * kv * d * 2.0 + 3.0 * h * c.intermediate_size as f64;
    let attention = 2.0 * heads * d * context as f64;
    2.0 * (layers * (projections + attention) + h * c.vocab_size as f64)
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kib.unwrap_or(0.0) / 1024.0
}

fn main() {
    let args = Args::parse();
    tch::set_num_threads(args.threads);
    let compute = aha_model::parse_kind(&args.compute_dtype).expect("--compute-dtype");
    let options = LoadOptions { compute: Some(compute), ..LoadOptions::default() };
    let model = CausalLM::load(&args.model, options).expect("load the model");
    let vocab = model.config().vocab_size as u32;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
    // Prompts avoid the stop ids, so that no sequence is a stop token away from the start.
    let requests: Vec<GenerationRequest> = (0..args.prompts)
        .map(|i| GenerationRequest {
            prompt_ids: (0..args.prompt_tokens).map(|_| rng.random_range(args.ragged_stop_ids..vocab)).collect(),
            n: args.group_size,
            seed: args.seed + i as u64,
        })
        .collect();
    let params = SamplingParams {
        temperature: 1.0,
        max_new_tokens: args.new_tokens,
        stop_token_ids: (0..args.ragged_stop_ids).collect(),
        ..Default::default()
    };

    let shards = args.shards.unwrap_or_else(|| ShardedEngine::shards_for(&model));
    let run = || {
        let mut engine =
            ShardedEngine::with_shards(&model, params.clone(), EngineConfig::default(), shards).expect("engine");
        let start = Instant::now();
        let groups = generate_all(&mut engine, &requests).expect("generate");
        let seconds = start.elapsed().as_secs_f64();
        let lengths: Vec<usize> = groups.iter().flatten().map(|c| c.token_ids.len()).collect();
        (seconds, lengths, engine.stats())
    };
    run(); // warm-up
    let (seconds, lengths, stats): (f64, Vec<usize>, EngineStats) =
        (0..args.repeats).map(|_| run()).min_by(|a, b| a.0.total_cmp(&b.0)).expect("at least one repeat");

    let tokens: usize = lengths.iter().sum();
    let p = args.prompt_tokens;
    let prefill_flops: f64 = args.prompts as f64 * (0..p).map(|t| flops_per_token(&model, t + 1)).sum::<f64>();
    // The last sampled token of a sequence is never fed back.
    let decode_flops: f64 = lengths.iter().map(|&n| (1..n).map(|t| flops_per_token(&model, p + t)).sum::<f64>()).sum();
    let accounted = stats.prefill_seconds + stats.decode_seconds + stats.sample_seconds + stats.repack_seconds;
    let thread_seconds = seconds * shards as f64;
    let share = |s: f64| (s / thread_seconds * 1000.0).round() / 1000.0;
    let round = |x: f64| (x * 10.0).round() / 10.0;
    println!(
        "{}",
        serde_json::json!({
            "impl": "aha",
            "model": args.model,
            "threads": args.threads,
            "shards": shards,
            "compute_dtype": args.compute_dtype,
            "sequences": args.prompts * args.group_size,
            "completion_tokens": tokens,
            "min_len": lengths.iter().min(),
            "max_len": lengths.iter().max(),
            "seconds": (seconds * 1000.0).round() / 1000.0,
            "completion_tok_s": round(tokens as f64 / seconds),
            "gflop_s": round((prefill_flops + decode_flops) / seconds / 1e9),
            "peak_rss_mib": round(peak_rss_mib()),
            "peak_kv_cache_mib": round(stats.peak_kv_cache_bytes as f64 / (1 << 20) as f64),
            "share": {
                "prefill": share(stats.prefill_seconds),
                "decode": share(stats.decode_seconds),
                "sample": share(stats.sample_seconds),
                "repack": share(stats.repack_seconds),
                "other": share(thread_seconds - accounted),
            },
        })
    );
}
