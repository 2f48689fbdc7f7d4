#!/usr/bin/env python3
"""Math-Verify on the benchmark cases, one process, one thread: verdicts/s and each verdict.

Usage: bench/math_verify_bench.py CASES.jsonl OUT.jsonl   (needs `pip install math-verify`)
Gold answers are parsed as `$gold$`, completions as they are (Math-Verify's default extraction).
"""
import json
import sys
import time

from math_verify import parse, verify


def main():
    cases = [json.loads(line) for line in open(sys.argv[1])]
    results = []
    start = time.perf_counter()
    for c in cases:
        gold = parse(f"${c['answer']}$")
        pred = parse(c["completion"])
        results.append(1 if verify(gold, pred) else 0)
    elapsed = time.perf_counter() - start
    with open(sys.argv[2], "w") as f:
        for r in results:
            f.write(json.dumps({"reward": r}) + "\n")
    print(json.dumps({"tool": "math-verify", "cases": len(cases), "seconds": elapsed,
                      "verdicts_per_s": len(cases) / elapsed}))


if __name__ == "__main__":
    main()
