#!/usr/bin/env python3
"""Create tiny random checkpoints + transformers reference outputs under tests/fixtures/.

Usage:
  python scripts/make_fixtures.py                      # (re)generate tests/fixtures/
  python scripts/make_fixtures.py --check-saved DIR --like qwen2 [--tol 1e-5]
      load a checkpoint written by another implementation with transformers and
      check its log-probs on the expected.json texts of model `--like`.

Everything is fp32 on CPU and deterministic (fixed seeds). Requires torch and
transformers (see the version recorded in tests/fixtures/expected.json).
"""

import argparse
import json
import math
import os
import random
import shutil
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
MODELS_DIR = os.path.join(FIXTURES, "models")
EXPECTED = os.path.join(FIXTURES, "expected.json")

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# BPE vocab (256 bytes + merges) before the 3 added special tokens.
BPE_VOCAB = 390
MAX_NEW_TOKENS = 24
# Required top-1 vs top-2 logit margin at every greedy step (stricter than the 1e-3 the
# Rust tests need, so fp32 rounding differences cannot flip an argmax).
MIN_MARGIN = 1e-2
WEIGHT_STD = 0.4  # default init (0.02) gives near-uniform logits and greedy near-ties
EOS_ROW_SCALE = 1.5  # boost eos rows of lm_head so some greedy runs stop on eos

# Qwen2's pre-tokenizer split regex (tokenizer.json of Qwen/Qwen2-*).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

LOGPROB_TEXTS = [
    "The cat sat on the mat.",
    "<|im_start|>user\nWhat is 12 + 35?<|im_end|>\n<|im_start|>assistant\n<think>12 + 35 = 47</think> <answer>47</answer><|im_end|>",
    "7 + 8 = 15, then 15 + 26 = 41. <think>Add one step at a time.</think> "
    "The answer is <answer>41</answer>.",
]

# Greedy prompts are taken in order from this list; a prompt is skipped if any greedy
# step has a top-1/top-2 logit margin <= MIN_MARGIN (deterministic re-choice).
GREEDY_CANDIDATES = [
    "<|im_start|>user\nWhat is 3 + 4?<|im_end|>\n<|im_start|>assistant\n",
    "The quick brown fox",
    "Compute 21 + 19 =",
    "<think>",
    "A student adds the numbers",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n",
    "12 + 35 = 47. 8 + 9 =",
    "Once upon a time",
    "The answer is",
    "<answer>",
    "What is 5 + 6? Let me think",
    "The teacher reads a book",
    "<|im_start|>user\nWhat is 40 - 8?<|im_end|>\n<|im_start|>assistant\n<think>",
    "My friend finds the red ball",
    "99 * 2 =",
]
NUM_GREEDY = 3


# --------------------------------------------------------------------------- tokenizer

def build_corpus(seed=1234):
    rng = random.Random(seed)
    subjects = ["The cat", "A dog", "The student", "My friend", "The teacher", "A bird",
                "The model", "Our team", "The child", "A farmer"]
    verbs = ["sees", "likes", "counts", "finds", "eats", "reads", "writes", "adds",
             "takes", "wants"]
    objects = ["the apples", "a book", "the numbers", "some bread", "the answer",
               "a small box", "the red ball", "three cards", "the long road", "water"]
    tails = ["today.", "in the morning.", "at school.", "with care.", "again.",
             "after lunch.", "very quickly.", "on the table.", "every day.", "."]
    words = ["think", "answer", "question", "problem", "step", "first", "then",
             "finally", "therefore", "because", "sum", "total", "correct", "wrong"]
    lines = []
    for _ in range(300):
        lines.append(f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} "
                     f"{rng.choice(tails)}")
    for _ in range(300):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        op = rng.choice(["+", "-", "*"])
        r = a + b if op == "+" else (a - b if op == "-" else a * b)
        lines.append(f"{a} {op} {b} = {r}")
        lines.append(f"<think>First {a} {op} {b}. The {rng.choice(words)} is {r}.</think> "
                     f"<answer>{r}</answer>")
        lines.append(f"What is {a} {op} {b}? Let me {rng.choice(words)} step by step.")
    for _ in range(100):
        lines.append(" ".join(rng.choice(words) for _ in range(8)) + "\n")
    return lines


