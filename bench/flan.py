"""Speed and memory of FLAN-style conversion (`rlaif generate flan`), on one core.

Goal (issue 5): at least 20,000 rendered examples/s for zero-shot conversion of a 100,000-row
dataset, with memory that does not grow with the dataset. The script writes a synthetic NLI
dataset, then runs the real command (`rlaif generate flan --input X --task nli -o OUT`) in a
fresh child process pinned to one CPU for each size, and reports examples per wall-clock and
per CPU second (the latter is steadier on a shared machine) and the child's peak RSS. Running
two sizes shows whether memory grows with the dataset.

    .venv/bin/python bench/flan.py                       # 10k and 100k rows, zero-shot plain
    .venv/bin/python bench/flan.py --rows 100000 --extra "--shots 2 --options-style random"
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUBJECTS = ["A woman", "Two children", "An old man", "A chef", "The team", "A dog", "Students",
            "A cyclist", "The farmer", "A musician"]
VERBS = ["is walking", "are playing", "is cooking", "is reading", "is painting", "is repairing",
         "are watching", "is carrying", "is cleaning", "is building"]
OBJECTS = ["a red bicycle", "in the park", "a large meal", "an old map", "near the river",
           "a wooden fence", "under a tree", "a heavy box", "on a sunny beach", "a small boat"]


def make_dataset(path: Path, rows: int, seed: int = 0) -> None:
    """A synthetic NLI JSONL file (premise, hypothesis, label) of ``rows`` lines."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as out:
        for i in range(rows):
            premise = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}."
            hypothesis = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}."
            out.write(json.dumps({"id": i, "premise": premise, "hypothesis": hypothesis,
                                  "label": rng.randrange(3)}) + "\n")


def child(data: str, out: str, extra: list[str]) -> None:
    """Run the command in this process and print one JSON line of measurements."""
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    began = time.perf_counter()
    import datagen.flan.cli  # noqa: F401 - imports are timed apart from the conversion
    from align.cli import main

    imports = time.perf_counter() - began
    started, cpu = time.perf_counter(), time.process_time()
    main(["generate", "flan", "--input", data, "--task", "nli", "-o", out, *extra],
         standalone_mode=False)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    with open(out, encoding="utf-8") as handle:
        examples = sum(1 for _ in handle)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"examples": examples, "seconds": seconds, "per_second": examples / seconds,
                      "per_cpu_second": examples / cpu, "peak_rss_mib": peak_mib,
                      "imports_s": imports}))


def measure(data: Path, out: Path, extra: str) -> dict:
    cmd = [sys.executable, __file__, "--child", str(data), "--out", str(out), "--extra", extra]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--extra", default="", help="more `rlaif generate flan` options")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size; the best counts")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.out, shlex.split(args.extra))
        return
    with tempfile.TemporaryDirectory() as tmp:
        print(f"rlaif generate flan --task nli {args.extra} (one core, best of {args.repeat})")
        for rows in args.rows:
            data = Path(tmp) / f"nli_{rows}.jsonl"
            make_dataset(data, rows)
            runs = [measure(data, Path(tmp) / "out.jsonl", args.extra) for _ in range(args.repeat)]
            best = max(runs, key=lambda r: r["per_second"])
            peak = max(r["peak_rss_mib"] for r in runs)
            print(f"{rows:>9,} rows: {best['examples']:>9,} examples in {best['seconds']:6.2f} s "
                  f"= {best['per_second']:>8,.0f} examples/s wall, "
                  f"{best['per_cpu_second']:>8,.0f} per CPU-second; peak RSS {peak:6.1f} MiB "
                  f"(+{best['imports_s']:.2f} s imports)")


if __name__ == "__main__":
    main()
