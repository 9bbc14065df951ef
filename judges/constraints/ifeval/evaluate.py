"""IFEval's verdicts for one prompt: strict and loose, instruction by instruction.

IFEval scores a response two ways. Strict: each instruction's checker on the response as is.
Loose: an instruction counts as followed if its checker passes on any of eight variants of the
response, namely the response, the response without its first line, without its last line and
without both (each of the last three stripped), each of the four also with every ``*`` removed;
this forgives a chatty first line ("Sure, here it is:"), a sign-off and markdown emphasis. An
empty or whitespace-only variant follows nothing. This module reads IFEval prompt files
(``key``, ``prompt``, ``instruction_id_list``, ``kwargs``; the bundled copy of IFEval's 541
prompts is the default) and gives both verdict lists for a response; the benchmark run and its
numbers are in ``align.eval.ifeval``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from datagen.constraint_form import ifeval_constraints
from datagen.errors import UserInputError
from datagen.jsonl import note_unique, read_objects
from judges.constraints.checkers import Doc, Spec
from judges.constraints.ifeval.instructions import IFEVAL_IDS
from judges.constraints.kinds import check, parse_constraints


class IfevalPrompt(BaseModel):
    """One IFEval prompt with its instructions parsed into constraint specs."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    key: int | str
    prompt: str
    instruction_id_list: list[str]
    kwargs: list[dict[str, Any]]
    specs: list[Spec]


def bundled_prompts_path() -> Path:
    """IFEval's 541 prompts as shipped with the package (see data/NOTICE.md)."""
    return Path(str(resources.files("judges.constraints.ifeval") / "data" / "input_data.jsonl"))


def read_ifeval_prompts(path: Path | None = None) -> list[IfevalPrompt]:
    """Read an IFEval prompts file; raise UserInputError naming the file, line and key of the
    first bad row (unknown instruction id, kwargs that do not fit, duplicate prompt)."""
    path = path or bundled_prompts_path()
    items: list[IfevalPrompt] = []
    seen: dict[str, int] = {}
    for line_no, where, obj in read_objects(path, empty_message=f"{path}: no prompts in file"):
        item = _ifeval_prompt(obj, where)
        note_unique(seen, item.prompt, line_no, where, what="prompt")
        items.append(item)
    return items


def _ifeval_prompt(obj: dict[str, Any], where: str) -> IfevalPrompt:
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise UserInputError(f'{where}: missing "prompt" (a non-empty string)')
    key = obj.get("key", where)  # a row without a key is known by its place
    if isinstance(key, bool) or not isinstance(key, int | str):
        raise UserInputError(f'{where}: "key" must be an integer or a string')
    ids, kwargs = obj.get("instruction_id_list"), obj.get("kwargs")
    dicts = ifeval_constraints(ids, kwargs, where)
    for spec in dicts:
        if spec["kind"] not in IFEVAL_IDS:
            raise UserInputError(f"{where}: unknown IFEval instruction id {spec['kind']!r}")
    try:
        specs = parse_constraints(dicts)
    except ValidationError as exc:
        error = exc.errors()[0]
        place = ".".join(str(part) for part in error["loc"][1:])
        raise UserInputError(f"{where}: kwargs do not fit ({place}: {error['msg']})") from None
    return IfevalPrompt(key=key, prompt=prompt, instruction_id_list=ids,
                        kwargs=kwargs or [{} for _ in ids], specs=specs)


def loose_variants(response: str) -> list[str]:
    """The eight texts IFEval's loose score tries, the response itself first."""
    lines = response.split("\n")
    trimmed = [
        response,
        "\n".join(lines[1:]).strip(),
        "\n".join(lines[:-1]).strip(),
        "\n".join(lines[1:-1]).strip(),
    ]
    return trimmed + [text.replace("*", "") for text in trimmed]


def follow_lists(specs: list[Spec], response: str) -> tuple[list[bool], list[bool]]:
    """(strict, loose) verdicts, one per instruction, for one response."""
    doc = Doc(response)
    strict = [check(spec, doc).satisfied for spec in specs]
    if all(strict):
        return strict, list(strict)
    # Each distinct variant once: without a "*" in the reply the starless ones are repeats.
    variants = [Doc(text) for text in dict.fromkeys(loose_variants(response)) if text != response]
    loose = [
        passed or any(check(spec, variant).satisfied for variant in variants)
        for spec, passed in zip(specs, strict, strict=True)
    ]
    return strict, loose
