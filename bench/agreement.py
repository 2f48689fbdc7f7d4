#!/usr/bin/env python3
"""Agreement of two verifiers' verdicts with the expected ones, per kind of answer.

Usage: bench/agreement.py CASES.jsonl AHA.jsonl MATH_VERIFY.jsonl
"""
import collections
import json
import sys

cases = [json.loads(l) for l in open(sys.argv[1])]
aha = [json.loads(l)["reward"] for l in open(sys.argv[2])]
mv = [json.loads(l)["reward"] for l in open(sys.argv[3])]
per_kind = collections.defaultdict(lambda: [0, 0, 0])
disagree = []
for c, a, m in zip(cases, aha, mv):
    k = per_kind[c["kind"]]
    k[0] += 1
    k[1] += int(a == c["expected"])
    k[2] += int(m == c["expected"])
    if a != m:
        disagree.append((c["kind"], c["answer"], c["completion"][c["completion"].rfind("\\boxed"):], c["expected"], a, m))
print(f"{'kind':<12} {'cases':>6} {'aha right':>10} {'math-verify right':>18}")
for kind, (n, a, m) in sorted(per_kind.items()):
    print(f"{kind:<12} {n:>6} {a:>10} {m:>18}")
n = len(cases)
print(f"{'total':<12} {n:>6} {sum(v[1] for v in per_kind.values()):>10} {sum(v[2] for v in per_kind.values()):>18}")
print(f"disagreements: {len(disagree)}")
seen = set()
for kind, gold, pred, exp, a, m in disagree:
    if (kind, exp, a, m) in seen:
        continue
    seen.add((kind, exp, a, m))
    print(f"  {kind}: gold {gold!r} pred {pred!r} expected {exp} aha {a} math-verify {m}")
