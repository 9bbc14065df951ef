"""Training prompts for online RL, each with the constraints its verifier reward checks.

Online trainers (GRPO, RLOO, online DPO) sample their own replies, so their data is prompts
only: the output of ``rlaif export prompts`` or ``rlaif generate constrained`` (``prompt`` and,
optionally, ``constraints`` in the verifier's own kinds) or IFEval-form rows
(``instruction_id_list`` + ``kwargs``, as IFEval, IFBench and Tulu 3's RLVR data write them).
Every row becomes ``{"prompt", "constraints"}`` with the constraints as a JSON list of specs
(a string column: Arrow would merge differently shaped dicts), checked here so that a bad row
is a user error naming its line before any model is loaded. IFEval's ids are verifier kinds
with IFEval's own semantics (``judges.constraints.ifeval``), so an IFEval-form row is checked
exactly as IFEval checks it; an unknown id is a user error, never silently dropped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from datagen.constraint_form import row_constraints as prompt_constraints
from datagen.errors import UserInputError
from datagen.jsonl import read_objects
from judges.constraints.kinds import IFEVAL_IDS, KINDS, parse_constraints

KNOWN_KINDS = frozenset((*KINDS, *IFEVAL_IDS))


def row_constraints(row: dict[str, Any], where: str) -> str:
    """The constraints of one prompt row as a checked JSON list ("[]" when it has none)."""
    key = "kwargs" if "instruction_id_list" in row else "constraints"
    raw = prompt_constraints(row, where) or []
    unknown = [spec["kind"] for spec in raw if spec["kind"] not in KNOWN_KINDS] \
        if key == "kwargs" else []
    if unknown:
        raise UserInputError(f"{where}: key 'instruction_id_list': {unknown[0]!r} is no verifier "
                             "kind (IFEval's 25 ids and our own kinds are)")
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
