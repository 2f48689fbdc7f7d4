#!/usr/bin/env python3
"""GRPO step time of Hugging Face TRL's GRPOTrainer on CPU (or --device cuda, with or without
colocated vLLM: bench/gpu_check.sh): the twin of `aha train` with bench/configs/grpo-bench.toml
(bench/compare_grpo.sh runs both).

Workload: P prompts x G completions per step (8 x 8 = 64), every prompt exactly --prompt-tokens
tokens, exactly --new-tokens completion tokens (min_new_tokens = max_new_tokens: the eos token
cannot be sampled), temperature 1, no top-k/top-p, loss_type dapo, beta 0, num_iterations 1,
AdamW at a constant lr, fp32, one optimizer step per generation batch (per_device_train_batch_size
= P*G, gradient_accumulation_steps = 1; --micro-batch M splits it into P*G/M accumulated passes,
still one generation and one optimizer step per step). The reward is DAPO's soft overlong penalty computed from
the completion's token count (aha's `length` checker with the same options) plus 1 when the text
contains a "q" (aha's `format` checker, pattern "q"; --reward-pattern changes the regex):
negligible cost, and rewards that differ within nearly every group.

Each step is timed with a TrainerCallback (on_step_begin -> on_step_end: generation, scoring,
forward, backward, optimizer step); the first --skip steps are warm-up. The generation inside
each step (GRPOTrainer._generate) is timed too. Prints one JSON line.

Helpers used by bench/compare_grpo.sh:
  --write-prompts FILE   write the benchmark's prompts as aha JSONL ({"question", "answer"}), exit
  --no-eos-copy SRC DST  make DST a copy of the checkpoint folder SRC (files symlinked) whose
                         config.json has eos_token_id null, so that aha never stops early; exit
"""

import argparse
import json
import os
import random
import re
import resource
import shutil
import statistics
import sys
import time

PROMPT_TEMPLATES = [
    "Add up the numbers {nums} and tell me the total.",
    "Compute the product of {nums}, then subtract one.",
    "Which is the largest of {nums}? Explain briefly.",
    "Sort {nums} from the smallest to the largest.",
]


def make_prompts(tokenizer, count, tokens, seed=0):
    """`count` distinct short arithmetic questions of exactly `tokens` tokens each."""
    rng = random.Random(seed)
    out, seen = [], set()
    for _ in range(200_000):
        if len(out) == count:
            break
        template = rng.choice(PROMPT_TEMPLATES)
        nums = []
        while True:
            nums.append(str(rng.randint(1, 999)))
            text = template.format(nums=", ".join(nums))
            n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
            if n >= tokens:
                break
        if n == tokens and text not in seen:
            seen.add(text)
            out.append(text)
    if len(out) < count:
        sys.exit(f"could not make {count} prompts of exactly {tokens} tokens")
    return out


def soft_overlong_penalty(length, max_tokens, cache_tokens):
    """aha's `length` checker (DAPO's soft overlong penalty), in [-1, 0]."""
    free = max_tokens - cache_tokens
    if length <= free:
        return 0.0
    if length <= max_tokens:
        return (free - length) / cache_tokens
    return -1.0


