#!/usr/bin/env python3
"""Create a random fp32 Qwen2 benchmark model (not committed).

  python bench/make_bench_model.py --out target/bench-models/qwen2-25m

hidden 512, 8 layers, 8 heads, 2 kv heads (head_dim 64), intermediate 1536, untied:
~24.1M non-embedding parameters; with the default --vocab 400 about 24.5M in all
(--vocab 32000 gives 56.9M, for a look at the LM-head cost). The tokenizer is the tiny
fixture tokenizer (393 tokens); config vocab_size may exceed it, as real Qwen configs do.
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "scripts"))
import make_fixtures  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab", type=int, default=400,
                    help="config vocab_size (>= the 393-token tokenizer); 400 gives ~24.5M parameters")
    args = ap.parse_args()

    import transformers
    from transformers import Qwen2Config, Qwen2ForCausalLM

    transformers.utils.logging.disable_progress_bar()
    tok = make_fixtures.make_hf_tokenizer()
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen2Config(
        vocab_size=args.vocab, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
        num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=4096,
        tie_word_embeddings=False, rms_norm_eps=1e-6, bos_token_id=eot, eos_token_id=eot,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        use_sliding_window=False,
    )
    torch.manual_seed(args.seed)
    model = Qwen2ForCausalLM(config).to(torch.float32).eval()
    make_fixtures.reinit_(model, args.seed, std=0.05)
    model.save_pretrained(args.out)
    tok.save_pretrained(args.out)
    n = sum(p.numel() for p in model.parameters())
    emb = model.model.embed_tokens.weight.numel() + model.lm_head.weight.numel()
    print(f"wrote {args.out}: {n / 1e6:.1f}M parameters ({(n - emb) / 1e6:.1f}M non-embedding)")


if __name__ == "__main__":
    main()
