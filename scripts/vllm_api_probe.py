#!/usr/bin/env python3
"""Probe a running vLLM server (scripts/vllm_servers.sh) against aha and transformers.

Usage (the project venv, for the transformers reference):
  /work/main/.venv/bin/python scripts/vllm_api_probe.py --port 18001 --model tests/fixtures/models/vllm-qwen2 \
      --model2 /tmp/vllm-qwen2-seed20 --aha /work/bin/aha [--out runs/vllm-probe.json]

Prints what it finds and writes every request/response pair to --out. --model2: a checkpoint of the
same shapes with other weights (scripts/make_vllm_test_model.py --seed 20 --out DIR) for the
reload test; the server is reloaded back to --model at the end.
"""

import argparse
import json
import os
import subprocess
import time
import urllib.error
import urllib.request

import torch

LOG = []


def http(port, method, path, body=None, quiet=False):
    url = f"http://127.0.0.1:{port}{path}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    t0 = time.time()
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    dt = time.time() - t0
    try:
        out = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        out = raw.decode(errors="replace")
    LOG.append({"method": method, "path": path, "body": body, "status": status, "seconds": round(dt, 4),
                "response": out})
    if not quiet:
        print(f"{method} {path} {json.dumps(body) if body is not None else ''}\n  -> {status} in {dt:.3f}s: "
              f"{json.dumps(out)[:1500]}")
    return status, out, dt


