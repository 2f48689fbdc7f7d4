#!/usr/bin/env python3
"""Differential fuzz cases for the math checker against Math-Verify: generated (completion, gold)
pairs in many notations, each equivalent or not by construction.

Usage: bench/make_math_fuzz.py N OUT.jsonl [SEED]
Each line: {"completion", "answer", "expected", "kind", "wrapper"}. The gold is written one way,
the completion's answer another (an equivalent form, or a wrong value in some form), inside one of
several wrappers (a box, inline math, "The final answer is ...", a plain sentence), after a few
sentences of reasoning with distractor numbers and math.
"""
import json
import math
import random
import sys
from fractions import Fraction


def integer(r):
    n = r.randint(-50, 20000)
    forms = [str(n), f"{{{n}}}", f"{n}.0"]
    if n >= 1000:
        forms.append(f"{n:,}")
    if n > 0 and n % 100 == 0:
        forms.append(f"{n // 100}e2")
    wrong = [str(n + r.choice([1, -1, 10])), str(n)[::-1] if n > 9 and str(n) != str(n)[::-1] else str(n + 2)]
    return str(n), forms, wrong


def fraction(r):
    b = r.randint(2, 40)
    a = r.randint(1, 3 * b)
    q = Fraction(a, b)
    if q.denominator == 1:
        q = Fraction(a, b + 1)
    p, d = q.numerator, q.denominator
    k = r.randint(2, 5)
    forms = [f"\\frac{{{p}}}{{{d}}}", f"{p}/{d}", f"\\dfrac{{{p}}}{{{d}}}", f"\\frac{{{k * p}}}{{{k * d}}}"]
    if 10**6 % d == 0:
        forms.append(str(p / d))
    wrong = [f"\\frac{{{d}}}{{{p}}}" if p != d else f"\\frac{{{p + 1}}}{{{d}}}", f"\\frac{{{p + 1}}}{{{d}}}"]
    return r.choice([f"\\frac{{{p}}}{{{d}}}", f"{p}/{d}"]), forms, wrong


def decimal(r):
    v = round(r.uniform(-100, 100), r.randint(1, 3))
    forms = [repr(v), f"{v:.4f}"]
    wrong = [repr(round(v + 0.1, 3)), repr(round(v * 2 + 1, 3))]
    return repr(v), forms, wrong


def radical(r):
    k, m = r.randint(2, 9), r.choice([2, 3, 5, 6, 7, 10])
    forms = [f"{k}\\sqrt{{{m}}}", f"\\sqrt{{{k * k * m}}}", f"{k}\\sqrt {m}"]
    wrong = [f"{k}\\sqrt{{{m + 1}}}", f"{k + 1}\\sqrt{{{m}}}"]
    return f"{k}\\sqrt{{{m}}}", forms, wrong


def pi_multiple(r):
    a, b = r.randint(1, 7), r.randint(2, 12)
    q = Fraction(a, b)
    p, d = q.numerator, q.denominator
    forms = [f"\\frac{{{p}\\pi}}{{{d}}}", f"\\frac{{{p}}}{{{d}}}\\pi", f"{p}\\pi/{d}"]
    wrong = [f"\\frac{{{p + 1}\\pi}}{{{d}}}", f"\\frac{{{p}}}{{{d}}}"]
    return f"\\frac{{{p}\\pi}}{{{d}}}", forms, wrong


def pair(r):
    a, b = r.randint(-9, 9), r.randint(-9, 9)
    while b == a:
        b = r.randint(-9, 9)
    forms = [f"({a}, {b})", f"({a},{b})", f"\\left( {a}, {b} \\right)"]
    wrong = [f"({b}, {a})", f"({a}, {b + 1})"]
    return f"({a}, {b})", forms, wrong


def interval(r):
    a = r.randint(-9, 5)
    b = a + r.randint(1, 9)
    o, c = r.choice(["[", "("]), r.choice(["]", ")"])
    forms = [f"{o}{a}, {b}{c}", f"\\left{o} {a}, {b} \\right{c}"]
    flipped = "(" if o == "[" else "["
    wrong = [f"{flipped}{a}, {b}{c}", f"{o}{a}, {b + 1}{c}"]
    return f"{o}{a}, {b}{c}", forms, wrong


def number_set(r):
    items = r.sample(range(-9, 10), r.randint(2, 4))
    shuffled = items[:]
    r.shuffle(shuffled)
    forms = ["\\{" + ", ".join(map(str, shuffled)) + "\\}", ", ".join(map(str, shuffled))]
    wrong = ["\\{" + ", ".join(map(str, items[:-1])) + "\\}", "\\{" + ", ".join(map(str, items + [99])) + "\\}"]
    return "\\{" + ", ".join(map(str, items)) + "\\}", forms, wrong


