"""IFEval scoring speed: `rlaif eval ifeval --responses` on 541 prompts, ours against the reference.

Goal: under 5 s on one core for IFEval's 541 prompts. The process is pinned to one core and
two scorers are timed on the same prompts and responses, strict and loose verdicts for every
instruction: ours (``judges.constraints.ifeval.evaluate.follow_lists`` through
``align.eval.ifeval.score``, what the command runs, including reading the prompts file and
parsing every kwargs) and the reference (lm-eval's ``ifeval`` task, Google's checkers, run
offline through ``tests/ifeval_reference.py``). Both use NLTK Punkt and langdetect, whose
models load on first use; each scorer is warmed once on a few prompts, then the best of
``--repeat`` runs is reported as wall time and CPU time of this process. The verdicts of the
two are compared on every instruction (two of IFEval's instructions draw a random letter in
the reference and are left out of the comparison).

Responses: ``--responses FILE`` (lines ``{"prompt", "response"}``, e.g. Google's published
GPT-4 responses or an ``-o`` file of `rlaif eval ifeval`, scored on the prompts it answers);
by default, synthetic replies of
realistic length built from the prompts (each prompt's text, a body of 150-400 words drawn from
the other prompts, a few list lines and highlights).

    .venv/bin/python bench/ifeval.py                      # synthetic replies, core 0, best of 3
    .venv/bin/python bench/ifeval.py --responses gpt4.jsonl --core 1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from ifeval_reference import load_reference, reference_lists  # noqa: E402

from align.eval.ifeval import read_responses, score, summarise  # noqa: E402
from judges.constraints.ifeval.evaluate import (  # noqa: E402
    bundled_prompts_path,
    read_ifeval_prompts,
)


def synthetic_responses(rows: list[dict], seed: int = 0) -> dict[str, str]:
    """A reply of 150-400 words per prompt, in shapes chat models produce."""
    rng = random.Random(seed)
    words = " ".join(row["prompt"] for row in rows).split()
    replies = {}
    for row in rows:
        body = " ".join(rng.choice(words) for _ in range(rng.randint(150, 400)))
        parts = [row["prompt"] if rng.random() < 0.1 else "Sure, here it is:", body]
        if rng.random() < 0.3:
            parts.append("\n".join(f"* {rng.choice(words)} {rng.choice(words)}"
                                   for _ in range(rng.randint(2, 6))))
        if rng.random() < 0.3:
            parts.append(f"*{rng.choice(words)}* and **{rng.choice(words)}**")
        if rng.random() < 0.2:
            parts.append("P.S. " + rng.choice(words))
        replies[row["prompt"]] = "\n\n".join(parts)
    return replies


def time_ours(prompts_path: Path, responses: dict[str, str]) -> tuple[float, float, list]:
    wall, cpu = time.perf_counter(), time.process_time()
    items = read_ifeval_prompts(prompts_path)
    rows = score(items, responses)
    summarise(rows)
    return time.perf_counter() - wall, time.process_time() - cpu, rows


def time_reference(reference, rows: list[dict], responses: dict[str, str]):
    wall, cpu = time.perf_counter(), time.process_time()
    verdicts = [reference_lists(reference, row, responses[row["prompt"]]) for row in rows]
    return time.perf_counter() - wall, time.process_time() - cpu, verdicts


def compare(ours: list[dict], theirs: list, rows: list[dict]) -> tuple[int, int]:
    """(instructions compared, instructions where strict or loose differ)."""
    compared = differ = 0
    for mine, (strict, loose), row in zip(ours, theirs, rows, strict=True):
        for i, kwargs in enumerate(row["kwargs"]):
            if kwargs.get("letter") in ("#", "!"):
                continue  # the reference draws a random letter here
            compared += 1
            differ += (mine["follow_instruction_list_strict"][i], mine[
                "follow_instruction_list_loose"][i]) != (strict[i], loose[i])
    return compared, differ


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--responses", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--core", type=int, default=0)
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.core})
    prompts_path = bundled_prompts_path()
    rows = [json.loads(line) for line in prompts_path.read_text().splitlines()]
    scratch = Path(tempfile.mkdtemp(prefix="rlaif_ifeval_bench_"))
    if args.responses:  # e.g. an -o file of `rlaif eval ifeval`; it may cover some prompts only
        responses = read_responses(args.responses)
        rows = [row for row in rows if row["prompt"] in responses]
        prompts_path = scratch / "prompts.jsonl"
        prompts_path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        responses = synthetic_responses(rows)
    reference = load_reference(scratch / "nltk_data")
    warm = {row["prompt"]: responses[row["prompt"]] for row in rows[:20]}
    score(read_ifeval_prompts(prompts_path)[:20], warm)
    time_reference(reference, rows[:20], warm)

    best_ours = min((time_ours(prompts_path, responses) for _ in range(args.repeat)),
                    key=lambda r: r[0])
    best_ref = min((time_reference(reference, rows, responses) for _ in range(args.repeat)),
                   key=lambda r: r[0])
    compared, differ = compare(best_ours[2], best_ref[2], rows)
    summary = summarise(best_ours[2])
    print(f"IFEval, {len(rows)} prompts, one core (core {args.core}), best of {args.repeat}; "
          f"responses: {args.responses or 'synthetic'}")
    print(f"  ours:      {best_ours[0]:.2f} s wall, {best_ours[1]:.2f} s CPU")
    print(f"  reference: {best_ref[0]:.2f} s wall, {best_ref[1]:.2f} s CPU "
          f"({best_ref[1] / best_ours[1]:.1f}x ours in CPU time)")
    print(f"  verdicts: {compared - differ} of {compared} instructions agree (strict and loose)")
    print("  " + ", ".join(f"{k} {100 * summary[k]:.2f}" for k in (
        "prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc",
        "inst_level_loose_acc")))


if __name__ == "__main__":
    main()
