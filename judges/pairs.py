"""The pairs every judge reads: one validated row per pair, and the pairs JSONL reader.

A pair is a prompt (a string or chat messages) and two responses, ``response_a`` and
``response_b``, with an optional ``human`` label and optional constraints for the verifier
(a ``constraints`` list, or IFEval's ``instruction_id_list`` + ``kwargs``).
Every judge (``pairwise``, ``pointwise``, ``reward_judge``, the verifier) and every report reads
its input through ``read_pairs`` or ``pair_row``, so a malformed line is the same one-line user
error everywhere, and a pair without an ``id`` gets the same content hash everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from datagen.constraint_form import row_constraints
from datagen.errors import UserInputError
from datagen.ids import pair_id
from datagen.jsonl import read_objects
from datagen.responses.sample import is_prompt
from judges.constraints.kinds import parse_constraints

HUMAN_LABELS = ("a", "b", "tie")


class PairRow(BaseModel):
    """One pair to label, validated; ``data`` is the input object, written back with labels."""

    where: str
    id: str
    prompt: str | list[dict[str, Any]]
    response_a: str
    response_b: str
    human: Literal["a", "b", "tie"] | None = None
    constraints: Any = None
    data: dict[str, Any]


def pair_row(obj: Any, where: str, check_constraints: bool = False) -> PairRow:
    """Validate one input object; raise UserInputError("WHERE: what is wrong").
    ``check_constraints`` also parses the constraints (for the verifier judge)."""
    if not isinstance(obj, dict):
        raise UserInputError(f"{where}: expected a JSON object")
    prompt = obj.get("prompt")
    if not is_prompt(prompt):
        raise UserInputError(
            f"{where}: missing prompt (a non-empty string or a list of chat messages)")
    for field in ("response_a", "response_b"):
        if not isinstance(obj.get(field), str):
            raise UserInputError(f"{where}: missing {field} (a string)")
    human = obj.get("human")
    if human is not None and human not in HUMAN_LABELS:
        raise UserInputError(f'{where}: human must be "a", "b" or "tie", got {human!r}')
    constraints = row_constraints(obj, where)
    if check_constraints and constraints:
        try:
            parse_constraints(constraints)
        except ValueError as exc:
            reason = str(exc).splitlines()[0]
            raise UserInputError(f"{where}: constraints cannot be read ({reason})") from None
    name = obj.get("id")
    if name is None:
        name = pair_id(prompt, [obj["response_a"], obj["response_b"]])
    return PairRow(where=where, id=str(name), prompt=prompt, response_a=obj["response_a"],
                   response_b=obj["response_b"], human=human,
                   constraints=constraints, data=obj)


def read_pairs(
    path: str | Path, skip_bad: bool = False, check_constraints: bool = False
) -> tuple[list[PairRow], list[str]]:
    """Read a pairs JSONL file. Bad lines raise UserInputError, or are returned as messages
    (and left out) with ``skip_bad``."""
    path = Path(path)
    rows: list[PairRow] = []
    bad: list[str] = []
    for _, where, obj in read_objects(path, empty_message=None, skipped=bad if skip_bad else None):
        try:
            rows.append(pair_row(obj, where, check_constraints))
        except UserInputError as exc:
            if not skip_bad:
                raise
            bad.append(exc.message)
    if not rows and not bad:
        raise UserInputError(f"{path}: empty file, expected one JSON pair per line")
    return rows, bad


def prompt_text(prompt: str | list[dict[str, Any]]) -> str:
    """A prompt as plain text: the string itself, or the chat turns as "[role]" blocks."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in prompt)
