#!/usr/bin/env python3
"""Reference log-probs of the fixture checkpoints run in bf16, for aha's mixed precision.

aha with `compute_dtype = "bf16"` over fp32 weights runs each forward pass as the model converted
to bf16 would (weights cast round-to-nearest-even, activations in bf16, RMSNorm statistics and
softmax in fp32). Its reference is therefore transformers' model after `.to(torch.bfloat16)`:
this script loads tests/fixtures/models/{qwen2,llama,qwen3} (fp32), converts them, and writes the
log-probs of the token sequences of tests/fixtures/expected.json to
tests/fixtures/expected_bf16.json, for both of transformers' attention implementations (eager
and sdpa; their spread is the noise floor that aha's tolerance is set against).

Usage: python scripts/make_bf16_fixture.py   (torch and transformers, versions recorded)
"""

import json
import os

import torch

from make_fixtures import FIXTURES, logprobs_of


def main():
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(1)
    with open(os.path.join(FIXTURES, "expected.json")) as f:
        expected = json.load(f)
    out = {
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "models": {},
    }
    for name in ["qwen2", "llama", "qwen3"]:
        path = os.path.join(FIXTURES, "models", name)
        cases = []
        models = {
            impl: AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=impl)
            .to(torch.bfloat16).eval()
            for impl in ["eager", "sdpa"]
        }
        for case in expected["models"][name]["logprobs"]:
            tokens = case["tokens"]
            cases.append({"tokens": tokens, **{impl: logprobs_of(m, tokens) for impl, m in models.items()}})
        out["models"][name] = {"logprobs": cases}
        spread = max(abs(a - b) for c in cases for a, b in zip(c["eager"], c["sdpa"]))
        to_fp32 = max(abs(a - b) for c, e in zip(cases, expected["models"][name]["logprobs"])
                      for a, b in zip(c["eager"], e["logprobs"]))
        print(f"{name}: eager vs sdpa max |diff| {spread:.4f}; bf16 vs fp32 {to_fp32:.4f}")
    target = os.path.join(FIXTURES, "expected_bf16.json")
    with open(target, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