def inequality(r):
    a = r.randint(-9, 9)
    forms = [f"x \\leq {a}", f"{a} \\geq x", f"x \\le {a}"]
    wrong = [f"x < {a}", f"x \\geq {a}", f"x \\leq {a + 1}"]
    return f"x \\leq {a}", forms, wrong


def plus_minus(r):
    a, b = r.randint(1, 9), r.choice([2, 3, 5, 7])
    forms = [f"{a} \\pm \\sqrt{{{b}}}", f"\\{{{a}+\\sqrt{{{b}}}, {a}-\\sqrt{{{b}}}\\}}"]
    wrong = [f"{a} + \\sqrt{{{b}}}", f"{a} \\pm \\sqrt{{{b + 1}}}"]
    return f"{a} \\pm \\sqrt{{{b}}}", forms, wrong


def polynomial(r):
    a, b = r.randint(1, 5), r.randint(1, 9)
    forms = [f"x^2 + {2 * b}x + {b * b}", f"(x+{b})^2", f"{b * b} + {2 * b}x + x^2"]
    wrong = [f"x^2 + {b}x + {b * b}", f"(x-{b})^2"]
    return f"(x+{b})^2", forms, wrong


def small_or_zero(r):
    k = r.randint(20, 2000)
    forms = ["0", "0.0", "\\sin(\\pi)", "0 \\cdot 5"]
    wrong = [f"e^{{-{k}}}", f"10^{{-{k}}}", f"0.1^{{{k}}}", f"\\frac{{1}}{{2^{{{k}}}}}"]
    return "0", forms, wrong


def scientific(r):
    m, e = r.randint(1, 9), r.randint(2, 6)
    forms = [f"{m}e{e}", f"{m} \\times 10^{{{e}}}", str(m * 10**e)]
    wrong = [f"{m}e{e + 1}", f"{m + 1} \\times 10^{{{e}}}"]
    return str(m * 10**e), forms, wrong


def text(r):
    word = r.choice(["odd", "even", "Monday", "Evelyn", "yes", "no"])
    other = r.choice([w for w in ["odd", "even", "Tuesday", "Briana"] if w != word])
    forms = [f"\\text{{{word}}}", word, f"\\textbf{{{word}}}"]
    wrong = [f"\\text{{{other}}}", other]
    return f"\\text{{{word}}}", forms, wrong


def digit_in_word(r):
    n = r.randint(1, 9)
    forms = [str(n)]
    wrong = [f"AZY{n}K", f"X{n}", f"\\frac{{1+\\sqrt{{5}}}}{{{n}}}", f"{n}x"]
    return str(n), forms, wrong


KINDS = [integer, fraction, decimal, radical, pi_multiple, pair, interval, number_set, inequality,
         plus_minus, polynomial, small_or_zero, scientific, text, digit_in_word]

REASONING = [
    "Let's work through this step by step.",
    "First we note that $x = 7$ satisfies the constraint.",
    "We compute 3 + 4 = 7 and then 7 \\cdot 6 = 42.",
    "Let $n$ be the number of apples.",
    "Substituting $y = 2x + 1$ gives a contradiction for 5 of the cases.",
    "Checking the boundary, the value at $t=0$ is $1$.",
]

WRAPPERS = {
    "boxed": lambda a: f"Therefore, the final answer is $\\boxed{{{a}}}$.",
    "inline": lambda a: f"So the result is ${a}$",
    "final_answer": lambda a: f"Final Answer: The final answer is ${a}$. I hope it is correct.",
    "display": lambda a: f"Hence\n$$\n{a}\n$$",
    "plain": lambda a: f"So the answer is {a}",
}
PLAIN_OK = {"integer", "fraction", "decimal", "scientific", "text", "digit_in_word", "small_or_zero"}


def main():
    n, out = int(sys.argv[1]), sys.argv[2]
    r = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 0)
    with open(out, "w") as f:
        for _ in range(n):
            kind = r.choice(KINDS)
            gold, forms, wrong = kind(r)
            expected = r.random() < 0.5
            answer = r.choice(forms if expected else wrong)
            wrappers = list(WRAPPERS) if kind.__name__ in PLAIN_OK else [w for w in WRAPPERS if w != "plain"]
            wrapper = r.choice(wrappers)
            reasoning = " ".join(r.sample(REASONING, r.randint(0, 3)))
            completion = (reasoning + " " + WRAPPERS[wrapper](answer)).strip()
            f.write(json.dumps({"completion": completion, "answer": gold, "expected": int(expected),
                                "kind": kind.__name__, "wrapper": wrapper}) + "\n")
    print(f"wrote {n} cases to {out}")


if __name__ == "__main__":
    main()