def build_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from tokenizers import AddedToken

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.post_processor = None
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(build_corpus(), trainer=trainer)
    assert tok.get_vocab_size() == BPE_VOCAB, tok.get_vocab_size()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    # The Python binding ignores ByteLevel decoder kwargs; write Qwen2's decoder JSON as-is.
    j = json.loads(tok.to_str())
    j["decoder"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                    "use_regex": False}
    return Tokenizer.from_str(json.dumps(j))


def make_hf_tokenizer():
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(),
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        clean_up_tokenization_spaces=False,
        model_max_length=256,
        chat_template=CHAT_TEMPLATE,
    )
    # No implicit special tokens.
    for t in LOGPROB_TEXTS:
        assert hf(t).input_ids == hf(t, add_special_tokens=False).input_ids
    return hf


# --------------------------------------------------------------------------- models

def reinit_(model, seed, std=WEIGHT_STD):
    """Re-initialise all weights with a large std so next-token distributions are peaky."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith("norm.weight"):  # input/post-attn/final/q/k norms
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(std * torch.randn(p.shape, generator=g))


def make_configs(tok_vocab, ids):
    from transformers import LlamaConfig, Qwen2Config, Qwen3Config

    vocab = ((tok_vocab + 7) // 8) * 8
    assert vocab > tok_vocab
    eot, im_end = ids["<|endoftext|>"], ids["<|im_end|>"]
    common = dict(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        hidden_act="silu", bos_token_id=eot,
    )
    qwen2 = Qwen2Config(
        **common, tie_word_embeddings=False, rms_norm_eps=1e-6, eos_token_id=eot,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        use_sliding_window=False,
    )
    llama = LlamaConfig(
        **common, tie_word_embeddings=True, rms_norm_eps=1e-5, eos_token_id=[eot, im_end],
        rope_parameters={
            "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    )
    qwen3 = Qwen3Config(
        **common, head_dim=32, tie_word_embeddings=True, rms_norm_eps=1e-6, eos_token_id=eot,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        use_sliding_window=False,
    )
    return {"qwen2": qwen2, "llama": llama, "qwen3": qwen3}


def build_model(name, config, seed):
    from transformers import LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM

    cls = {"qwen2": Qwen2ForCausalLM, "llama": LlamaForCausalLM, "qwen3": Qwen3ForCausalLM}[name]
    torch.manual_seed(seed)
    config._attn_implementation = "eager"
    model = cls(config).to(torch.float32)
    reinit_(model, seed)
    with torch.no_grad():
        for e in eos_list(config):
            model.lm_head.weight[e] *= EOS_ROW_SCALE
    if config.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    else:
        assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    if name == "qwen2":
        assert model.model.layers[0].self_attn.q_proj.bias.abs().min() > 0
    if name == "qwen3":
        assert model.model.layers[0].self_attn.q_proj.weight.shape == (128, 64)
        assert not torch.all(model.model.layers[0].self_attn.q_norm.weight == 1)
    model.eval()
    return model


def load_model(path):
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys",
                                                          "mismatched_keys")}
    if bad:
        raise SystemExit(f"loading {path}: {bad}")
    model.eval()
    return model


# --------------------------------------------------------------------------- reference outputs

@torch.no_grad()
def logprobs_of(model, tokens):
    ids = torch.tensor([tokens], dtype=torch.long)
    logits = model(input_ids=ids).logits.float()
    lp = torch.log_softmax(logits[0, :-1], dim=-1)
    return lp.gather(-1, ids[0, 1:, None])[:, 0].tolist()


def eos_list(config):
    e = config.eos_token_id
    return list(e) if isinstance(e, (list, tuple)) else [e]


@torch.no_grad()
def greedy(model, prompt_tokens, eos):
    """Returns (new_tokens, min_margin) from model.generate; cross-checked step by step."""
    ids = torch.tensor([prompt_tokens], dtype=torch.long)
    out = model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
        max_new_tokens=MAX_NEW_TOKENS, eos_token_id=eos if len(eos) > 1 else eos[0],
        pad_token_id=eos[0], return_dict_in_generate=True, output_logits=True,
    )
    new = out.sequences[0, len(prompt_tokens):].tolist()
    if any(t in eos for t in new):
        first = min(i for i, t in enumerate(new) if t in eos)
        new = new[: first + 1]
    margin = math.inf
    for step, lg in enumerate(out.logits[: len(new)]):
        top = torch.topk(lg[0].float(), 2).values
        margin = min(margin, (top[0] - top[1]).item())
    # Cross-check against a no-cache full forward recomputation.
    seq = list(prompt_tokens)
    for t in new:
        logits = model(input_ids=torch.tensor([seq]), use_cache=False).logits[0, -1]
        top2 = torch.topk(logits, 2)
        assert top2.indices[0].item() == t, "generate disagrees with full-forward argmax"
        margin = min(margin, (top2.values[0] - top2.values[1]).item())
        seq.append(t)
    return new, margin


def reference(model, tok, name):
    eos = eos_list(model.config)
    entry = {
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "eos_token_ids": eos,
        "logprobs": [],
        "greedy": [],
    }
    for text in LOGPROB_TEXTS:
        tokens = tok(text, add_special_tokens=False).input_ids
        assert 10 <= len(tokens) <= 60, (text, len(tokens))
        entry["logprobs"].append({"text": text, "tokens": tokens,
                                  "logprobs": logprobs_of(model, tokens)})
    # Candidates whose every greedy step has a clear argmax, in list order.
    ok = []
    for i, prompt in enumerate(GREEDY_CANDIDATES):
        pt = tok(prompt, add_special_tokens=False).input_ids
        new, margin = greedy(model, pt, eos)
        if margin <= MIN_MARGIN:
            print(f"  [{name}] skip prompt {prompt!r}: margin {margin:.2e}")
            continue
        end = new[-1] if new and new[-1] in eos else "len"
        ok.append((i, prompt, pt, new, margin, end))
    # Deterministic choice: first cover as many ways of ending as possible (each eos id,
    # max length), then fill up in list order.
    chosen, kinds = [], set()
    for c in ok:
        if len(chosen) < NUM_GREEDY and c[5] not in kinds:
            chosen.append(c)
            kinds.add(c[5])
    for c in ok:
        if len(chosen) < NUM_GREEDY and c not in chosen:
            chosen.append(c)
    assert len(chosen) == NUM_GREEDY, f"{name}: not enough prompts with clear argmax"
    chosen.sort(key=lambda c: c[0])
    for _, prompt, pt, new, _, _ in chosen:
        entry["greedy"].append({"prompt": prompt, "prompt_tokens": pt,
                                "max_new_tokens": MAX_NEW_TOKENS, "new_tokens": new})
    print(f"  [{name}] params={entry['num_parameters']} "
          f"min greedy margin={min(c[4] for c in chosen):.3f} "
          f"greedy ends={[(c[5], len(c[3])) for c in chosen]}")
    return entry


def dir_size(path):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def generate():
    import transformers

    transformers.utils.logging.disable_progress_bar()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    if os.path.isdir(MODELS_DIR):
        shutil.rmtree(MODELS_DIR)
    os.makedirs(MODELS_DIR)

    tok = make_hf_tokenizer()
    tok_vocab = len(tok)
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    print(f"tokenizer: {tok_vocab} tokens, specials {ids}")
    configs = make_configs(tok_vocab, ids)

    expected = {
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "tokenizer_vocab_size": tok_vocab,
        "special_token_ids": ids,
        "models": {},
    }
    seeds = {"qwen2": 11, "llama": 22, "qwen3": 33}
    for name in ["qwen2", "llama", "qwen3"]:
        model = build_model(name, configs[name], seeds[name])
        out = os.path.join(MODELS_DIR, name)
        model.save_pretrained(out)  # transformers v5 always writes safetensors
        tok.save_pretrained(out)
        if name == "qwen2":
            sharded = os.path.join(MODELS_DIR, "qwen2-sharded")
            model.save_pretrained(sharded, max_shard_size="200KB")
            tok.save_pretrained(sharded)
            assert os.path.exists(os.path.join(sharded, "model.safetensors.index.json"))
            shards = [f for f in os.listdir(sharded) if f.endswith(".safetensors")]
            assert len(shards) >= 2, shards
            bf16 = os.path.join(MODELS_DIR, "qwen2-bf16")
            # Round-trip copy so the fp32 model in memory stays untouched.
            m16 = build_model(name, configs[name], seeds[name]).to(torch.bfloat16)
            m16.save_pretrained(bf16)
            tok.save_pretrained(bf16)
            del m16
        del model

    from transformers import AutoTokenizer

    for name in ["qwen2", "llama", "qwen3", "qwen2-sharded", "qwen2-bf16"]:
        path = os.path.join(MODELS_DIR, name)
        model = load_model(path)  # reload from disk so references reflect saved files
        dtok = AutoTokenizer.from_pretrained(path)
        for t in LOGPROB_TEXTS:
            assert dtok(t).input_ids == tok(t, add_special_tokens=False).input_ids
        expected["models"][name] = reference(model, dtok, name)

    # Sharded must reproduce the single-file checkpoint exactly.
    a, b = expected["models"]["qwen2"], expected["models"]["qwen2-sharded"]
    assert a["logprobs"] == b["logprobs"] and a["greedy"] == b["greedy"]

    with open(EXPECTED, "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    print(f"wrote {EXPECTED}; tests/fixtures total {dir_size(FIXTURES) / 1e6:.2f} MB")


# --------------------------------------------------------------------------- check mode

@torch.no_grad()
def check_saved(path, like, tol):
    import transformers
    from transformers import AutoTokenizer

    transformers.utils.logging.disable_progress_bar()
    with open(EXPECTED) as f:
        exp = json.load(f)
    if like not in exp["models"]:
        raise SystemExit(f"--like {like!r} not in {sorted(exp['models'])}")
    model = load_model(path)
    has_tok = os.path.exists(os.path.join(path, "tokenizer.json"))
    tok = AutoTokenizer.from_pretrained(path) if has_tok else None
    if tok is None:
        print(f"note: no tokenizer.json in {path}; using the token ids from expected.json")
    worst = 0.0
    for item in exp["models"][like]["logprobs"]:
        tokens = (tok(item["text"], add_special_tokens=False).input_ids if tok is not None
                  else item["tokens"])
        if tokens != item["tokens"]:
            raise SystemExit(f"FAIL tokenizer in {path}: {item['text']!r} -> {tokens}, "
                             f"expected {item['tokens']}")
        got = logprobs_of(model, tokens)
        worst = max(worst, max(abs(x - y) for x, y in zip(got, item["logprobs"])))
    if not worst <= tol:
        raise SystemExit(f"FAIL transformers loaded {path}: max |diff| = {worst:.3e} > {tol}")
    print(f"OK transformers loaded {path}: max |diff| = {worst:.3e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check-saved", metavar="DIR")
    ap.add_argument("--like", default="qwen2")
    ap.add_argument("--tol", type=float, default=1e-5)
    args = ap.parse_args()
    if args.check_saved:
        check_saved(args.check_saved, args.like, args.tol)
    else:
        generate()


if __name__ == "__main__":
    main()
