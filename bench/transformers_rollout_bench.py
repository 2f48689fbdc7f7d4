#!/usr/bin/env python3
"""Rollout throughput of Hugging Face transformers' generate (CPU by default, --device cuda for
bench/gpu_check.sh): the twin of tests/benches/rollout_throughput.rs (same workload, same JSON
fields where they exist).

P random prompts x G samples (num_return_sequences), temperature 1, no top-k/top-p, up to N new
tokens. Without --ragged-stop-ids every sequence runs exactly N tokens (min_new_tokens = N); with
it, the lowest K token ids are eos tokens and only real completion tokens count (generate keeps
finished rows in its batch, padding them, until the longest one ends).
"""

import argparse
import json
import resource
import time

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--ragged-stop-ids", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compute-dtype", default="f32", choices=["f32", "bf16"],
                    help="bf16: the model converted to bf16, what aha's mixed precision computes")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"

    torch.set_num_threads(args.threads)
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    dtype = torch.bfloat16 if args.compute_dtype == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).to(device)
    model.eval()
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(args.seed)
    low = args.ragged_stop_ids
    prompts = torch.randint(low, vocab, (args.prompts, args.prompt_tokens), generator=g).to(device)
    mask = torch.ones_like(prompts)
    if low:
        stop = {"eos_token_id": list(range(low)), "pad_token_id": 0}
    else:
        stop = {"eos_token_id": None, "pad_token_id": 0, "min_new_tokens": args.new_tokens}

    @torch.inference_mode()
    def run():
        torch.manual_seed(args.seed)
        if cuda:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        out = model.generate(
            input_ids=prompts, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0,
            top_p=1.0, num_return_sequences=args.group_size, max_new_tokens=args.new_tokens,
            use_cache=True, **stop,
        )
        if cuda:
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        completions = out[:, args.prompt_tokens:].cpu()
        if low:
            # Real tokens: up to and including the first stop token.
            is_stop = completions < low
            first = torch.where(is_stop.any(1), is_stop.int().argmax(1) + 1,
                                torch.full((completions.shape[0],), completions.shape[1]))
            lengths = first.tolist()
        else:
            lengths = [completions.shape[1]] * completions.shape[0]
        return seconds, lengths

    run()  # warm-up
    seconds, lengths = min((run() for _ in range(args.repeats)), key=lambda r: r[0])
    tokens = sum(lengths)
    print(json.dumps({
        "impl": "transformers",
        "model": args.model,
        "threads": args.threads,
        "device": args.device,
        "compute_dtype": args.compute_dtype,
        "sequences": args.prompts * args.group_size,
        "completion_tokens": tokens,
        "min_len": min(lengths),
        "max_len": max(lengths),
        "seconds": round(seconds, 3),
        "completion_tok_s": round(tokens / seconds, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        **({"peak_gpu_allocated_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1),
            "peak_gpu_reserved_mib": round(torch.cuda.max_memory_reserved(device) / 2**20, 1)}
           if cuda else {}),
    }))


if __name__ == "__main__":
    main()
