#!/usr/bin/env python3
"""Create a random fp32 Qwen2 benchmark model (not committed).

  python bench/make_bench_model.py --out target/bench-models/qwen2-25m
  python bench/make_bench_model.py --preset qwen2.5-1.5b --out target/bench-models/qwen2.5-1.5b

Default (--preset 25m): hidden 512, 8 layers, 8 heads, 2 kv heads (head_dim 64), intermediate
1536, untied: ~24.1M non-embedding parameters; with the default --vocab 400 about 24.5M in all
(--vocab 32000 gives 56.9M, for a look at the LM-head cost). The tokenizer is the tiny
fixture tokenizer (393 tokens); config vocab_size may exceed it, as real Qwen configs do.

--preset qwen2.5-0.5b / qwen2.5-1.5b: the shapes of Qwen/Qwen2.5-0.5B and -1.5B's config.json
(vocab 151936, tied embeddings, rope theta 1e6; 494M and 1.54B parameters) with random weights
(std --std). Their tokenizer is the fixture tokenizer padded with filler tokens (lower-case
letter strings after a space, never produced by encoding) up to vocab_size, so that every id a
random model samples decodes to text, as with a real tokenizer (bench/gpu_check.sh).
--device cuda initialises on the GPU (seconds instead of a minute for 1.5B).
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "scripts"))
import make_fixtures  # noqa: E402


PRESETS = {
    # hidden, intermediate, layers, heads, kv heads, tied, rope theta, max positions
    "25m": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
                num_key_value_heads=2, tie_word_embeddings=False, rope_theta=1000000.0,
                max_position_embeddings=4096),
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True,
                         rope_theta=1000000.0, max_position_embeddings=32768, vocab=151936),
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True,
                         rope_theta=1000000.0, max_position_embeddings=32768, vocab=151936),
}


def pad_tokenizer(path, vocab_size):
    """Fill tokenizer.json's BPE vocabulary up to `vocab_size` ids with filler tokens ("Ġ" and
    3-4 lower-case letters: " abc" decoded). No merge produces them, so encoding is unchanged.
    Their first letter changes fastest, so that it is spread evenly over a-z: a reward on it (as
    bench/gpu_check.sh's "starts with a-m") splits random completions about in half."""
    import json
    import string

    with open(path) as f:
        tok = json.load(f)
    vocab = tok["model"]["vocab"]
    # The added (special) tokens go into the BPE vocabulary too, at their own ids: tokenizers
    # numbers added tokens missing from it after the model's vocabulary, which would move them.
    for t in tok["added_tokens"]:
        vocab[t["content"]] = t["id"]
    used = set(vocab.values())
    taken = set(vocab) | {t["content"] for t in tok["added_tokens"]}
    letters = string.ascii_lowercase

    def words():
        for n in (3, 4):
            for i in range(26 ** n):
                w = ""
                for _ in range(n):
                    i, r = divmod(i, 26)
                    w = w + letters[r]
                yield "\u0120" + w

    it = words()
    for token_id in range(vocab_size):
        if token_id in used:
            continue
        w = next(it)
        while w in taken:
            w = next(it)
        vocab[w] = token_id
    with open(path, "w") as f:
        json.dump(tok, f, ensure_ascii=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab", type=int, default=None,
                    help="config vocab_size (>= the 393-token tokenizer); default 400 for 25m "
                         "(~24.5M parameters), the preset's otherwise")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="25m")
    ap.add_argument("--std", type=float, default=0.05, help="std of the random weights")
    ap.add_argument("--device", default="cpu", help="where to initialise (cpu, cuda)")
    args = ap.parse_args()
    shape = dict(PRESETS[args.preset])
    rope_theta = shape.pop("rope_theta")
    vocab = args.vocab or shape.pop("vocab", 400)
    shape.pop("vocab", None)

    import transformers
    from transformers import Qwen2Config, Qwen2ForCausalLM

    transformers.utils.logging.disable_progress_bar()
    tok = make_fixtures.make_hf_tokenizer()
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen2Config(
        vocab_size=vocab, **shape, rms_norm_eps=1e-6, bos_token_id=eot, eos_token_id=eot,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        use_sliding_window=False,
    )
    torch.manual_seed(args.seed)
    if args.preset == "25m":
        model = Qwen2ForCausalLM(config).to(torch.float32).eval()
        make_fixtures.reinit_(model, args.seed, std=args.std)
    else:
        # Large: initialise where asked, with one generator on that device (the 25m model keeps
        # make_fixtures' CPU draws, so that its weights stay what they were).
        with torch.device(args.device):
            model = Qwen2ForCausalLM(config).to(torch.float32).eval()
        g = torch.Generator(device=args.device).manual_seed(args.seed)
        with torch.no_grad():
            for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
                if name.endswith("norm.weight"):
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g, device=p.device))
                elif name.endswith(".bias"):
                    p.copy_(0.3 * torch.randn(p.shape, generator=g, device=p.device))
                else:
                    p.copy_(args.std * torch.randn(p.shape, generator=g, device=p.device))
        model = model.to("cpu")
    model.save_pretrained(args.out)
    tok.save_pretrained(args.out)
    if vocab > 393 and args.preset != "25m":
        pad_tokenizer(os.path.join(args.out, "tokenizer.json"), vocab)
    n = sum(p.numel() for p in model.parameters())
    emb = model.model.embed_tokens.weight.numel() + model.lm_head.weight.numel()
    print(f"wrote {args.out}: {n / 1e6:.1f}M parameters ({(n - emb) / 1e6:.1f}M non-embedding)")


if __name__ == "__main__":
    main()
