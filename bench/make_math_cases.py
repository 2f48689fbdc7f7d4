#!/usr/bin/env python3
"""Typical boxed-answer cases for the math-verifier benchmark (aha vs Math-Verify).

Writes JSON lines {"completion", "answer", "expected", "kind"} where `expected` is the verdict by
construction (1 = the boxed prediction is mathematically equal to the gold answer). Deterministic
(seeded). Usage: bench/make_math_cases.py [N] [OUT]  (default 2000, target/bench/math_cases.jsonl)
"""
import json
import os
import random
import sys

rng = random.Random(1234)

FILLER = [
    "Let's work through this step by step.",
    "First, we rewrite the expression and collect like terms.",
    "Substituting the values we found, we get",
    "Checking the boundary cases carefully, nothing else changes.",
    "Wait, let me double-check the arithmetic: {a} + {b} = {c}.",
    "So we have {a} \\cdot {b} = {d} in the previous step.",
]


def reasoning():
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    parts = [rng.choice(FILLER).format(a=a, b=b, c=a + b, d=a * b) for _ in range(rng.randint(3, 7))]
    return " ".join(parts)


def case(kind):
    """(gold, right predictions, wrong predictions)"""
    n = rng.randint(2, 999)
    m = rng.randint(2, 50)
    if kind == "integer":
        return str(n), [str(n), f"{n}.0", f"x = {n}"], [str(n + 1), str(-n)]
    if kind == "fraction":
        p, q = rng.randint(1, 40), rng.randint(41, 97)
        from fractions import Fraction

        f = Fraction(p, q)
        return (f"\\frac{{{p}}}{{{q}}}", [f"\\frac{{{p}}}{{{q}}}", f"\\dfrac{{{p}}}{{{q}}}", f"{p}/{q}",
                f"\\frac{{{2 * p}}}{{{2 * q}}}"], [f"\\frac{{{q}}}{{{p}}}", f"\\frac{{{p + 1}}}{{{q}}}"]) if f else None
    if kind == "decimal":
        v = n / 4
        return str(v), [str(v), f"\\frac{{{n}}}{{4}}"], [str(v + 0.5), str(v * 10)]
    if kind == "sqrt":
        k = rng.choice([2, 3, 5, 6, 7])
        return f"{m}\\sqrt{{{k}}}", [f"{m}\\sqrt{{{k}}}", f"\\sqrt{{{m * m * k}}}"], [f"{m + 1}\\sqrt{{{k}}}", f"{m}\\sqrt{{{k + 1}}}"]
    if kind == "pi":
        q = rng.choice([2, 3, 4, 6])
        return f"\\frac{{\\pi}}{{{q}}}", [f"\\frac{{\\pi}}{{{q}}}", f"\\pi/{q}"], [f"\\frac{{\\pi}}{{{q + 1}}}", f"{q}\\pi"]
    if kind == "polynomial":
        a = rng.randint(1, 9)
        return (f"x^2+{2 * a}x+{a * a}", [f"(x+{a})^2", f"x^2+{2 * a}x+{a * a}"],
                [f"(x+{a + 1})^2", f"x^2+{a * a}"])
    if kind == "tuple":
        a, b = rng.randint(-9, 9), rng.randint(10, 20)
        return f"({a}, {b})", [f"({a},{b})", f"\\left({a}, {b}\\right)"], [f"({b}, {a})", f"({a}, {b + 1})"]
    if kind == "interval":
        a, b = rng.randint(-9, 0), rng.randint(1, 9)
        return f"[{a}, {b})", [f"[{a},{b})"], [f"({a},{b})", f"[{a},{b}]"]
    if kind == "degrees":
        return f"{n}^\\circ", [f"{n}^\\circ", str(n)], [str(n + 10)]
    if kind == "units":
        return str(n), [f"{n}\\text{{ cm}}", f"{n} \\text{{ dollars}}"], [f"{n + 1}\\text{{ cm}}"]
    if kind == "thousands":
        big = rng.randint(1000, 999999)
        return str(big), [f"{big:,}".replace(",", "{,}"), f"{big:,}"], [str(big + 1000)]
    if kind == "text":
        w = rng.choice(["Monday", "Evelyn", "odd", "even", "Tuesday"])
        other = rng.choice(["Friday", "Carla", "never"])
        return f"\\text{{{w}}}", [f"\\text{{{w}}}"], [f"\\text{{{other}}}"]
    raise ValueError(kind)


KINDS = ["integer", "fraction", "decimal", "sqrt", "pi", "polynomial", "tuple", "interval", "degrees", "units",
         "thousands", "text"]


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    out = sys.argv[2] if len(sys.argv) > 2 else "target/bench/math_cases.jsonl"
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        for i in range(n):
            kind = KINDS[i % len(KINDS)]
            gold, right, wrong = case(kind)
            expected = rng.random() < 0.5
            pred = rng.choice(right if expected else wrong)
            completion = f"{reasoning()} Therefore, the final answer is $\\boxed{{{pred}}}$."
            f.write(json.dumps({"completion": completion, "answer": gold, "expected": int(expected), "kind": kind}) + "\n")
    print(f"wrote {n} cases to {out}")


if __name__ == "__main__":
    main()
