#!/usr/bin/env python3
"""Write a tiny random Qwen2 checkpoint that vLLM's CPU attention accepts (head_dim 32).

The fixtures of scripts/make_fixtures.py have head_dim 16, which vLLM's CPU attention rejects
(it accepts head sizes 32, 64, 80, ..., 512). This model: hidden 64, 2 attention heads x head_dim 32,
1 key/value head (GQA), 2 layers, intermediate 128, vocab 400, untied lm_head, q/k/v biases, fp32
safetensors, and the tokenizer of tests/fixtures/models/qwen2 (copied). Weights are random with a
large std (as in make_fixtures.py) so that next-token distributions are peaky and greedy decoding
has clear margins; the eos row of lm_head is scaled up so that some samples end on eos.

Usage (project venv):
  /work/main/.venv/bin/python scripts/make_vllm_test_model.py                     # tests/fixtures/models/vllm-qwen2, seed 19
  /work/main/.venv/bin/python scripts/make_vllm_test_model.py --seed 20 --out DIR # same shapes, other weights
"""

import argparse
import os
import shutil

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER_FROM = os.path.join(ROOT, "tests", "fixtures", "models", "qwen2")
DEFAULT_OUT = os.path.join(ROOT, "tests", "fixtures", "models", "vllm-qwen2")
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]
EOT = 390  # <|endoftext|> in the fixture tokenizer (bos = eos = pad)
WEIGHT_STD = 0.4
EOS_ROW_SCALE = 1.5
MAX_POSITIONS = 512


def build(seed):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=400, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32,
        max_position_embeddings=MAX_POSITIONS, hidden_act="silu", rms_norm_eps=1e-6,
        bos_token_id=EOT, eos_token_id=EOT, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        use_sliding_window=False,
    )
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).to(torch.float32)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(WEIGHT_STD * torch.randn(p.shape, generator=g))
        model.lm_head.weight[EOT] *= EOS_ROW_SCALE
    assert model.model.layers[0].self_attn.q_proj.weight.shape == (64, 64)
    assert model.model.layers[0].self_attn.k_proj.weight.shape == (32, 64)
    return model.eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    model = build(args.seed)
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out)  # transformers v5: model.safetensors
    for f in TOKENIZER_FILES:
        shutil.copy(os.path.join(TOKENIZER_FROM, f), os.path.join(args.out, f))
    # the copied tokenizer_config says model_max_length 256; match the model's positions
    import json
    p = os.path.join(args.out, "tokenizer_config.json")
    with open(p) as f:
        tc = json.load(f)
    tc["model_max_length"] = MAX_POSITIONS
    with open(p, "w") as f:
        json.dump(tc, f, indent=2)
        f.write("\n")
    size = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print(f"wrote {args.out} (seed {args.seed}, {size} bytes)")


if __name__ == "__main__":
    main()
