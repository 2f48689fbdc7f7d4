#!/usr/bin/env python3
"""Throughput of Hugging Face transformers on CPU, for comparison with the Rust decoder.

Prints one JSON line:
  {"impl": "transformers", "model": DIR, "threads": N, "generate_tok_s": ..., "logprobs_tok_s": ...}

(a) generate: batch B of random P-token prompts, greedy, exactly G new tokens
    (min_new_tokens = max_new_tokens = G), KV cache, default (sdpa) attention;
    tok/s = B*G / seconds, best of R runs after one warm-up.
(b) logprobs: batch BL of random L-token sequences; full forward, fp32 log_softmax,
    gather of the next-token log-probs; tok/s = BL*L / seconds, best of R after warm-up.
"""

import argparse
import json
import time

import torch


def best_of(fn, repeats):
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--logprob-tokens", type=int, default=256)
    ap.add_argument("--logprob-batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.eval()
    vocab = model.config.vocab_size
    eos = model.config.eos_token_id
    pad = eos[0] if isinstance(eos, (list, tuple)) else eos
    g = torch.Generator().manual_seed(args.seed)

    prompts = torch.randint(0, vocab, (args.batch, args.prompt_tokens), generator=g)
    mask = torch.ones_like(prompts)

    @torch.inference_mode()
    def gen():
        out = model.generate(
            input_ids=prompts, attention_mask=mask, do_sample=False, use_cache=True,
            max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
            pad_token_id=pad,
        )
        assert out.shape == (args.batch, args.prompt_tokens + args.new_tokens), out.shape

    seqs = torch.randint(0, vocab, (args.logprob_batch, args.logprob_tokens), generator=g)

    @torch.inference_mode()
    def logprobs():
        logits = model(input_ids=seqs, use_cache=False).logits.float()
        lp = torch.log_softmax(logits[:, :-1], dim=-1)
        out = lp.gather(-1, seqs[:, 1:, None])[..., 0]
        assert out.shape == (args.logprob_batch, args.logprob_tokens - 1)

    t_gen = best_of(gen, args.repeats)
    t_lp = best_of(logprobs, args.repeats)
    print(json.dumps({
        "impl": "transformers",
        "model": args.model,
        "threads": args.threads,
        "generate_tok_s": round(args.batch * args.new_tokens / t_gen, 1),
        "logprobs_tok_s": round(args.logprob_batch * args.logprob_tokens / t_lp, 1),
    }))


if __name__ == "__main__":
    main()
