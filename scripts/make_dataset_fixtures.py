#!/usr/bin/env python3
"""Writes the small problem-set files that datasets/tests/load.rs reads, in the shapes of
GSM8K, MATH, Countdown and code datasets, each with a few malformed rows.

The JSON files are written with the standard library; the Parquet files need pyarrow:

    python3 -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install pyarrow
    /tmp/tfenv/bin/python scripts/make_dataset_fixtures.py
"""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

OUT = Path(__file__).resolve().parent.parent / "datasets" / "tests" / "fixtures"

GSM8K = [
    {"question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
     "answer": "He has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"},
    {"question": "A shop sells 1,250 pens a day. How many in 2 days?",
     "answer": "1,250 * 2 = <<1250*2=2500>>2,500\n#### 2,500"},
    {"question": "No final answer marker here.", "answer": "The answer is 12."},
    {"answer": "#### 5"},
    {"question": "What is 10 - 4?", "answer": "10 - 4 = 6\n#### 6", "split": "test"},
]

MATH = [
    {"problem": "Compute $\\frac{1}{2} + \\frac{1}{4}$.",
     "solution": "We get $\\frac{2}{4} + \\frac{1}{4} = \\boxed{\\frac{3}{4}}$.", "level": "Level 1", "type": "Algebra"},
    {"problem": "Find the set of solutions of $x^2 = 1$.",
     "solution": "So $x \\in \\boxed{\\{-1, 1\\}}$.", "level": "Level 2", "type": "Algebra"},
    {"problem": "What is $2^{10}$?", "solution": "It is $\\boxed{2^{10} = 1024}$... in fact \\boxed{1024}.",
     "level": "Level 1", "type": "Prealgebra"},
    {"problem": "A solution that never boxes its answer.", "solution": "The answer is 5.", "level": "Level 3",
     "type": "Algebra"},
    {"problem": "MATH-500 style: the answer has its own column.", "solution": "... \\boxed{7}", "answer": "7",
     "level": "Level 1", "type": "Algebra"},
    "not an object",
]

CODE = [
    {"question": "Read two integers and print their sum.",
     "tests": [{"stdin": "1 2\n", "stdout": "3\n"}, {"stdin": "5 7\n", "stdout": "12\n"}]},
    {"text": "Write a function add(a, b).", "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]},
    {"question": "A problem with no tests at all."},
    {"prompt": "Asserts as a JSON string.", "asserts": "[\"assert f() == 1\"]"},
]


def write_jsonl(name, rows, extra_lines=()):
    lines = [json.dumps(r) for r in rows] + list(extra_lines)
    (OUT / name).write_text("\n".join(lines) + "\n")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    # Line 6 is blank (ignored), line 7 is not JSON, line 8 is JSON but not an object.
    write_jsonl("gsm8k.jsonl", GSM8K, ["", "{\"question\": \"truncated", "[1, 2]"])
    (OUT / "math.json").write_text(json.dumps(MATH, indent=1) + "\n")
    write_jsonl("code.jsonl", CODE)

    countdown = pa.table(
        {
            "target": pa.array([24, 98, None, 10], type=pa.int64()),
            "nums": pa.array([[2, 3, 4], [44, 19, 35], [1, 2], [5, 5]], type=pa.list_(pa.int64())),
        }
    )
    pq.write_table(countdown, OUT / "countdown.parquet", compression="snappy")

    gsm8k = pa.table({"question": [r.get("question") for r in GSM8K], "answer": [r["answer"] for r in GSM8K]})
    pq.write_table(gsm8k, OUT / "gsm8k.gzip.parquet", compression="gzip")
    pq.write_table(gsm8k, OUT / "gsm8k.lz4.parquet", compression="lz4")

    (OUT / "not_parquet.parquet").write_text("this is not a parquet file\n")
    print(f"wrote fixtures to {OUT}")


if __name__ == "__main__":
    main()
