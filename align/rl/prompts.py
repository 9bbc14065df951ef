"""Training prompts for online RL, each with the constraints its verifier reward checks.

Online trainers (GRPO, RLOO, online DPO) sample their own replies, so their data is prompts
only: the output of ``rlaif export prompts`` or ``rlaif generate constrained`` (``prompt`` and,
optionally, ``constraints`` in the verifier's own kinds) or IFEval-form rows
(``instruction_id_list`` + ``kwargs``, as IFEval, IFBench and Tulu 3's RLVR data write them).
Every row becomes ``{"prompt", "constraints"}`` with the constraints as a JSON list of specs
(a string column: Arrow would merge differently shaped dicts), checked here so that a bad row
is a user error naming its line before any model is loaded. IFEval ids are translated to the
verifier's kinds by ``IFEVAL_KINDS`` until the verifier speaks IFEval itself (issue 16); an
id without a counterpart is a user error, never silently dropped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from datagen.errors import UserInputError
from datagen.jsonl import read_objects
from judges.constraints.kinds import parse_constraints


def _bounds(count_key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """IFEval's ("less than" N | "at least" N) as the verifier's min/max bounds."""
    def convert(kw: dict[str, Any]) -> dict[str, Any]:
        n = int(kw[count_key])
        return {"max": n - 1} if kw.get("relation") == "less than" else {"min": n}
    return convert


def _relation(kw: dict[str, Any], count_key: str, relation_key: str) -> dict[str, Any]:
    n = int(kw[count_key])
    if kw.get(relation_key) == "less than":
        return {"n": n - 1, "relation": "at_most"}
    return {"n": n, "relation": "at_least"}


IFEVAL_KINDS: dict[str, tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "punctuation:no_comma": ("no_commas", lambda kw: {}),
    "change_case:english_lowercase": ("all_lowercase", lambda kw: {}),
    "change_case:english_capital": ("all_uppercase", lambda kw: {}),
    "detectable_format:title": ("title", lambda kw: {}),
    "detectable_format:json_format": ("json_format", lambda kw: {}),
    "startend:quotation": ("wrapped_in_quotes", lambda kw: {}),
    "startend:end_checker": ("ends_with", lambda kw: {"phrase": kw["end_phrase"]}),
    "detectable_content:postscript": (
        "postscript", lambda kw: {"marker": kw["postscript_marker"].rstrip(".") + "."}),
    "detectable_content:number_placeholders": (
        "placeholder_count", lambda kw: {"n": int(kw["num_placeholders"])}),
    "detectable_format:number_bullet_lists": (
        "bullet_count", lambda kw: {"n": int(kw["num_bullets"])}),
    "detectable_format:number_highlighted_sections": (
        "highlighted_sections", lambda kw: {"n": int(kw["num_highlights"])}),
    "detectable_format:multiple_sections": (
        "section_count", lambda kw: {"n": int(kw["num_sections"]),
                                     "marker": kw.get("section_spliter") or "Section"}),
    "length_constraints:number_paragraphs": (
        "paragraph_count", lambda kw: {"n": int(kw["num_paragraphs"]), "separator": "marker"}),
    "length_constraints:number_words": ("word_count", _bounds("num_words")),
    "length_constraints:number_sentences": ("sentence_count", _bounds("num_sentences")),
    "keywords:existence": ("include_keywords", lambda kw: {"keywords": kw["keywords"]}),
    "keywords:forbidden_words": ("forbidden_words", lambda kw: {"words": kw["forbidden_words"]}),
    "keywords:frequency": (
        "keyword_frequency",
        lambda kw: {"keyword": kw["keyword"], **_relation(kw, "frequency", "relation")}),
    "keywords:letter_frequency": (
        "letter_frequency",
        lambda kw: {"letter": kw["letter"], **_relation(kw, "let_frequency", "let_relation")}),
    "combination:repeat_prompt": (
        "repeat_request", lambda kw: {"request": kw["prompt_to_repeat"]}),
}


def ifeval_constraints(ids: Any, kwargs: Any, where: str) -> list[dict[str, Any]]:
    """The verifier specs of one IFEval-form row (``instruction_id_list`` + ``kwargs``)."""
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise UserInputError(f"{where}: key 'instruction_id_list': expected a list of ids")
    kwargs = kwargs if kwargs is not None else [{} for _ in ids]
    if not isinstance(kwargs, list) or len(kwargs) != len(ids):
        raise UserInputError(f"{where}: key 'kwargs': expected one mapping per instruction id")
    specs = []
    for instruction, kw in zip(ids, kwargs, strict=True):
        if instruction not in IFEVAL_KINDS:
            raise UserInputError(
                f"{where}: key 'instruction_id_list': {instruction!r} has no verifier kind yet "
                f"(supported: {', '.join(sorted(IFEVAL_KINDS))})")
        kind, convert = IFEVAL_KINDS[instruction]
        clean = {k: v for k, v in (kw or {}).items() if v is not None}
        try:
            specs.append({"kind": kind, **convert(clean)})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UserInputError(f"{where}: key 'kwargs': {instruction}: bad or missing "
                                 f"argument {exc}") from None
    return specs


def row_constraints(row: dict[str, Any], where: str) -> str:
    """The constraints of one prompt row as a checked JSON list ("[]" when it has none)."""
    if "instruction_id_list" in row:
        raw = ifeval_constraints(row["instruction_id_list"], row.get("kwargs"), where)
        key = "kwargs"
    else:
        raw, key = row.get("constraints") or [], "constraints"
    try:
        specs = parse_constraints(raw)
    except (ValidationError, ValueError, TypeError) as exc:
        raise UserInputError(f"{where}: key '{key}': invalid constraint: "
                             f"{str(exc).splitlines()[0]}") from None
    return json.dumps([spec.model_dump() for spec in specs])


def checked_prompt(prompt: Any, where: str) -> list[dict[str, str]]:
    """A prompt as chat messages: text becomes one user message."""
    if isinstance(prompt, str) and prompt.strip():
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and prompt and all(
        isinstance(m, dict) and isinstance(m.get("role"), str)
        and isinstance(m.get("content"), str) for m in prompt
    ):
        return [{"role": m["role"], "content": m["content"]} for m in prompt]
    raise UserInputError(f"{where}: key 'prompt': expected non-empty text or a list of "
                         "{role, content} messages")


def load_rl_prompts(path: str | Path) -> list[dict[str, Any]]:
    """Rows ``{"prompt": messages, "constraints": JSON}`` from a prompts JSONL file."""
    rows = []
    for line in read_objects(Path(path), empty_message=f"{path}: no prompts"):
        if "prompt" not in line.obj:
            raise UserInputError(f"{line.where}: missing key 'prompt'")
        rows.append({"prompt": checked_prompt(line.obj["prompt"], line.where),
                     "constraints": row_constraints(line.obj, line.where)})
    return rows
