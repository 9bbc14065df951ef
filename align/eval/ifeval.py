"""`rlaif eval ifeval`: IFEval's four numbers for a file of responses or a policy's answers.

IFEval (Zhou et al. 2023, arXiv 2311.07911) is how model cards and leaderboards report
instruction following: 541 prompts with 834 rule-checked instructions, scored strict and
loose, per prompt (all instructions followed) and per instruction. This module joins
responses to prompts on the prompt text (as the reference does), takes each prompt's verdicts
from ``judges.constraints.ifeval.evaluate``, and reports ``prompt_level_strict_acc``,
``inst_level_strict_acc``, ``prompt_level_loose_acc``, ``inst_level_loose_acc`` and their
average, each with a Wilson 95% interval (``align.eval.intervals``; the instruction-level
interval treats instructions as independent, which they are not quite, so it is a little too
narrow), and the accuracy of each instruction id. A score is only as good as the evaluation
prompts are unseen: ``contamination`` finds training prompts within ROUGE-L 0.7 of an
evaluation prompt (the Self-Instruct novelty measure, ``datagen.self_instruct.rouge``).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from align.eval.intervals import wilson
from datagen.distributed.blocks import Mapper, map_local
from datagen.errors import UserInputError
from datagen.jsonl import read_objects
from datagen.self_instruct.rouge import DEFAULT_THRESHOLD, NoveltyIndex
from judges.constraints.ifeval.evaluate import IfevalPrompt, follow_lists

METRICS = ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc",
           "inst_level_loose_acc")


def read_responses(path: Path) -> dict[str, str]:
    """Responses by prompt text from a JSONL file of ``{"prompt", "response"}`` lines (a later
    line for the same prompt replaces an earlier one, as in the reference)."""
    responses: dict[str, str] = {}
    for _, where, obj in read_objects(path, empty_message=f"{path}: no responses in file"):
        prompt, response = obj.get("prompt"), obj.get("response")
        if not isinstance(prompt, str) or not isinstance(response, str):
            raise UserInputError(f'{where}: expected "prompt" and "response" strings')
        responses[prompt] = response
    return responses


PREFIX_CHARS = 100  # a prompt without an exact match may be matched on this many characters


def join_responses(items: list[IfevalPrompt], responses: dict[str, str],
                   path: Path) -> tuple[dict[str, str], list[int | str]]:
    """Each prompt's response, joined on the prompt text as the reference does. Google's two
    published files spell one prompt differently, so a prompt without an exact match takes the
    one response whose prompt starts with the same 100 characters; returns the responses by
    prompt and the keys matched that way. UserInputError when some prompt has no response."""
    joined, by_prefix, missing = {}, [], []
    asked = {item.prompt for item in items}
    prefixes: dict[str, list[str]] = defaultdict(list)
    for prompt in responses:
        if prompt not in asked and len(prompt) >= PREFIX_CHARS:
            prefixes[prompt[:PREFIX_CHARS]].append(prompt)
    for item in items:
        if item.prompt in responses:
            joined[item.prompt] = responses[item.prompt]
            continue
        candidates = prefixes.get(item.prompt[:PREFIX_CHARS], [])
        if len(item.prompt) >= PREFIX_CHARS and len(candidates) == 1:
            joined[item.prompt] = responses[candidates[0]]
            by_prefix.append(item.key)
        else:
            missing.append(item)
    if missing:
        raise UserInputError(f"{path}: {len(missing)} of {len(items)} prompts have no response "
                             f"(first: key {missing[0].key}, {missing[0].prompt[:60]!r})")
    return joined, by_prefix


def score(items: list[IfevalPrompt], responses: dict[str, str],
          mapper: Mapper = map_local) -> list[dict[str, Any]]:
    """One output row per prompt, with the reference's fields; the checks run through
    ``mapper`` (in this process, or in blocks on a Ray cluster with ``--executor ray``)."""
    return mapper(score_answers, [(item, responses[item.prompt]) for item in items])


def score_answers(answers: list[tuple[IfevalPrompt, str]]) -> list[dict[str, Any]]:
    """The output row of each (prompt, response)."""
    rows = []
    for item, response in answers:
        strict, loose = follow_lists(item.specs, response)
        rows.append({"key": item.key, "prompt": item.prompt,
                     "instruction_id_list": item.instruction_id_list,
                     "follow_instruction_list_strict": strict,
                     "follow_instruction_list_loose": loose, "response": response})
    return rows


def counts(rows: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """(followed, total) of each of the four accuracies over scored prompt rows."""
    found: dict[str, tuple[int, int]] = {}
    for mode in ("strict", "loose"):
        lists = [row[f"follow_instruction_list_{mode}"] for row in rows]
        found[f"prompt_level_{mode}_acc"] = (sum(all(x) for x in lists), len(lists))
        found[f"inst_level_{mode}_acc"] = (sum(sum(x) for x in lists),
                                           sum(len(x) for x in lists))
    return found


def accuracies(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The four accuracies and their average (no intervals: cheap enough to bootstrap)."""
    result = {name: hits / n if n else 0.0 for name, (hits, n) in counts(rows).items()}
    result["average"] = sum(result[name] for name in METRICS) / len(METRICS)
    return result


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The four accuracies, their average, 95% intervals and per-instruction accuracy."""
    tally = counts(rows)
    result: dict[str, Any] = {}
    for name in METRICS:
        hits, n = tally[name]
        result[name] = hits / n if n else 0.0
        result[f"{name}_ci"] = list(wilson(hits, n) or (0.0, 0.0))
    result["average"] = sum(result[name] for name in METRICS) / len(METRICS)
    result["n_prompts"] = len(rows)
    result["n_instructions"] = tally["inst_level_strict_acc"][1]
    result["per_instruction"] = per_instruction(rows)
    return result


def per_instruction(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | int]]:
    """Each instruction id's count and strict and loose accuracy, ids in sorted order."""
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for row in rows:
        for instruction_id, strict, loose in zip(row["instruction_id_list"],
                                                 row["follow_instruction_list_strict"],
                                                 row["follow_instruction_list_loose"],
                                                 strict=True):
            counts = tally[instruction_id]
            counts[0] += 1
            counts[1] += strict
            counts[2] += loose
    return {instruction_id: {"n": n, "strict": s / n, "loose": lo / n}
            for instruction_id, (n, s, lo) in sorted(tally.items())}


