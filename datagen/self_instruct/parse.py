"""Self-Instruct text handling: read seed-task files, render the prompts, parse what the model
returns, and apply the paper's filters.

Everything here is a pure function of its arguments, so the generator in
``datagen/self_instruct/generate.py`` can stay a thin loop of requests and database writes, and
every rule can be tested on strings. The rules follow Wang et al., "Self-Instruct" (ACL 2023,
arXiv:2212.10560), sections 2.2-2.4: instructions are generated from numbered in-context
lists and filtered by length, a keyword blacklist, a "write a program" prefix, leading
punctuation and a non-ASCII first character; instances are generated input-first, or
output-first (label, then input) for classification tasks, and filtered for empty or
self-copying outputs, dangling colons, duplicates and contradictions. The prompt wording is
our own and lives in ``datagen/prompts/self_instruct_*.txt``.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from datagen.errors import UserInputError
from datagen.jsonl import note_unique, read_objects, read_text

PROMPT_DIR = Path(__file__).parent / "prompts"
DEFAULT_SEED_FILE = Path(__file__).parent / "seeds" / "seed_tasks.jsonl"
GENERATE_PROMPT = "self_instruct_generate.txt"
CLASSIFY_PROMPT = "self_instruct_classify.txt"
INPUT_FIRST_PROMPT = "self_instruct_instances_input.txt"
OUTPUT_FIRST_PROMPT = "self_instruct_instances_label.txt"

# Whole words (case-insensitive) that mark tasks a text-only model cannot do (paper, 2.3).
BLACKLIST = (
    "image", "images", "graph", "graphs", "picture", "pictures", "file", "files",
    "map", "maps", "draw", "plot", "go to",
)
BLACKLIST_RE = re.compile(r"\b(" + "|".join(re.escape(t) for t in BLACKLIST) + r")\b", re.I)
PROGRAM_RE = re.compile(r"^write a program\b", re.I)
NUMBERED_RE = re.compile(r"^\s*(?:[-*]\s*)?(?:\*\*)?(\d{1,3})\s*[.)]\s*(.*)$")
EXAMPLE_RE = re.compile(r"(?im)^[ \t]*(?:\*\*)?Example\s*\d+\s*(?:\*\*)?\s*[:.]?[ \t]*$")
OUTPUT_RE = re.compile(r"(?im)^[ \t]*Output\s*\d*\s*:")
INPUT_PREFIX_RE = re.compile(r"^\s*Input\s*\d*\s*:\s*", re.I)
STRAY_INPUT_RE = re.compile(r"(?im)^[ \t]*(?:Input\s*\d*|Task)\s*:")
LABEL_RE = re.compile(r"(?im)^[ \t]*Class label\s*:")


class SeedTask(BaseModel):
    """One task of the seed file: an instruction with worked instances."""

    id: str
    instruction: str
    instances: list[dict[str, str]]
    is_classification: bool = False
    name: str | None = None


class Instance(BaseModel):
    """One input/output pair of a task (input is "" when the task needs none)."""

    input: str
    output: str


# --- seed tasks ---------------------------------------------------------------------------


def load_seed_tasks(path: str | Path = DEFAULT_SEED_FILE) -> list[SeedTask]:
    """Read a seed-task JSONL file; problems raise UserInputError naming the line."""
    path = Path(path)
    tasks: list[SeedTask] = []
    ids: dict[str, int] = {}
    for line_no, where, obj in read_objects(
        path, read_text(path, cannot_read="cannot read seed tasks"),
        empty_message=f"{path}:1: empty seed file, expected one JSON task per line",
    ):
        task = _seed_task(obj, where, len(tasks))
        note_unique(ids, task.id, line_no, where, what="id")
        tasks.append(task)
    return tasks


def _seed_task(obj: dict[str, Any], where: str, index: int) -> SeedTask:
    if not isinstance(obj.get("instruction"), str) or not obj["instruction"].strip():
        raise UserInputError(f"{where}: missing instruction (a non-empty string)")
    instances = obj.get("instances", [])
    if not isinstance(instances, list) or not all(
        isinstance(i, dict) and isinstance(i.get("output"), str)
        and isinstance(i.get("input", ""), str) for i in instances
    ):
        raise UserInputError(f"{where}: instances must be a list of {{input, output}} strings")
    if not isinstance(obj.get("is_classification", False), bool):
        raise UserInputError(f"{where}: is_classification must be true or false")
    return SeedTask(
        id=str(obj.get("id") or f"seed_{index + 1}"), instruction=obj["instruction"].strip(),
        instances=[{"input": i.get("input", ""), "output": i["output"]} for i in instances],
        is_classification=obj.get("is_classification", False), name=obj.get("name"))


# --- prompts ------------------------------------------------------------------------------


def load_prompt(name: str) -> str:
    """The text of a prompt file in datagen/prompts."""
    return (PROMPT_DIR / name).read_text(encoding="utf-8")


def clean_context_instruction(text: str) -> str:
    """Collapse whitespace, strip, and drop a trailing colon (as the paper does in prompts)."""
    text = " ".join(text.split())
    return text[:-1].rstrip() if text.endswith(":") else text


def render_generate_prompt(instructions: Sequence[str]) -> str:
    """The instruction-generation prompt: the tasks numbered from 1, then the next number open."""
    tasks = "\n".join(
        f"{i}. {clean_context_instruction(text)}" for i, text in enumerate(instructions, 1))
    return load_prompt(GENERATE_PROMPT).format(tasks=tasks, next=len(instructions) + 1)


def render_classify_prompt(instruction: str, examples: Sequence[SeedTask]) -> str:
    """The yes/no classification question, with labelled seed tasks as examples."""
    shots = "".join(
        f"Task: {clean_context_instruction(t.instruction)}\n"
        f"Classification task? {'Yes' if t.is_classification else 'No'}\n\n"
        for t in examples)
    return load_prompt(CLASSIFY_PROMPT).format(
        examples=shots.rstrip("\n") + "\n", instruction=clean_context_instruction(instruction))


def _input_first_demo(task: SeedTask) -> str:
    lines = [f"Task: {clean_context_instruction(task.instruction)}"]
    for k, inst in enumerate(task.instances, 1):
        lines.append(f"Example {k}")
        if inst.get("input", "").strip():
            lines.append(f"Input: {inst['input'].strip()}")
        lines.append(f"Output: {inst['output'].strip()}")
    return "\n".join(lines)


def _output_first_demo(task: SeedTask) -> str:
    lines = [f"Task: {clean_context_instruction(task.instruction)}"]
    for inst in task.instances:
        lines.append(f"Class label: {inst['output'].strip()}")
        if inst.get("input", "").strip():
            lines.append(f"Input: {inst['input'].strip()}")
    return "\n".join(lines)


def render_instance_prompt(
    instruction: str, is_classification: bool, demos: Sequence[SeedTask], max_instances: int
) -> str:
    """Instance prompt: output-first (label, then input) for classification, else input-first."""
    if is_classification:
        name, render = OUTPUT_FIRST_PROMPT, _output_first_demo
    else:
        name, render = INPUT_FIRST_PROMPT, _input_first_demo
    return load_prompt(name).format(
        demos="\n\n".join(render(t) for t in demos), max_instances=max_instances,
        instruction=clean_context_instruction(instruction))


def sample_context(
    rng: random.Random, seeds: Sequence[SeedTask], machine: Sequence[tuple[str, str]],
    num_context: int, num_machine: int,
) -> list[tuple[str, str]]:
    """In-context (id, instruction) pairs: up to ``num_machine`` machine-made, the rest human
    seeds, shuffled; all human while the machine pool is empty."""
    n_machine = min(num_machine, len(machine), num_context)
    chosen = rng.sample(list(machine), n_machine)
    human = rng.sample(list(seeds), min(num_context - n_machine, len(seeds)))
    chosen += [(t.id, t.instruction) for t in human]
    rng.shuffle(chosen)
    return chosen


# --- parsing model output -------------------------------------------------------------------


def clean_instruction(text: str) -> str:
    """Collapse whitespace, strip markdown bold and quotes, upper-case the first letter.

    Unlike the paper's ``str.capitalize`` the rest is left alone, so "SQL" stays "SQL".
    """
    text = " ".join(text.split()).strip()
    for mark in ("**", '"', "`"):
        if len(text) > 2 * len(mark) and text.startswith(mark) and text.endswith(mark):
            text = text[len(mark):-len(mark)].strip()
    text = text.replace("**", "").strip()
    return text[:1].upper() + text[1:]


def parse_instruction_list(text: str) -> list[str]:
    """The instructions in a numbered-list reply.

    The prompt ends with an open number, so a reply may start with the text of that item;
    a leading line that ends with ":" ("Here are more tasks:") is chat preamble, not a task.
    A blank line ends an item, and text after the list that is not numbered is ignored.
    """
    items: list[str] = []
    current: list[str] | None = None
    seen_number = False
    for line in text.splitlines():
        match = NUMBERED_RE.match(line)
        if match:
            if current:
                items.append(" ".join(current))
            current = [match.group(2)]
            seen_number = True
        elif not line.strip():
            if current:
                items.append(" ".join(current))
            current = None
        elif current is not None:
            current.append(line.strip())
        elif not seen_number and not items and not line.rstrip().endswith(":"):
            current = [line.strip()]
    if current:
        items.append(" ".join(current))
    return [c for c in (clean_instruction(i) for i in items) if c]


def instruction_filter(text: str, min_words: int = 4, max_words: int = 150) -> str | None:
    """The name of the first filter a generated instruction fails, or None when it passes."""
    words = len(text.split())
    if words < min_words:
        return "too_short"
    if words > max_words:
        return "too_long"
    if BLACKLIST_RE.search(text):
        return "blacklist"
    if PROGRAM_RE.match(text):
        return "write_a_program"
    if text[0] in string.punctuation:
        return "leading_punctuation"
    if not text[0].isascii():
        return "non_ascii_start"
    return None


def parse_yes_no(text: str) -> bool:
    """True when a classification answer says yes; anything else (no, empty, noise) is False."""
    words = text.strip().split()
    return bool(words) and words[0].strip(string.punctuation).lower() == "yes"


def parse_input_first(text: str) -> list[Instance]:
    """Instances from an "Example k / Input: ... / Output: ..." reply (Input may be absent)."""
    pieces = EXAMPLE_RE.split(text)
    pieces = pieces[1:] if len(pieces) > 1 else pieces
    out = []
    for piece in pieces:
        found = OUTPUT_RE.search(piece)
        if not found:
            continue
        before, after = piece[: found.start()], piece[found.end():]
        stray = STRAY_INPUT_RE.search(after)
        if stray:
            after = after[: stray.start()]
        out.append(Instance(input=INPUT_PREFIX_RE.sub("", before.strip(), count=1).strip(),
                            output=after.strip()))
    return out


def parse_output_first(text: str) -> list[Instance]:
    """Instances from a "Class label: X / Input: ..." reply: the label is the output."""
    out = []
    for piece in LABEL_RE.split(text)[1:]:
        label, _, rest = piece.strip("\n").partition("\n")
        stray = re.search(r"(?im)^[ \t]*Task\s*:", rest)
        if stray:
            rest = rest[: stray.start()]
        out.append(Instance(input=INPUT_PREFIX_RE.sub("", rest.strip(), count=1).strip(),
                            output=label.strip()))
    return out


def instance_problem(inst: Instance) -> str | None:
    """Why a single instance is unusable, or None."""
    if not inst.output:
        return "empty_output"
    if inst.input == inst.output:
        return "same_input_output"
    if inst.output.endswith(":") or inst.input.endswith(":"):
        return "ends_with_colon"
    return None


def filter_instances(
    instances: Sequence[Instance], max_instances: int, rng: random.Random
) -> tuple[list[Instance], dict[str, int], str | None]:
    """Apply the instance filters: (kept, {reason: dropped count}, task-level drop reason).

    The same non-empty input with two different outputs drops the whole task; beyond
    ``max_instances`` a seeded random sample is kept, in the original order.
    """
    dropped: dict[str, int] = {}
    kept: list[Instance] = []
    seen: set[tuple[str, str]] = set()
    outputs_by_input: dict[str, str] = {}
    for inst in instances:
        reason = instance_problem(inst)
        if reason is None and (inst.input, inst.output) in seen:
            reason = "duplicate"
        if reason:
            dropped[reason] = dropped.get(reason, 0) + 1
            continue
        if inst.input and outputs_by_input.setdefault(inst.input, inst.output) != inst.output:
            return [], dropped, "conflicting_outputs"
        seen.add((inst.input, inst.output))
        kept.append(inst)
    if len(kept) > max_instances:
        dropped["too_many"] = len(kept) - max_instances
        chosen = sorted(rng.sample(range(len(kept)), max_instances))
        kept = [kept[i] for i in chosen]
    return kept, dropped, None