def no_eos_copy(src, dst):
    if os.path.isdir(dst):
        shutil.rmtree(dst)
    os.makedirs(dst)
    for name in os.listdir(src):
        if name in ("config.json", "generation_config.json"):
            with open(os.path.join(src, name)) as f:
                config = json.load(f)
            config["eos_token_id"] = None
            with open(os.path.join(dst, name), "w") as f:
                json.dump(config, f, indent=2)
        else:
            os.symlink(os.path.abspath(os.path.join(src, name)), os.path.join(dst, name))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="checkpoint folder (a local Hugging Face folder)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=8, help="prompts per step")
    ap.add_argument("--group-size", type=int, default=8, help="completions per prompt")
    ap.add_argument("--prompt-tokens", type=int, default=40)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--skip", type=int, default=2, help="warm-up steps left out of the statistics")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--loss-type", default="dapo")
    ap.add_argument("--cache-tokens", type=int, default=32, help="length reward's ramp")
    ap.add_argument("--gradient-checkpointing", action="store_true",
                    help="TRL's default (True); off here because aha does not recompute activations")
    ap.add_argument("--bf16", action="store_true",
                    help="mixed precision: fp32 weights, bf16 autocast (GRPOConfig(bf16=True))")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (one GPU)")
    ap.add_argument("--micro-batch", type=int, default=None,
                    help="completions per forward/backward pass (default: all of a step's)")
    ap.add_argument("--reward-pattern", default="q",
                    help="regex (re.search) whose match adds 1 to the reward: aha's `format` pattern")
    ap.add_argument("--use-vllm", action="store_true", help="generate with colocated vLLM")
    ap.add_argument("--vllm-gpu-memory-utilization", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--beta", type=float, default=0.0, help="KL coefficient (a reference model when > 0)")
    ap.add_argument("--lora-r", type=int, default=0,
                    help="train a PEFT LoRA adapter of this rank (alpha 2r, all-linear) instead of every weight")
    ap.add_argument("--load-avg", default=None, help="recorded in the output (compare_grpo.sh)")
    ap.add_argument("--num-problems", type=int, default=64)
    ap.add_argument("--write-prompts", metavar="FILE")
    ap.add_argument("--no-eos-copy", nargs=2, metavar=("SRC", "DST"))
    args = ap.parse_args()

    if args.no_eos_copy:
        no_eos_copy(*args.no_eos_copy)
        return

    import torch
    torch.set_num_threads(args.threads)
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    prompts = make_prompts(tokenizer, args.num_problems, args.prompt_tokens)
    if args.write_prompts:
        with open(args.write_prompts, "w") as f:
            for i, q in enumerate(prompts):
                f.write(json.dumps({"id": f"p{i}", "question": q, "answer": "0"}) + "\n")
        return

    import datasets
    import trl
    from trl import GRPOConfig, GRPOTrainer

    datasets.disable_progress_bars()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    n_params = sum(p.numel() for p in model.parameters())
    dataset = datasets.Dataset.from_list([{"prompt": q} for q in prompts])

    def length_reward(completions, completion_ids, **kwargs):
        # The length penalty is the same for every completion (all are --new-tokens long); the
        # letter term (aha's `format` checker with pattern "q": about half of these models'
        # completions contain a q) gives nearly every group rewards that differ, so both sides
        # train on every completion (aha skips completions whose advantage is 0).
        return [soft_overlong_penalty(len(ids), args.new_tokens, args.cache_tokens)
                + (1.0 if pattern.search(text) else 0.0)
                for text, ids in zip(completions, completion_ids)]

    pattern = re.compile(args.reward_pattern)
    cuda = args.device.startswith("cuda")
    batch = args.prompts * args.group_size
    micro = args.micro_batch or batch
    if batch % micro:
        sys.exit(f"--micro-batch {micro} must divide prompts x group size ({batch})")
    if args.use_vllm:
        # vLLM's SamplingParams: min_tokens keeps eos out as min_new_tokens does in generate.
        generation_kwargs = {"min_tokens": args.new_tokens}
        vllm_args = dict(use_vllm=True, vllm_mode="colocate",
                         vllm_gpu_memory_utilization=args.vllm_gpu_memory_utilization)
    else:
        generation_kwargs = {"min_new_tokens": args.new_tokens}  # eos is never sampled
        vllm_args = dict(use_vllm=False)
    out_dir = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"trl-grpo-bench-{os.getpid()}")
    config = GRPOConfig(
        output_dir=out_dir,
        use_cpu=not cuda,
        bf16=args.bf16,
        fp16=False,
        **vllm_args,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=batch // micro,
        num_generations=args.group_size,
        generation_batch_size=batch,  # one generation batch per optimizer step: 8 prompts x 8
        max_completion_length=args.new_tokens,
        generation_kwargs=generation_kwargs,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        loss_type=args.loss_type,
        beta=args.beta,
        num_iterations=1,
        epsilon=0.2,
        scale_rewards="group",
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        max_steps=args.steps,
        gradient_checkpointing=args.gradient_checkpointing,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=args.seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )

    def sync():
        if cuda:
            torch.cuda.synchronize()

    class Timer(TrainerCallback):
        def __init__(self):
            self.step_s, self.logs, self._t0 = [], [], None
            self.generation_s = []  # per step: the time spent in GRPOTrainer._generate

        def on_step_begin(self, args_, state, control, **kw):
            sync()
            self._t0 = time.perf_counter()
            self.generation_s.append(0.0)

        def on_step_end(self, args_, state, control, **kw):
            sync()
            self.step_s.append(time.perf_counter() - self._t0)

        def on_log(self, args_, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                self.logs.append(dict(logs))

    timer = Timer()
    peft_config = None
    if args.lora_r:
        from peft import LoraConfig
        peft_config = LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=model, reward_funcs=length_reward, args=config,
                          train_dataset=dataset, processing_class=tokenizer, callbacks=[timer],
                          peft_config=peft_config)
    # What the trainer will actually do, checked rather than assumed.
    assert trainer.args.generation_batch_size == batch, trainer.args.generation_batch_size
    assert trainer.args.steps_per_generation == batch // micro, trainer.args.steps_per_generation
    assert trainer.num_generations == args.group_size
    generate = trainer._generate

    def timed_generate(*a, **kw):
        sync()
        t0 = time.perf_counter()
        out = generate(*a, **kw)
        sync()
        if timer.generation_s:
            timer.generation_s[-1] += time.perf_counter() - t0
        return out

    trainer._generate = timed_generate
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    shutil.rmtree(out_dir, ignore_errors=True)

    steady = timer.step_s[args.skip:]
    lengths = [l["completions/mean_length"] for l in timer.logs][args.skip:]
    s_step = statistics.median(steady)
    gen_steady = timer.generation_s[args.skip:]
    length_mean = statistics.mean(lengths)
    tokens_per_step = length_mean * batch
    print(json.dumps({
        "impl": "trl",
        "trl_version": trl.__version__,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "model": args.model,
        "params": n_params,
        "threads": args.threads,
        "device": args.device,
        "vllm": args.use_vllm,
        "micro_batch": micro,
        "load_avg_before": args.load_avg,
        "completions_per_step": batch,
        "prompt_tokens": args.prompt_tokens,
        "max_new_tokens": args.new_tokens,
        "loss_type": args.loss_type,
        "gradient_checkpointing": args.gradient_checkpointing,
        "precision": "bf16 autocast" if args.bf16 else "fp32",
        "beta": args.beta,
        "lora_r": args.lora_r,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "steps_timed": len(steady),
        "s_per_step": round(s_step, 4),
        "s_per_step_mean": round(statistics.mean(steady), 4),
        "step_s": [round(s, 3) for s in timer.step_s],
        "completion_length_mean": length_mean,
        "completion_length_min": min(l["completions/min_length"] for l in timer.logs),
        "completion_length_max": max(l["completions/max_length"] for l in timer.logs),
        "completion_tokens_per_s": round(tokens_per_step / s_step, 1),
        "generation_s": round(statistics.median(gen_steady), 4) if gen_steady else None,
        "generation_tokens_per_s": round(tokens_per_step / statistics.median(gen_steady), 1)
        if gen_steady and statistics.median(gen_steady) > 0 else None,
        **({"peak_gpu_allocated_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
            "peak_gpu_reserved_mib": round(torch.cuda.max_memory_reserved() / 2**20, 1)}
           if cuda else {}),
    }))


if __name__ == "__main__":
    main()
