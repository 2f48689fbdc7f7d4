#!/usr/bin/env python3
"""Helpers of bench/gpu_check.sh (standard library only):

  measure --gpu|--no-gpu --out FILE -- CMD...  run CMD; write its wall time, the peak memory.used
                                  of the GPU over the run (nvidia-smi, every 0.2 s) minus the
                                  level before it, and the children's peak RSS to FILE (JSON)
  aha-grpo METRICS_JSONL --skip K  one JSON line from an `aha train` run's metrics.jsonl:
                                  median step, generation and training seconds of the steps
                                  after the first K (the shape of bench/compare_grpo.sh's lines)
  annotate --model DIR --kind gen|grpo [--peak-tflops X] --measure FILE
                                  read a JSON line on stdin, add model FLOPs, achieved TFLOP/s,
                                  MFU and the measured peak memory, print it
  peak-tflops                     the bf16 dense peak of the GPU nvidia-smi names (or nothing)
  summary RESULTS_JSONL           the table at the end of the log

Model FLOPs (as tests/benches/rollout_throughput.rs counts them): a token at context c costs
2 * (layers * (q,k,v,o projections + MLP + 2 * heads * head_dim * c) + hidden * vocab) FLOPs
(attention over the causal context, the LM head once per token). Generation: each prompt's
prefill once (the samples share it) plus every sampled token but the last fed back. A GRPO step:
the generation plus training at 3x a forward pass over every sequence (prompt and completion;
LM head on completion positions only), with no activation recomputation counted.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time

# bf16 dense tensor-core peaks (TFLOP/s) from the vendors' data sheets, by nvidia-smi name.
PEAKS = [
    ("H200", 989.4), ("H100 SXM", 989.4), ("H100 80GB HBM3", 989.4), ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0), ("H100", 989.4), ("GH200", 989.4), ("B200", 2250.0), ("A100", 312.0),
    ("L40S", 362.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0), ("RTX 4090", 165.2),
]


def gpu_name():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout
        return out.strip().splitlines()[0] if out.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def peak_tflops(name=None):
    name = name or gpu_name()
    if not name:
        return None, None
    for key, value in PEAKS:
        if key.lower() in name.lower():
            return value, name
    return None, name


def gpu_used_mib():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
        return float(out.strip().splitlines()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def measure(argv):
    gpu = "--gpu" in argv[: argv.index("--")]
    out = argv[argv.index("--out") + 1]
    cmd = argv[argv.index("--") + 1:]
    baseline = gpu_used_mib() if gpu else None
    load = [round(x, 2) for x in os.getloadavg()]
    peak = [baseline]
    done = threading.Event()

    def poll():
        while not done.wait(0.2):
            used = gpu_used_mib()
            if used is not None and (peak[0] is None or used > peak[0]):
                peak[0] = used

    poller = threading.Thread(target=poll, daemon=True)
    if gpu:
        poller.start()
    t0 = time.perf_counter()
    rc = subprocess.call(cmd)
    wall = time.perf_counter() - t0
    done.set()
    if gpu:
        poller.join()
    record = {
        "wall_s": round(wall, 2),
        "rc": rc,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "load_avg_before": load,
    }
    if gpu and peak[0] is not None and baseline is not None:
        record.update({"gpu_baseline_mib": baseline, "peak_gpu_used_mib": peak[0] - baseline})
    with open(out, "w") as f:
        json.dump(record, f)
    return rc


def aha_grpo(argv):
    path = argv[0]
    skip = int(argv[argv.index("--skip") + 1]) if "--skip" in argv else 1
    rows = [json.loads(l) for l in open(path) if l.strip()]
    if len(rows) <= skip:
        sys.exit(f"{path}: {len(rows)} steps, none left after skipping {skip}")
    steady = rows[skip:]
    med = lambda k: round(statistics.median(r[k] for r in steady), 4)
    length = statistics.mean(r["completion_length_mean"] for r in steady)
    completions = rows[0]["completions"]
    s_step, s_gen = med("step_s"), med("generation_s")
    print(json.dumps({
        "impl": "aha",
        "completions_per_step": completions,
        "steps_timed": len(steady),
        "s_per_step": s_step,
        "step_s": [round(r["step_s"], 3) for r in rows],
        "generation_s": s_gen,
        "train_s": med("train_s"),
        "reward_wait_s": med("reward_wait_s"),
        "completion_length_mean": length,
        "completion_tokens_per_s": round(length * completions / s_step, 1),
        "generation_tokens_per_s": round(length * completions / s_gen, 1) if s_gen > 0 else None,
        "frac_reward_zero_std": statistics.mean(r["frac_reward_zero_std"] for r in steady),
    }))
    zero = statistics.mean(r["frac_reward_zero_std"] for r in steady)
    if zero > 0.25:
        print(f"warning: {zero:.0%} of the groups had equal rewards: aha skips those completions, "
              "TRL trains on them, so the step times do not compare", file=sys.stderr)


def flops_per_token(c, context, lm_head=True):
    h, layers = c["hidden_size"], c["num_hidden_layers"]
    heads, kv = c["num_attention_heads"], c["num_key_value_heads"]
    d = c.get("head_dim") or h // heads
    projections = h * heads * d * 2 + h * kv * d * 2 + 3 * h * c["intermediate_size"]
    attention = 2 * heads * d * context
    return 2.0 * (layers * (projections + attention) + (h * c["vocab_size"] if lm_head else 0))


def generation_flops(c, prompts, group, prompt_tokens, new_tokens):
    prefill = prompts * sum(flops_per_token(c, t + 1) for t in range(prompt_tokens))
    decode = prompts * group * sum(flops_per_token(c, prompt_tokens + t) for t in range(1, int(new_tokens)))
    return prefill + decode


def training_flops(c, sequences, prompt_tokens, new_tokens):
    forward = sum(flops_per_token(c, t + 1, lm_head=t >= prompt_tokens)
                  for t in range(prompt_tokens + int(new_tokens)))
    return 3.0 * sequences * forward


def annotate(argv):
    args = dict(zip(argv[::2], argv[1::2]))
    line = sys.stdin.read().strip().splitlines()
    if not line:
        sys.exit("annotate: no JSON line on stdin")
    record = json.loads(line[-1])
    config = json.load(open(os.path.join(args["--model"], "config.json")))
    prompts, group = int(args["--prompts"]), int(args["--group-size"])
    p, n = int(args["--prompt-tokens"]), int(args["--new-tokens"])
    peak = float(args["--peak-tflops"]) if args.get("--peak-tflops") else None
    gen = generation_flops(config, prompts, group, p, n)
    if args["--kind"] == "gen":
        flops, seconds = gen, record.get("seconds")
    else:
        flops, seconds = gen + training_flops(config, prompts * group, p, n), record.get("s_per_step")
        if record.get("generation_s"):
            record["generation_tflop_s"] = round(gen / record["generation_s"] / 1e12, 2)
            if peak:
                record["generation_mfu"] = round(gen / record["generation_s"] / 1e12 / peak, 4)
    record["model_flops"] = flops
    if seconds:
        record["tflop_s"] = round(flops / seconds / 1e12, 2)
        record["mfu"] = round(flops / seconds / 1e12 / peak, 4) if peak else None
    record["peak_tflops_assumed"] = peak
    if args.get("--measure") and os.path.exists(args["--measure"]):
        record["measured"] = json.load(open(args["--measure"]))
    for key in ("--stage", "--label"):
        if args.get(key):
            record[key[2:]] = args[key]
    print(json.dumps(record))


def summary(argv):
    rows = [json.loads(l) for l in open(argv[0]) if l.strip()]
    stages = [r for r in rows if r.get("type") == "stage"]
    results = [r for r in rows if r.get("type") != "stage"]
    print("\nmeasurements (tokens/s are completion tokens; peak GPU = nvidia-smi memory.used over the run)")
    header = f"{'stage':<14} {'label':<26} {'gen tok/s':>10} {'s/step':>8} {'MFU':>7} {'gen MFU':>8} {'peak GPU MiB':>12} {'peak RSS MiB':>12}"
    print(header)
    for r in results:
        if "label" not in r:
            continue
        m = r.get("measured", {})
        gen = r.get("completion_tok_s") or r.get("generation_tokens_per_s")
        fmt = lambda v, f: (f.format(v) if isinstance(v, (int, float)) else "-")
        print(f"{r.get('stage', ''):<14} {r['label']:<26} {fmt(gen, '{:.0f}'):>10} "
              f"{fmt(r.get('s_per_step'), '{:.3f}'):>8} {fmt(r.get('mfu'), '{:.1%}'):>7} "
              f"{fmt(r.get('generation_mfu'), '{:.1%}'):>8} {fmt(m.get('peak_gpu_used_mib'), '{:.0f}'):>12} "
              f"{fmt(m.get('peak_rss_mib'), '{:.0f}'):>12}")
    checks = [r for r in results if "check" in r]
    if checks:
        bad = [r for r in checks if not r.get("pass")]
        print(f"\nparity checks: {len(checks) - len(bad)} passed, {len(bad)} failed")
        for r in bad:
            print("  FAILED:", json.dumps(r)[:300])
    print("\nstages")
    for s in stages:
        print(f"  {s['stage']:<16} {s['status']:<8} {s['seconds']:>7.1f} s  {s.get('note', '')}")
    failed = [s["stage"] for s in stages if s["status"] not in ("pass", "skipped")]
    print(f"\n{sum(s['status'] == 'pass' for s in stages)} passed, {len(failed)} failed"
          f"{', ' + str(sum(s['status'] == 'skipped' for s in stages)) + ' skipped' if any(s['status'] == 'skipped' for s in stages) else ''}"
          f"{': ' + ' '.join(failed) if failed else ''}")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, argv = sys.argv[1], sys.argv[2:]
    if cmd == "measure":
        sys.exit(measure(argv))
    elif cmd == "aha-grpo":
        aha_grpo(argv)
    elif cmd == "annotate":
        annotate(argv)
    elif cmd == "peak-tflops":
        value, name = peak_tflops()
        print(f"{value or ''}\t{name or ''}")
    elif cmd == "summary":
        summary(argv)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
