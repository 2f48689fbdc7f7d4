#!/usr/bin/env python3
"""Rollout throughput of vLLM's offline engine (LLM.generate) on one GPU: the vLLM side of
bench/gpu_check.sh's generation stage, the same workload as bench/transformers_rollout_bench.py.

P random prompts (token ids, the same draw as transformers_rollout_bench.py) x G samples (n = G),
temperature 1, no top-k/top-p, exactly N new tokens (min_tokens = max_tokens = N, ignore_eos),
bf16 by default. Best of --repeats after a warm-up; prints one JSON line.
"""

import argparse
import json
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--prompt-tokens", type=int, default=40)
    ap.add_argument("--new-tokens", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    args = ap.parse_args()

    import torch
    import vllm
    from vllm import LLM, SamplingParams

    # Before the engine starts, so that a wrong argument fails in seconds (top-k and top-p: off
    # by default).
    params = SamplingParams(n=args.group_size, temperature=1.0, max_tokens=args.new_tokens,
                            min_tokens=args.new_tokens, ignore_eos=True, seed=args.seed,
                            detokenize=False)
    g = torch.Generator().manual_seed(args.seed)
    llm = LLM(model=args.model, dtype=args.dtype, gpu_memory_utilization=args.gpu_memory_utilization,
              max_model_len=args.prompt_tokens + args.new_tokens, seed=args.seed,
              max_num_seqs=max(256, args.prompts * args.group_size))
    vocab = llm.llm_engine.model_config.get_vocab_size()
    prompt_ids = torch.randint(0, vocab, (args.prompts, args.prompt_tokens), generator=g).tolist()
    prompts = [{"prompt_token_ids": ids} for ids in prompt_ids]

    def run():
        t0 = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        seconds = time.perf_counter() - t0
        lengths = [len(c.token_ids) for o in outputs for c in o.outputs]
        return seconds, lengths

    run()  # warm-up (CUDA graphs, allocator)
    seconds, lengths = min((run() for _ in range(args.repeats)), key=lambda r: r[0])
    tokens = sum(lengths)
    print(json.dumps({
        "impl": "vllm",
        "vllm_version": vllm.__version__,
        "torch_version": torch.__version__,
        "model": args.model,
        "device": "cuda",
        "compute_dtype": args.dtype,
        "sequences": args.prompts * args.group_size,
        "prompt_tokens": args.prompt_tokens,
        "completion_tokens": tokens,
        "min_len": min(lengths),
        "max_len": max(lengths),
        "seconds": round(seconds, 3),
        "completion_tok_s": round(tokens / seconds, 1),
        "peak_gpu_allocated_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        "gpu_memory_utilization": args.gpu_memory_utilization,
    }))


if __name__ == "__main__":
    main()
