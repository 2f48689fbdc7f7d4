#!/usr/bin/env python3
"""LoRA fixtures made by PEFT, for tests/tests/lora_parity.rs, under tests/fixtures/lora/NAME/.

Usage:
  python scripts/make_lora_fixtures.py                  # (re)generate tests/fixtures/lora/
  python scripts/make_lora_fixtures.py --check-saved DIR --like NAME [--tol 1e-5]
      load an adapter that aha wrote with peft.PeftModel.from_pretrained on the fixture base
      model NAME and check its log-probs against what aha printed into DIR/aha_logprobs.json.

For each tiny fixture model (tests/fixtures/models/{qwen2,llama,qwen3}) a PEFT LoRA adapter with
random A and B (init_lora_weights=False: B is not zero, so the adapter changes the model) is
written with save_pretrained, next to:
  expected.json          token sequences, PEFT's per-token log-probs of each, and the loss
  gradients.safetensors  the adapter gradients of that loss (PEFT's key names)
  merged.safetensors     the adapted layers' weights after merge_and_unload()

The loss is -(sum of the log-probs of every sequence) / (number of predicted tokens).
Everything is fp32 on the CPU and seeded. Needs torch, transformers and peft
(versions recorded in expected.json):
  .venv/bin/pip install torch==2.13.0 transformers==5.24.0 peft==0.21.2
"""

import argparse
import json
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "tests", "fixtures", "models")
OUT = os.path.join(ROOT, "tests", "fixtures", "lora")

# Each fixture gets a different adapter shape, so that ranks, scalings and target sets all vary.
ADAPTERS = {
    "qwen2": dict(r=4, lora_alpha=8, target_modules="all-linear", use_rslora=False),
    "llama": dict(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj", "o_proj"], use_rslora=True),
    "qwen3": dict(r=4, lora_alpha=16, target_modules=["k_proj", "gate_proj", "up_proj", "down_proj"], use_rslora=False),
}
VOCAB = 390  # ids below the fixtures' special tokens
LENGTHS = [12, 9]


def sequences(seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in LENGTHS]


def logprobs(model, ids):
    x = torch.tensor([ids])
    logits = model(input_ids=x).logits.float()
    lp = torch.log_softmax(logits[0, :-1], dim=-1)
    return lp.gather(1, x[0, 1:, None])[:, 0]


def save_tensors(path, tensors):
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, path, metadata={"format": "pt"})


def make(name):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    import peft
    import transformers

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(os.path.join(MODELS, name), dtype=torch.float32)
    config = LoraConfig(lora_dropout=0.0, init_lora_weights=False, task_type="CAUSAL_LM", **ADAPTERS[name])
    model = get_peft_model(base, config)
    model.eval()
    out = os.path.join(OUT, name)
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out)
    os.remove(os.path.join(out, "README.md"))  # PEFT's model card template: nothing to test
    # The base's path relative to the repository, not this machine's.
    config_path = os.path.join(out, "adapter_config.json")
    with open(config_path) as f:
        saved = json.load(f)
    saved["base_model_name_or_path"] = os.path.relpath(saved["base_model_name_or_path"], ROOT)
    with open(config_path, "w") as f:
        json.dump(saved, f, indent=2, sort_keys=True)
        f.write("\n")

    seqs = sequences(1)
    per_seq = [logprobs(model, ids) for ids in seqs]
    tokens = sum(len(lp) for lp in per_seq)
    loss = -sum(lp.sum() for lp in per_seq) / tokens
    loss.backward()
    grads = {}
    for key, param in model.named_parameters():
        if param.requires_grad:
            grads[key.replace(".default", "")] = param.grad
    save_tensors(os.path.join(out, "gradients.safetensors"), grads)

    adapted = {key.split(".lora_A")[0] for key in grads if ".lora_A" in key}
    merged = model.merge_and_unload()
    weights = {}
    for key, value in merged.state_dict().items():
        module = "base_model.model." + key.rsplit(".weight", 1)[0]
        if module in adapted:
            weights[key] = value
    save_tensors(os.path.join(out, "merged.safetensors"), weights)

    expected = {
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "peft_version": peft.__version__,
        "sequences": seqs,
        "logprobs": [lp.tolist() for lp in per_seq],
        "loss": loss.item(),
    }
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    print(f"{name}: {len(grads)} adapter tensors, {len(weights)} merged weights, loss {loss.item():.6f}")


def check_saved(adapter_dir, like, tol):
    """PEFT loads the adapter aha wrote in ADAPTER_DIR; its log-probs equal aha's."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(os.path.join(MODELS, like), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter_dir)
    model.eval()
    with open(os.path.join(adapter_dir, "aha_logprobs.json")) as f:
        aha = json.load(f)
    worst = 0.0
    with torch.no_grad():
        for ids, theirs in zip(aha["sequences"], aha["logprobs"]):
            ours = logprobs(model, ids)
            worst = max(worst, (ours - torch.tensor(theirs)).abs().max().item())
    status = "ok" if worst <= tol else "MISMATCH"
    print(f"{like}: PEFT loaded aha's adapter {adapter_dir}; max |log-prob difference| {worst:.2e} ({status})")
    return worst <= tol


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--check-saved")
    parser.add_argument("--like", choices=sorted(ADAPTERS))
    parser.add_argument("--tol", type=float, default=1e-5)
    args = parser.parse_args()
    if args.check_saved:
        sys.exit(0 if check_saved(args.check_saved, args.like, args.tol) else 1)
    for name in ADAPTERS:
        make(name)


if __name__ == "__main__":
    main()
