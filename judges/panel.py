"""What every judge returns, and the panel that runs several judges over the same pairs.

Each judge (``pairwise``, ``pointwise``, ``reward_judge``, and the constraint verifier here)
returns one ``JudgeResult`` per pair; an unreadable or failed judgement is "error", never a
win. ``label_pairs`` runs every judge of a panel, labels identical responses a tie without
asking, and combines the judges of a pair by averaging their p_a, keeping each one's verdicts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, Field

from judges.constraints.verify import verify_pair
from judges.pairs import PairRow
from judges.verdicts import Preferred, preferred_from_p


class JudgeResult(BaseModel):
    """One judge's label for one pair."""

    judge: str
    preferred: Preferred
    p_a: float | None = None
    consistent: bool | None = None
    verdicts: list[dict[str, Any]] = Field(default_factory=list)
    reason: str | None = None
    failed: bool = Field(default=False, description="A request failed or was not sent")


JudgeFn = Callable[[list[PairRow]], Awaitable[list[JudgeResult]]]


def error_result(judge: str, reason: str, verdicts: list[dict] | None = None,
                 failed: bool = False) -> JudgeResult:
    """An "error" label: never a win, p_a unknown."""
    return JudgeResult(judge=judge, preferred="error", reason=reason, verdicts=verdicts or [],
                       failed=failed)


def combine_panel(results: list[JudgeResult], tie_margin: float) -> dict[str, Any]:
    """Label fields for one pair from one judge, or several (mean p_a; verdicts of each kept)."""
    if len(results) == 1:
        (only,) = results
        out = {"preferred": only.preferred, "p_a": only.p_a, "consistent": only.consistent,
               "verdicts": only.verdicts}
        return out | ({"reason": only.reason} if only.reason else {})
    known = [r.p_a for r in results if r.p_a is not None]
    flags = [r.consistent for r in results if r.consistent is not None]
    p_a = sum(known) / len(known) if known else None
    out = {
        "preferred": preferred_from_p(p_a, tie_margin) if p_a is not None else "error",
        "p_a": p_a,
        "consistent": all(flags) if flags else None,
        "verdicts": [v for r in results for v in r.verdicts],
        "panel": [r.model_dump(include={"judge", "preferred", "p_a", "consistent", "reason"})
                  for r in results],
    }
    return out if known else out | {"reason": "every judge of the panel failed"}


async def label_pairs(
    rows: list[PairRow], judges: dict[str, JudgeFn], tie_margin: float = 0.05
) -> tuple[list[dict[str, Any]], int]:
    """Run every judge over the pairs; return (output rows, pairs with a failed request).

    Identical responses are a tie without asking anyone.
    """
    todo = [i for i, row in enumerate(rows) if row.response_a.strip() != row.response_b.strip()]
    per_judge = await asyncio.gather(*(judge([rows[i] for i in todo]) for judge in judges.values()))
    labels: list[dict[str, Any]] = [
        {"preferred": "tie", "p_a": 0.5, "consistent": None, "verdicts": [],
         "reason": "identical responses"} for _ in rows]
    failed = 0
    for slot, index in enumerate(todo):
        pair_results = [judged[slot] for judged in per_judge]
        labels[index] = combine_panel(pair_results, tie_margin)
        failed += any(r.failed for r in pair_results)
    return [{**row.data, **label} for row, label in zip(rows, labels, strict=True)], failed


# --- the verifier as a panel member -------------------------------------------------------------


def judge_verify(rows: list[PairRow], name: str = "verify") -> list[JudgeResult]:
    """Label pairs by checking their constraints (``judges.constraints.verify``); no model call. A
    pair without constraints is "error"."""
    results = []
    for row in rows:
        if not row.constraints:
            results.append(error_result(name, "no constraints to verify"))
            continue
        found = verify_pair(row.constraints, row.response_a, row.response_b)
        results.append(JudgeResult(
            judge=name, preferred=found["preferred"], p_a=found["p_a"], consistent=None,
            verdicts=[{"judge": name, "share_a": found["share_a"], "share_b": found["share_b"],
                       "checks": found["verdicts"]}]))
    return results
