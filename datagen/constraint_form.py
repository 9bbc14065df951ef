"""Constraints as prompt files carry them: our ``constraints`` list or IFEval's two lists.

Prompt and pair files state their verifiable constraints in one of two forms. Ours is a
``constraints`` list of specs, ``[{"kind": "word_count", "max": 80}, ...]``. IFEval's (also used
by IFBench and by RLVR training sets) is ``instruction_id_list`` with a parallel ``kwargs``
list, ``["punctuation:no_comma"], [{}]``. An instruction id is a constraint kind, so the second
form converts to the first by pairing each id with its kwargs; keys whose value is null are
dropped (the published IFEval files spell every possible kwarg, null where unused). The
conversion is pure data, so the generators (``datagen``) and the judges read both forms alike;
whether a kind exists and its kwargs fit is decided later by ``judges.constraints.kinds``.
"""

from __future__ import annotations

from typing import Any

from datagen.errors import UserInputError


def row_constraints(obj: dict[str, Any], where: str) -> Any:
    """The row's constraints: its ``constraints`` field, else its ``instruction_id_list`` and
    ``kwargs`` as spec dicts, else None. Raises UserInputError when the two lists are
    malformed or the row gives both forms."""
    if "instruction_id_list" not in obj:
        return obj.get("constraints")
    if obj.get("constraints"):
        raise UserInputError(f"{where}: give constraints or instruction_id_list, not both")
    return ifeval_constraints(obj.get("instruction_id_list"), obj.get("kwargs"), where)


def ifeval_constraints(ids: Any, kwargs: Any, where: str) -> list[dict[str, Any]]:
    """IFEval's ``instruction_id_list`` + ``kwargs`` as constraint spec dicts."""
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
        raise UserInputError(f"{where}: instruction_id_list must be a list of instruction ids")
    if kwargs is None:
        kwargs = [{} for _ in ids]
    if not isinstance(kwargs, list) or len(kwargs) != len(ids):
        raise UserInputError(f"{where}: kwargs must be a list with one object per instruction id "
                             f"({len(ids)})")
    specs = []
    for instruction_id, args in zip(ids, kwargs, strict=True):
        if not isinstance(args, dict) or "kind" in args:
            raise UserInputError(f"{where}: kwargs of {instruction_id} must be an object of the "
                                 "instruction's arguments")
        specs.append({"kind": instruction_id, **{k: v for k, v in args.items() if v is not None}})
    return specs
