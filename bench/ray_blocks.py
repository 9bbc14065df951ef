"""CPU-only stages with `--executor ray`: the verifier in blocks against the local executor.

`rlaif label --judge verify` over the same N pairs (two or three constraints each), first with
the local executor, then with `--executor ray` on a local Ray cluster started by the command
(`ray.init()` with no address: one node with this machine's cores), each timed end to end as
a user sees it (process start, reading, checking, writing). The outputs must be identical.
On a 2-core machine this measures the price of Ray (cluster start, shipping blocks, worker
processes), not a speed-up: the gain needs nodes with cores of their own.

    .venv/bin/python bench/ray_blocks.py [--pairs 20000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RLAIF = [sys.executable, "-m", "align.cli"]
RULES = [{"kind": "no_commas"}, {"kind": "word_count", "min": 5, "max": 40},
         {"kind": "sentence_count", "min": 1, "max": 3}]


def write_pairs(path: Path, n: int) -> Path:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({
                "id": f"b{i}", "prompt": f"Tell me about item {i}.",
                "constraints": RULES[: 2 + i % 2],
                "response_a": f"Item {i} is a thing. It has parts, and uses. " * (1 + i % 3),
                "response_b": f"Item {i} is small and round and it rolls well. " * (1 + i % 2),
            }) + "\n")
    return path


def timed(args: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run([*RLAIF, *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20_000)
    n = parser.parse_args().pairs
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        pairs = write_pairs(tmp_path / "pairs.jsonl", n)
        results = {}
        for name, extra in (("local", []), ("ray", ["--executor", "ray"])):
            out = tmp_path / f"{name}.jsonl"
            results[name] = timed(["label", "--input", str(pairs), "--judge", "verify", "-o",
                                   str(out), "--db", str(tmp_path / f"{name}.db"), *extra])
        same = (tmp_path / "local.jsonl").read_bytes() == (tmp_path / "ray.jsonl").read_bytes()
    print(f"label --judge verify, {n:,} pairs: local {results['local']:.1f} s, "
          f"ray (one local node) {results['ray']:.1f} s "
          f"({results['ray'] / results['local']:.2f}x), outputs identical: {same}")


if __name__ == "__main__":
    main()
