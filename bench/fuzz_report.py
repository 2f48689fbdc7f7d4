#!/usr/bin/env python3
"""The differential fuzz's report: disagreement rate between aha and Math-Verify, per kind and
wrapper, which of the two the construction agrees with, and a few examples of each pattern.

Usage: bench/fuzz_report.py CASES.jsonl AHA.jsonl MATH_VERIFY.jsonl
"""
import collections
import json
import sys

cases = [json.loads(l) for l in open(sys.argv[1])]
aha = [json.loads(l)["reward"] for l in open(sys.argv[2])]
mv = [json.loads(l)["reward"] for l in open(sys.argv[3])]
n = len(cases)
differ = [(c, a, m) for c, a, m in zip(cases, aha, mv) if a != m]
print(f"cases {n}, disagreements {len(differ)} ({100 * len(differ) / n:.2f}%)")
print(f"right by construction: aha {sum(int(a == c['expected']) for c, a in zip(cases, aha))}, "
      f"math-verify {sum(int(m == c['expected']) for c, m in zip(cases, mv))}")
for field in ("kind", "wrapper"):
    total = collections.Counter(c[field] for c in cases)
    bad = collections.Counter(c[field] for c, _, _ in differ)
    print(f"\n{field:<14} {'cases':>6} {'differ':>7}")
    for key in sorted(total):
        print(f"{key:<14} {total[key]:>6} {bad[key]:>7}")
patterns = collections.defaultdict(list)
for c, a, m in differ:
    who = "aha right" if a == c["expected"] else "math-verify right" if m == c["expected"] else "both wrong"
    patterns[(c["kind"], who)].append(c)
print("\nexamples (kind, who agrees with the construction, count):")
for (kind, who), items in sorted(patterns.items(), key=lambda kv: -len(kv[1])):
    print(f"  {kind} / {who}: {len(items)}")
    for c in items[:2]:
        print(f"      gold {c['answer']!r} expected {c['expected']}: {c['completion'][-90:]!r}")
