#!/usr/bin/env python3
"""aha's log-probs and greedy continuations against transformers on the same device and dtype
(bench/gpu_check.sh's parity stages; the CPU twin is tests/tests/model_parity.rs, whose
references scripts/make_fixtures.py and make_bf16_fixture.py computed on a CPU).

  python bench/gpu_parity.py --aha target/release/aha --device cuda --dtype f32 \\
      --models tests/fixtures/models/qwen2 tests/fixtures/models/llama ...

For every model and every text of tests/fixtures/expected.json, transformers (sdpa and eager
attention) scores the text on --device, and `aha logprobs --device D` scores it too:
  f32:  aha (--dtype f32) against transformers' sdpa in fp32: max |diff| must be < --tol (1e-4,
        the CPU tests' bound). Also reported: the distance to the CPU reference (expected.json).
        And greedy continuations (`aha generate --temperature 0`) must equal transformers'
        greedy continuations on the device, token for token.
  bf16: aha with bf16 weights (--dtype bf16) and in mixed precision (--dtype f32
        --compute-dtype bf16) against transformers' model converted to bf16 (sdpa and eager).
        As in model_parity.rs: aha's mean |diff| to the nearer of the two must be at most 1.5x
        transformers' own spread (eager against sdpa), and it must be nearer them than fp32.
Prints one JSON line per (model, dtype, variant) with "pass"; exits 1 if any failed.
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPECTED = os.path.join(ROOT, "tests", "fixtures", "expected.json")


def aha_logprobs(aha, model, text, device, dtype, compute=None):
    cmd = [aha, "logprobs", "--model", model, "--text", text, "--device", device, "--dtype", dtype]
    if compute:
        cmd += ["--compute-dtype", compute]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def aha_greedy(aha, model, prompt, device, max_new_tokens):
    cmd = [aha, "generate", "--model", model, "--prompt", prompt, "--device", device, "--dtype", "f32",
           "--temperature", "0", "--max-new-tokens", str(max_new_tokens), "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["token_ids"]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--aha", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", choices=["f32", "bf16"], required=True)
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--no-greedy", action="store_true")
    args = ap.parse_args()

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.backends.cuda.matmul.allow_tf32 = False  # libtorch's default, as aha runs
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device(args.device)
    expected = json.load(open(EXPECTED))
    texts = [case["text"] for case in expected["models"]["qwen2"]["logprobs"]]
    failed = 0

    def emit(record):
        nonlocal failed
        failed += 0 if record["pass"] else 1
        print(json.dumps(record), flush=True)

    def hf_logprobs(model, ids):
        with torch.no_grad():
            x = torch.tensor([ids], device=device)
            logits = model(input_ids=x).logits[0, :-1].float()
            lp = torch.log_softmax(logits, -1).gather(1, x[0, 1:, None])[:, 0]
        return lp.cpu().tolist()

    def load(path, dtype, attn):
        m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=attn)
        return m.to(dtype).to(device).eval()

    for path in args.models:
        name = os.path.basename(os.path.normpath(path))
        tok = AutoTokenizer.from_pretrained(path)
        reference = expected["models"].get(name)
        if args.dtype == "f32":
            hf = load(path, torch.float32, "sdpa")
            worst, worst_cpu = 0.0, 0.0
            for i, text in enumerate(texts):
                ours = aha_logprobs(args.aha, path, text, args.device, "f32")
                theirs = hf_logprobs(hf, ours["tokens"])
                assert ours["tokens"] == tok(text, add_special_tokens=False)["input_ids"], (name, "tokens")
                worst = max(worst, max(abs(a - b) for a, b in zip(ours["logprobs"], theirs)))
                if reference and i < len(reference["logprobs"]):
                    cpu = reference["logprobs"][i]["logprobs"]
                    worst_cpu = max(worst_cpu, max(abs(a - b) for a, b in zip(ours["logprobs"], cpu)))
            emit({"check": "logprobs", "model": name, "device": args.device, "dtype": "f32",
                  "max_abs_diff_vs_transformers": worst, "tol": args.tol,
                  "max_abs_diff_vs_cpu_reference": worst_cpu if reference else None,
                  "pass": worst < args.tol})
            if not args.no_greedy and reference:
                eos = hf.config.eos_token_id
                for case in reference["greedy"]:
                    n = case["max_new_tokens"]
                    ours = aha_greedy(args.aha, path, case["prompt"], args.device, n)
                    with torch.no_grad():
                        x = torch.tensor([case["prompt_tokens"]], device=device)
                        out = hf.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
                                          max_new_tokens=n, eos_token_id=eos, pad_token_id=0)
                    theirs = out[0, x.shape[1]:].cpu().tolist()
                    emit({"check": "greedy", "model": name, "device": args.device, "dtype": "f32",
                          "prompt": case["prompt"], "aha": ours, "transformers": theirs,
                          "cpu_reference": case["new_tokens"], "pass": ours == theirs})
            del hf
        else:
            sdpa = load(path, torch.bfloat16, "sdpa")
            eager = load(path, torch.bfloat16, "eager")
            fp32 = load(path, torch.float32, "sdpa")
            for variant, dtype, compute in (("bf16 weights", "bf16", None),
                                            ("mixed (f32 weights, bf16 compute)", "f32", "bf16")):
                sums = {"to_sdpa": 0.0, "to_eager": 0.0, "eager_to_sdpa": 0.0, "to_fp32": 0.0}
                worst = 0.0
                for text in texts:
                    ours = aha_logprobs(args.aha, path, text, args.device, dtype, compute)
                    ids = ours["tokens"]
                    a, s, e, f = ours["logprobs"], hf_logprobs(sdpa, ids), hf_logprobs(eager, ids), hf_logprobs(fp32, ids)
                    mean = lambda x, y: sum(abs(p - q) for p, q in zip(x, y)) / len(x)
                    sums["to_sdpa"] += mean(a, s)
                    sums["to_eager"] += mean(a, e)
                    sums["eager_to_sdpa"] += mean(e, s)
                    sums["to_fp32"] += mean(a, f)
                    worst = max(worst, max(abs(p - q) for p, q in zip(a, s)))
                m = {k: v / len(texts) for k, v in sums.items()}
                nearest = min(m["to_sdpa"], m["to_eager"])
                ok = nearest <= 1.5 * m["eager_to_sdpa"] and max(m["to_sdpa"], m["to_eager"]) < m["to_fp32"]
                emit({"check": "logprobs", "model": name, "device": args.device, "dtype": "bf16",
                      "variant": variant, **{f"mean_abs_diff_{k}": round(v, 6) for k, v in m.items()},
                      "max_abs_diff_vs_sdpa": round(worst, 6),
                      "rule": "min(to_sdpa, to_eager) <= 1.5 * eager_to_sdpa and both < to_fp32",
                      "pass": ok})
            del sdpa, eager, fp32
        if device.type == "cuda":
            torch.cuda.empty_cache()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
