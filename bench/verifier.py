"""Verifier judge throughput: labelled pairs per second on one CPU core (goal: >= 10,000).

Every bundled base prompt gets 1-3 constraints (seed 0, ``judges.constraints.prompts``); for each
pair we synthesize two responses of 50-200 words in the shapes chat models produce (plain
paragraphs, bullet or numbered lists, "Section N" headers, a <<title>>, *highlights*,
[placeholders], a P.S. line, a closing question, JSON in a code fence, lower or upper case,
quotes). Each response tries to follow each constraint with probability 0.7, like a model
that often but not always complies, so some constraints pass and some fail (responses to
yes/no and one-word prompts are short). The
process is pinned to one core and ``verify_pair`` is timed three ways: constraints as the
dicts a JSONL row holds, as the JSON text a SQLite row holds (both parsed on every call, as
the labeller would), and as spec models parsed once. Best of ``--repeat`` runs is reported,
as wall-clock rate and as rate per CPU second of this process (the fairer figure on a
machine shared with other work, where wall time includes waiting for the core).

    .venv/bin/python bench/verifier.py                 # 20,000 pairs, core 0, best of 3
    .venv/bin/python bench/verifier.py --pairs 50000 --core 1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from collections import Counter

from judges.constraints.kinds import parse_constraints
from judges.constraints.prompts import ConstrainedPrompt, add_constraints, load_base_prompts
from judges.constraints.verify import verify_pair, verify_response

VOCABULARY = (
    "the a to and of in that it is for you with on as your this be can at or by from "
    "time people way day home water work plan food friend idea week morning money light "
    "simple small easy careful quiet warm fresh useful different important better local "
    "keep make take give find try start help use choose check remember enjoy share walk "
    "often usually really also then still just always sometimes later first next "
    "kitchen garden street bread coffee weather budget city bicycle library habit step "
    "energy reason example practice balance choice future community neighbour question"
)
WORDS = tuple(VOCABULARY.split())
FOLLOW = 0.7  # chance that a synthetic response tries to follow a given constraint


def sentence(rng: random.Random, lo: int = 6, hi: int = 16) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]
    if rng.random() < 0.4:
        words.insert(rng.randint(1, len(words) - 1), rng.choice(WORDS) + ",")
    if rng.random() < 0.15:
        words.insert(rng.randint(0, len(words)), f"*{rng.choice(WORDS)} {rng.choice(WORDS)}*")
    if rng.random() < 0.1:
        words.insert(rng.randint(0, len(words)), f"[{rng.choice(WORDS)}]")
    if rng.random() < 0.05:
        words.insert(rng.randint(0, len(words)), str(rng.randint(2, 99)))
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice([".", ".", ".", "!", "?"])


def response(rng: random.Random, row: ConstrainedPrompt) -> str:
    """One synthetic response of 50-200 words (by whitespace) that tries to follow each of
    the row's constraints with probability FOLLOW, like a model that often but not always
    complies; drawn again until its length is in range (short-answer kinds excepted)."""
    wants = {spec.kind: spec for spec in row.constraints if rng.random() < FOLLOW}
    if "yes_no_answer" in wants or "one_word_answer" in wants:
        return rng.choice(["Yes.", "no", "Maybe.", "Probably yes."])
    while True:
        text = _decorate(rng, wants, row, _shaped(rng, wants))
        if 50 <= len(text.split()) <= 200:
            return text


def _shaped(rng: random.Random, wants: dict) -> str:
    target = rng.randint(40, 170)
    if "json_format" in wants or rng.random() < 0.05:
        keys = list(wants["json_format"].keys) if "json_format" in wants else ["answer"]
        value = {key: " ".join(sentence(rng) for _ in range(rng.randint(1, 4))) for key in keys}
        text = json.dumps(value or {"answer": " ".join(sentence(rng) for _ in range(6))})
        return "```json\n" + text + "\n```" if rng.random() < 0.5 else text
    count = None
    if "bullet_count" in wants:
        shape, count = "bullets", wants["bullet_count"].n
    elif "numbered_list_count" in wants:
        shape, count = "numbered", wants["numbered_list_count"].n
    elif "section_count" in wants:
        shape, count = "sections", wants["section_count"].n
    elif "paragraph_count" in wants:
        shape, count = "paragraphs", wants["paragraph_count"].n
    else:
        shape = rng.choice(["paragraphs", "paragraphs", "bullets", "numbered", "sections"])
    marker = wants["section_count"].marker if "section_count" in wants else "Section"
    blocks: list[str] = []
    while (len(blocks) < count) if count else sum(len(b.split()) for b in blocks) < target:
        if shape == "paragraphs":
            block = " ".join(sentence(rng) for _ in range(rng.randint(2, 4)))
        elif shape in ("bullets", "numbered"):
            bullet = rng.choice("-*+") if shape == "bullets" else f"{len(blocks) + 1}."
            block = f"{bullet} {sentence(rng, 6, 20)}"
        else:
            block = f"{marker} {len(blocks) + 1}\n" + sentence(rng) + " " + sentence(rng)
        blocks.append(block)
    separator = (
        "\n***\n" if getattr(wants.get("paragraph_count"), "separator", "") == "marker" else "\n\n"
    )
    if shape in ("bullets", "numbered"):
        return sentence(rng) + "\n\n" + "\n".join(blocks)
    return separator.join(blocks)


def _decorate(rng: random.Random, wants: dict, row: ConstrainedPrompt, text: str) -> str:
    if "title" in wants or rng.random() < 0.1:
        text = f"<<{sentence(rng, 2, 4).rstrip('.!?')}>>\n\n" + text
    if "repeat_request" in wants:
        text = row.base_prompt + "\n" + text
    if "starts_with" in wants:
        text = wants["starts_with"].phrase + " " + text
    if "postscript" in wants or rng.random() < 0.1:
        marker = wants["postscript"].marker if "postscript" in wants else "P.S."
        text += f"\n\n{marker} " + sentence(rng, 4, 8)
    if "ends_with_question" in wants or rng.random() < 0.15:
        text += " " + sentence(rng, 4, 8)[:-1] + "?"
    if "ends_with" in wants:
        text += " " + wants["ends_with"].phrase
    if "no_commas" in wants:
        text = text.replace(",", "")
    if "no_digits" in wants:
        text = text.translate(str.maketrans("", "", "0123456789"))
    if "all_lowercase" in wants:
        text = text.lower()
    elif "all_uppercase" in wants:
        text = text.upper()
    if "wrapped_in_quotes" in wants:
        text = f'"{text}"'
    return text


def build_pairs(n: int, seed: int) -> list[tuple[list[dict], str, str]]:
    rng = random.Random(seed)
    rows = add_constraints(load_base_prompts(), 1, 3, seed=seed)
    pairs = []
    for i in range(n):
        row = rows[i % len(rows)]
        specs = [spec.model_dump(mode="json") for spec in row.constraints]
        pairs.append((specs, response(rng, row), response(rng, row)))
    return pairs


def time_pairs(pairs: list, repeat: int) -> tuple[float, float]:
    """Best (wall seconds, CPU seconds of this process) over ``repeat`` passes."""
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        for constraints, a, b in pairs:
            verify_pair(constraints, a, b)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--core", type=int, default=0, help="CPU core to pin to")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.core})

    pairs = build_pairs(args.pairs, args.seed)
    lengths = [len(text.split()) for _, a, b in pairs for text in (a, b)]
    words = [n for n in lengths if n > 3]  # leave out the yes/no and one-word answers
    as_json = [(json.dumps(c), a, b) for c, a, b in pairs]
    as_models = [(parse_constraints(c), a, b) for c, a, b in pairs]
    labels = Counter(verify_pair(c, a, b)["preferred"] for c, a, b in as_models)
    checks = [ok for c, a, _ in as_models for ok in verify_response(c, a).passed]
    pass_rate = sum(checks) / len(checks)

    results = {}
    for name, batch in (("dicts", pairs), ("json_text", as_json), ("models", as_models)):
        wall, cpu = time_pairs(batch, args.repeat)
        results[name] = {
            "pairs_per_s_wall": round(len(batch) / wall),
            "pairs_per_s_cpu": round(len(batch) / cpu),
            "us_per_pair_cpu": round(cpu / len(batch) * 1e6, 1),
        }
    print(
        json.dumps(
            {
                "pairs": args.pairs,
                "core": args.core,
                "constraints_per_pair": round(statistics.mean(len(c) for c, _, _ in pairs), 2),
                "words_per_response": {
                    "min": min(words),
                    "median": statistics.median(words),
                    "max": max(words),
                    "short_answers": len(lengths) - len(words),
                },
                "constraint_pass_rate": round(pass_rate, 3),
                "labels": dict(labels),
                "throughput": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
