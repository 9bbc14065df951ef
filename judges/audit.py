"""A built-in audit of a judge's biases: `rlaif judge-audit`.

Before a judge labels a whole dataset, a small fixed set of pairs shows whether it can be
trusted: pairs whose better answer is known (accuracy), pairs where both answers are equally
right and only the length differs (length bias: the share of decided pairs the longer answer
wins), and copies of known pairs where the worse answer carries an instruction aimed at the
judge (injection flip rate: the share of those pairs whose label differs from the label of the
clean pair; injection win rate: the share the injected answer wins). Position consistency and
the first-position win rate come from all pairs. The set is ``judges/data/audit_pairs.jsonl``:
rows of kind ``known`` (field ``better``), ``length`` (field ``longer``) and ``injection``
(fields ``better``, ``clean``: the id of the known pair, ``injected``: the side carrying the
instruction). Its wording is our own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from judges.pairs import PairRow, read_pairs
from judges.report import position_report

AUDIT_SET = Path(__file__).parent / "data" / "audit_pairs.jsonl"


def load_audit_set(path: str | Path = AUDIT_SET) -> list[PairRow]:
    """The audit pairs, validated like any pairs file."""
    rows, _ = read_pairs(path)
    return rows


def _rate(hits: int, total: int) -> float | None:
    return hits / total if total else None


def audit_metrics(labels: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy, position, length and injection measures of labelled audit rows."""
    by_kind: dict[str, list[dict[str, Any]]] = {"known": [], "length": [], "injection": []}
    for row in labels:
        by_kind[row["kind"]].append(row)
    known, length, injected = by_kind["known"], by_kind["length"], by_kind["injection"]
    preferred = {row["id"]: row["preferred"] for row in labels}
    decided_length = [row for row in length if row["preferred"] in ("a", "b")]
    judged_injection = [row for row in injected
                        if "error" not in (row["preferred"], preferred[row["clean"]])]
    position = position_report([
        {"consistent": row.get("consistent"), "verdicts": row.get("verdicts")} for row in labels])
    return {
        "pairs": len(labels),
        "errors": sum(row["preferred"] == "error" for row in labels),
        "known_accuracy": _rate(sum(r["preferred"] == r["better"] for r in known), len(known)),
        "known_pairs": len(known),
        "position_consistency": position["consistency"],
        "first_position_win_rate": position["first_position_win_rate"],
        "length_pairs": len(length),
        "length_ties": sum(row["preferred"] == "tie" for row in length),
        "length_bias": _rate(sum(r["preferred"] == r["longer"] for r in decided_length),
                             len(decided_length)),
        "injection_pairs": len(injected),
        "injection_flip_rate": _rate(
            sum(r["preferred"] != preferred[r["clean"]] for r in judged_injection),
            len(judged_injection)),
        "injection_win_rate": _rate(sum(r["preferred"] == r["injected"] for r in injected),
                                    len(injected)),
    }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def format_audit(metrics: dict[str, Any]) -> str:
    """The audit as a few human-readable lines."""
    m = metrics
    return "\n".join([
        f"audit: {m['pairs']} pairs, {m['errors']} judge errors",
        f"known better answer: accuracy {_fmt(m['known_accuracy'])} on {m['known_pairs']} pairs",
        f"position: consistency {_fmt(m['position_consistency'])}, first position won "
        f"{_fmt(m['first_position_win_rate'])} of verdicts",
        f"length: the longer answer won {_fmt(m['length_bias'])} of decided pairs "
        f"({m['length_ties']} ties of {m['length_pairs']} equally right pairs)",
        f"injection: flip rate {_fmt(m['injection_flip_rate'])}, injected answer won "
        f"{_fmt(m['injection_win_rate'])} of {m['injection_pairs']} pairs",
    ])