def format_summary(result: dict[str, Any]) -> str:
    """The four numbers with intervals, the average, then the per-instruction table."""
    lines = [f"IFEval on {result['n_prompts']} prompts, {result['n_instructions']} instructions"]
    for name in METRICS:
        low, high = result[f"{name}_ci"]
        lines.append(f"  {name:<24} {100 * result[name]:5.1f}  "
                     f"(95% CI {100 * low:.1f}-{100 * high:.1f})")
    lines.append(f"  {'average':<24} {100 * result['average']:5.1f}")
    lines.append("")
    lines.append(f"  {'instruction id':<46} {'n':>4} {'strict':>7} {'loose':>7}")
    for instruction_id, row in result["per_instruction"].items():
        lines.append(f"  {instruction_id:<46} {row['n']:>4} {100 * row['strict']:>6.1f}% "
                     f"{100 * row['loose']:>6.1f}%")
    return "\n".join(lines)


def read_scored(path: Path) -> list[dict[str, Any]]:
    """The per-prompt lines of an `eval ifeval -o` file (verdict lists and instruction ids)."""
    keys = ("instruction_id_list", "follow_instruction_list_strict",
            "follow_instruction_list_loose")
    rows = []
    for _, where, row in read_objects(path, empty_message=f"{path}: no scored prompts in file"):
        if any(not isinstance(row.get(key), list) for key in keys):
            raise UserInputError(f"{where}: not an `eval ifeval -o` line "
                                 f"(needs {', '.join(keys)})")
        rows.append(row)
    return rows


def format_side_by_side(outputs: dict[str, Path]) -> list[str]:
    """The four numbers and their average for each policy's `eval ifeval -o` file, one column
    per policy (the demo's before/after table)."""
    results = {name: summarise(read_scored(path)) for name, path in outputs.items()}
    n = {result["n_prompts"] for result in results.values()}
    lines = [f"IFEval, first {'/'.join(str(x) for x in sorted(n))} prompts (%):",
             f"  {'':<24}" + "".join(f"{name:>10}" for name in results)]
    for metric in (*METRICS, "average"):
        lines.append(f"  {metric:<24}"
                     + "".join(f"{100 * r[metric]:>10.1f}" for r in results.values()))
    return lines


def training_prompts(path: Path) -> list[tuple[str, str]]:
    """(where, text) of each training prompt in a JSONL file: its ``prompt`` (text, or chat
    messages whose contents are joined) or ``instruction`` field."""
    found = []
    for _, where, obj in read_objects(path, empty_message=f"{path}: no prompts in file"):
        text = obj.get("prompt", obj.get("instruction"))
        if isinstance(text, list):
            text = "\n".join(m.get("content", "") for m in text
                             if isinstance(m, dict) and isinstance(m.get("content"), str))
        if not isinstance(text, str):
            raise UserInputError(f'{where}: expected a "prompt" or "instruction" field')
        found.append((where, text))
    return found


def contamination(items: list[IfevalPrompt], paths: list[Path],
                  threshold: float = DEFAULT_THRESHOLD) -> list[dict[str, Any]]:
    """Training prompts whose ROUGE-L F against some evaluation prompt exceeds ``threshold``,
    each with its place, score and the evaluation prompt's key."""
    index = NoveltyIndex(threshold)
    index.extend(item.prompt for item in items)
    close = []
    for path in paths:
        for where, text in training_prompts(path):
            best, member = index.nearest(text)
            if member is not None and best > threshold:
                close.append({"where": where, "rouge_l": round(best, 4),
                              "key": items[member].key, "train_prompt": text[:200]})
    return close