def aha_json(aha, *args):
    out = subprocess.run([aha, *args, "--threads", "1"], check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


class Ref:
    """Teacher-forced log-probs with transformers (fp32, eager)."""

    def __init__(self, path):
        from transformers import AutoModelForCausalLM
        self.m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                      attn_implementation="eager").eval()

    @torch.no_grad()
    def logprobs(self, prompt, completion, temperature=1.0, top_k=0):
        ids = torch.tensor([prompt + completion])
        logits = self.m(ids).logits[0, len(prompt) - 1:-1].float()
        logits = logits / temperature
        if top_k:
            kth = logits.topk(top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        lp = logits.log_softmax(-1)
        return [lp[i, t].item() for i, t in enumerate(completion)]

    @torch.no_grad()
    def greedy(self, prompt, n, eos=390):
        ids = list(prompt)
        out = []
        for _ in range(n):
            t = int(self.m(torch.tensor([ids])).logits[0, -1].argmax())
            out.append(t)
            ids.append(t)
            if t == eos:
                break
        return out


def maxdiff(a, b):
    return max(abs(x - y) for x, y in zip(a, b)) if a else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=18001)
    ap.add_argument("--model", required=True)
    ap.add_argument("--model2")
    ap.add_argument("--aha", default="/work/bin/aha")
    ap.add_argument("--out", default="runs/vllm-probe.json")
    args = ap.parse_args()
    model = os.path.abspath(args.model)
    port = args.port
    ref = Ref(model)

    http(port, "GET", "/health")
    _, models, _ = http(port, "GET", "/v1/models")
    name = models["data"][0]["id"]
    http(port, "GET", "/version")
    http(port, "GET", "/is_paused")

    text = "The cat sat on"
    prompt = aha_json(args.aha, "logprobs", "--model", model, "--text", text + " the")[0]["tokens"][:-1]
    # check: aha's tokens of `text` (the last token of "... the" dropped)
    print("prompt ids", prompt)
    aha_g = aha_json(args.aha, "generate", "--model", model, "--prompt", text, "--temperature", "0",
                     "--max-new-tokens", "24", "--json")[0]

    base = {"model": name, "prompt": prompt, "max_tokens": 24, "logprobs": 0, "return_token_ids": True}
    # 1. greedy
    _, r, _ = http(port, "POST", "/v1/completions", {**base, "temperature": 0})
    c = r["choices"][0]
    ids, lps = c["token_ids"], c["logprobs"]["token_logprobs"]
    print(f"GREEDY vllm ids {ids} finish {c['finish_reason']} stop_reason {c.get('stop_reason')}")
    print(f"GREEDY aha  ids {aha_g['token_ids']} finish {aha_g['finish_reason']}")
    print(f"GREEDY same tokens: {ids == aha_g['token_ids']}; max |lp vllm - lp aha| "
          f"{maxdiff(lps, aha_g['logprobs']):.3g}; vs transformers "
          f"{maxdiff(lps, ref.logprobs(prompt, ids)):.3g}")

    # 2. sampling at T=0.7, no filters: which log-prob is returned?
    T = 0.7
    _, r, _ = http(port, "POST", "/v1/completions",
                   {**base, "n": 4, "seed": 1, "temperature": T, "top_p": 1.0, "top_k": -1, "min_p": 0.0})
    for c in r["choices"]:
        ids, lps = c["token_ids"], c["logprobs"]["token_logprobs"]
        print(f"T={T} choice {c['index']} n_tok {len(ids)} finish {c['finish_reason']}: "
              f"|lp - ref(T)| {maxdiff(lps, ref.logprobs(prompt, ids, T)):.3g}, "
              f"|lp - ref(1)| {maxdiff(lps, ref.logprobs(prompt, ids, 1.0)):.3g}")
    seeded = [c["token_ids"] for c in r["choices"]]
    _, r2, _ = http(port, "POST", "/v1/completions",
                    {**base, "n": 4, "seed": 1, "temperature": T, "top_p": 1.0, "top_k": -1, "min_p": 0.0},
                    quiet=True)
    print("same seed -> same samples:", seeded == [c["token_ids"] for c in r2["choices"]],
          "; distinct within n:", len({tuple(s) for s in seeded}))
    # aha logprobs --temperature on one sample, when the completion's text retokenizes the same
    c = r["choices"][0]
    t_full = aha_json(args.aha, "logprobs", "--model", model, "--text", text + c["text"],
                      "--temperature", str(T))[0]
    if t_full["tokens"] == prompt + c["token_ids"]:
        print(f"aha logprobs --temperature {T} vs vllm: "
              f"{maxdiff(t_full['logprobs'][len(prompt) - 1:], c['logprobs']['token_logprobs']):.3g}")
    else:
        print("aha logprobs: text of choice 0 does not retokenize to the same ids; skipped")

    # 3. top_k filter: renormalised?
    _, r, _ = http(port, "POST", "/v1/completions",
                   {**base, "n": 2, "seed": 2, "temperature": T, "top_k": 5}, quiet=True)
    for c in r["choices"]:
        ids, lps = c["token_ids"], c["logprobs"]["token_logprobs"]
        print(f"top_k=5 T={T}: |lp - ref(T)| {maxdiff(lps, ref.logprobs(prompt, ids, T)):.3g}, "
              f"|lp - ref(T, top_k renormalised)| {maxdiff(lps, ref.logprobs(prompt, ids, T, top_k=5)):.3g}")

    # 4. stop tokens, ignore_eos, include_stop_str_in_output, skip_special_tokens
    g = aha_g["token_ids"]
    stop_at = g[3]
    for extra in [{"stop_token_ids": [stop_at]},
                  {"stop_token_ids": [stop_at], "include_stop_str_in_output": True},
                  {"ignore_eos": True, "max_tokens": 30},
                  {"skip_special_tokens": False},
                  {"max_tokens": 3}]:
        http(port, "POST", "/v1/completions", {**base, "temperature": 0, **extra})

    # 5. errors
    http(port, "POST", "/v1/completions", {**base, "temperature": 0, "bogus_field": 1})
    http(port, "POST", "/v1/completions", {**base, "temperature": -1})
    http(port, "POST", "/v1/completions", {**base, "prompt": [999999]})
    http(port, "POST", "/v1/completions", {**base, "model": "nope"})
    http(port, "POST", "/v1/completions", {**base, "max_tokens": 100000})

    # 6. prompt_logprobs: teacher-forced scoring through the server
    _, r, _ = http(port, "POST", "/v1/completions",
                   {"model": name, "prompt": prompt + g, "max_tokens": 1, "temperature": 0,
                    "prompt_logprobs": 0, "return_token_ids": True})
    pl = r["choices"][0]["prompt_logprobs"]
    got = [pl[len(prompt) + i][str(t)]["logprob"] for i, t in enumerate(g)]
    print(f"prompt_logprobs vs aha greedy logprobs: {maxdiff(got, aha_g['logprobs']):.3g}")

    # 7. concurrency
    import concurrent.futures as cf
    for k in [1, 8, 32, 64]:
        t0 = time.time()
        with cf.ThreadPoolExecutor(k) as ex:
            list(ex.map(lambda i: http(port, "POST", "/v1/completions",
                                       {**base, "temperature": 1.0, "seed": i, "ignore_eos": True,
                                        "max_tokens": 32}, quiet=True), range(k)))
        print(f"{k} concurrent requests x 32 tokens: {time.time() - t0:.2f}s")

    # 8. weight reload
    if args.model2:
        m2 = os.path.abspath(args.model2)
        aha2 = aha_json(args.aha, "generate", "--model", m2, "--prompt", text, "--temperature", "0",
                        "--max-new-tokens", "24", "--json")[0]
        t0 = time.time()
        http(port, "POST", "/pause?mode=wait")
        http(port, "GET", "/is_paused")
        http(port, "POST", "/collective_rpc",
             {"method": "reload_weights", "kwargs": {"weights_path": m2, "is_checkpoint_format": True}})
        http(port, "POST", "/reset_prefix_cache")
        http(port, "POST", "/resume")
        print(f"reload cycle (pause, reload, reset, resume): {time.time() - t0:.3f}s")
        _, r, _ = http(port, "POST", "/v1/completions", {**base, "temperature": 0})
        c = r["choices"][0]
        print(f"after reload: same tokens as aha on model2: {c['token_ids'] == aha2['token_ids']}; "
              f"max |lp diff| {maxdiff(c['logprobs']['token_logprobs'], aha2['logprobs']):.3g}; "
              f"tokens changed from model1: {c['token_ids'] != aha_g['token_ids']}")
        # back to model 1
        t0 = time.time()
        http(port, "POST", "/pause", quiet=True)
        http(port, "POST", "/collective_rpc",
             {"method": "reload_weights", "kwargs": {"weights_path": model, "is_checkpoint_format": True}},
             quiet=True)
        http(port, "POST", "/reset_prefix_cache", quiet=True)
        http(port, "POST", "/resume", quiet=True)
        print(f"reload back: {time.time() - t0:.3f}s")
        _, r, _ = http(port, "POST", "/v1/completions", {**base, "temperature": 0}, quiet=True)
        c = r["choices"][0]
        print(f"back on model1: same tokens as aha: {c['token_ids'] == aha_g['token_ids']}; "
              f"max |lp diff| {maxdiff(c['logprobs']['token_logprobs'], aha_g['logprobs']):.3g}")
        # a request while paused
        http(port, "POST", "/pause")
        st = {}

        def paused_req():
            st["r"] = http(port, "POST", "/v1/completions", {**base, "temperature": 0, "max_tokens": 4})

        import threading
        th = threading.Thread(target=paused_req)
        th.start()
        time.sleep(3)
        print("request sent while paused still waiting after 3 s:", th.is_alive())
        http(port, "POST", "/resume")
        th.join(60)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(LOG, f, indent=1)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
