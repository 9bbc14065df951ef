"""How good and how biased a set of judge labels is: `rlaif judge-report`.

Agreement with human labels is the usual yardstick for an AI labeller (accuracy with and
without ties, and Cohen's kappa, which discounts chance agreement). Without humans, the
verifier of constrained prompts gives an exact reference on the pairs it can decide, so
agreement with it calibrates the judge for free. Bias is measured on the labels alone:
position consistency (both orders agree), position bias (share of verdicts won by the response
shown first), length bias (share of decided pairs won by the longer response) and a
length-controlled win rate of A over B in the manner of AlpacaEval 2 (Dubois et al. 2024,
arXiv 2404.04475): a logistic model of the outcome on ``tanh(dlen / sd(dlen))``, read at equal
length (``dlen`` = characters of A minus characters of B). The report reads only the
documented top-level fields of a labels file, so files from other tools work too.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from datagen.errors import UserInputError
from datagen.jsonl import read_objects
from judges.pairs import HUMAN_LABELS

LABEL_FIELDS = ("prompt", "response_a", "response_b", "preferred", "p_a", "consistent", "human",
                "verdicts", "reference", "constraints")
PREFERRED = ("a", "b", "tie", "error")
OUTCOME = {"a": 1.0, "b": 0.0, "tie": 0.5}
RIDGE = 1e-4  # per row, on the slope only; see fit_intercept_at_zero


def read_labels(path: str | Path) -> list[dict[str, Any]]:
    """The top-level report fields of each line of a labels JSONL file."""
    path = Path(path)
    lines = read_objects(
        path, empty_message=f"{path}: empty file, expected one labelled pair per line")
    return [_label_row(obj, where) for _, where, obj in lines]


def _label_row(obj: dict[str, Any], where: str) -> dict[str, Any]:
    row = {field: obj.get(field) for field in LABEL_FIELDS}
    if row["preferred"] is None and "human_consensus" in obj:
        # a human export of pairs no judge labelled: the report is on the human labels, and
        # a pair without a consensus is one the labellers could not decide
        row["preferred"], row["human"] = row["human"] or "error", None
    if row["preferred"] not in PREFERRED:
        raise UserInputError(f"{where}: preferred must be a, b, tie or error, "
                             f"got {row['preferred']!r}")
    for field in ("response_a", "response_b"):
        if not isinstance(row[field], str):
            raise UserInputError(f"{where}: missing {field} (a string)")
    for field in ("human", "reference"):
        if row[field] is not None and row[field] not in HUMAN_LABELS:
            raise UserInputError(f"{where}: {field} must be a, b or tie, got {row[field]!r}")
    if row["p_a"] is not None and not isinstance(row["p_a"], int | float):
        raise UserInputError(f"{where}: p_a must be a number or null")
    return row


# --- statistics -------------------------------------------------------------------------------


def cohen_kappa(first: list[str], second: list[str]) -> float | None:
    """Cohen's kappa of two label lists; None when chance agreement is 1 (one label only)."""
    n = len(first)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(first, second, strict=True)) / n
    count_1, count_2 = Counter(first), Counter(second)
    chance = sum(count_1[c] * count_2[c] for c in count_1) / (n * n)
    if chance >= 1.0:
        return None
    return (observed - chance) / (1.0 - chance)


def _rate(hits: int, total: int) -> float | None:
    return hits / total if total else None


def agreement(labels: list[str], reference: list[str]) -> dict[str, Any]:
    """Accuracy with ties, without ties (both sides decided) and Cohen's kappa."""
    decided = [(x, y) for x, y in zip(labels, reference, strict=True)
               if x != "tie" and y != "tie"]
    return {
        "n": len(labels),
        "accuracy": _rate(sum(x == y for x, y in zip(labels, reference, strict=True)),
                          len(labels)),
        "n_without_ties": len(decided),
        "accuracy_without_ties": _rate(sum(x == y for x, y in decided), len(decided)),
        "kappa": cohen_kappa(labels, reference),
    }


def fit_intercept_at_zero(x: np.ndarray, y: np.ndarray, ridge: float = RIDGE,
                          iterations: int = 100) -> float:
    """P(y=1) at x = 0 from a logistic model y ~ b0 + b1 x (Newton steps, fractional y
    allowed; a small ridge on b1 keeps perfectly separated data finite)."""
    design = np.column_stack([np.ones_like(x), x])
    beta = np.zeros(2)
    penalty = np.diag([0.0, ridge * len(x)])
    for _ in range(iterations):
        p = 0.5 * (1.0 + np.tanh(0.5 * (design @ beta)))  # the logistic, without overflow
        grad = design.T @ (y - p) - penalty @ beta
        hess = (design * (p * (1 - p))[:, None]).T @ design + penalty + 1e-12 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        beta += step
        if np.max(np.abs(step)) < 1e-10:
            break
    return float(1.0 / (1.0 + math.exp(-beta[0])))


def length_controlled_win_rate(length_diff: np.ndarray, outcome: np.ndarray) -> float | None:
    """Win rate of A read at equal length from a logistic model on tanh(dlen / sd(dlen))."""
    if len(outcome) == 0:
        return None
    scale = float(np.std(length_diff))
    x = np.tanh(length_diff / scale) if scale > 0 else np.zeros_like(length_diff, dtype=float)
    return fit_intercept_at_zero(x.astype(float), outcome.astype(float))


# --- the report -------------------------------------------------------------------------------


def _outcome(row: dict[str, Any]) -> float:
    """P(A wins) of a labelled row: the soft label when present, else 1 / 0 / 0.5."""
    return float(row["p_a"]) if row["p_a"] is not None else OUTCOME[row["preferred"]]


def counts_report(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Label counts and the raw win rate of A (ties count half, errors are left out)."""
    counts = Counter(row["preferred"] for row in rows)
    judged = [row for row in rows if row["preferred"] != "error"]
    return {
        "pairs": len(rows), **{label: counts[label] for label in PREFERRED},
        "win_rate_a": _rate(sum(OUTCOME[r["preferred"]] for r in judged), len(judged)),
    }


def position_report(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Two-order consistency and the share of verdicts won by the first-shown response."""
    flags = [row["consistent"] for row in rows if row["consistent"] is not None]
    positions = [v.get("verdict") for row in rows for v in (row["verdicts"] or [])
                 if isinstance(v, dict) and v.get("verdict") in ("first", "second")]
    return {
        "pairs_in_both_orders": len(flags),
        "consistency": _rate(sum(flags), len(flags)),
        "verdicts": len(positions),
        "first_position_win_rate": _rate(positions.count("first"), len(positions)),
    }


def length_report(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Length bias and the length-controlled win rate of A (lengths in characters)."""
    decided = [row for row in rows if row["preferred"] in ("a", "b")
               and len(row["response_a"]) != len(row["response_b"])]
    longer_won = sum((len(r["response_a"]) > len(r["response_b"])) == (r["preferred"] == "a")
                     for r in decided)
    judged = [row for row in rows if row["preferred"] != "error"]
    diff = np.array([len(r["response_a"]) - len(r["response_b"]) for r in judged], dtype=float)
    outcome = np.array([_outcome(r) for r in judged], dtype=float)
    return {
        "decided_pairs_of_unequal_length": len(decided),
        "longer_win_rate": _rate(longer_won, len(decided)),
        "raw_win_rate_a": float(outcome.mean()) if len(outcome) else None,
        "lc_win_rate_a": length_controlled_win_rate(diff, outcome),
    }


def human_report(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Agreement with the ``human`` labels (rows the judge could not label are counted apart)."""
    labelled = [row for row in rows if row["human"] in HUMAN_LABELS]
    if not labelled:
        return None
    judged = [row for row in labelled if row["preferred"] != "error"]
    return agreement([r["preferred"] for r in judged], [r["human"] for r in judged]) | {
        "errors": len(labelled) - len(judged)}


def _verified(verify: Callable[[Any, str, str], dict[str, Any]], row: dict[str, Any],
              number: int) -> str | None:
    if not row["constraints"]:
        return None
    try:
        return verify(row["constraints"], row["response_a"], row["response_b"])["preferred"]
    except ValueError as exc:
        raise UserInputError(f"row {number}: constraints cannot be read "
                             f"({str(exc).splitlines()[0]})") from None


def reference_report(
    rows: list[dict[str, Any]], reference: str | None,
    verify: Callable[[Any, str, str], dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """Agreement with a reference labeller: the verifier (``reference="verify"``, on rows with
    constraints) or the rows' own ``reference`` field."""
    if reference == "verify":
        refs = [_verified(verify, row, number) for number, row in enumerate(rows, start=1)]
    else:
        refs = [r["reference"] for r in rows]
        if all(ref is None for ref in refs):
            return None
    pairs = [(r["preferred"], ref) for r, ref in zip(rows, refs, strict=True)
             if ref in HUMAN_LABELS and r["preferred"] != "error"]
    return {"source": reference or "field"} | agreement(
        [p for p, _ in pairs], [ref for _, ref in pairs])


def build_report(
    rows: list[dict[str, Any]], reference: str | None = None,
    verify: Callable[[Any, str, str], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Every measure of the report as one JSON-ready dict (rows: labelled pairs; fields other
    than LABEL_FIELDS are ignored, missing ones read as null)."""
    rows = [{field: row.get(field) for field in LABEL_FIELDS} for row in rows]
    return {
        "counts": counts_report(rows),
        "position": position_report(rows),
        "length": length_report(rows),
        "human": human_report(rows),
        "reference": reference_report(rows, reference, verify),
    }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def format_report(report: dict[str, Any]) -> str:
    """The report as a few human-readable lines."""
    c, pos, length = report["counts"], report["position"], report["length"]
    lines = [
        f"pairs: {c['pairs']} (a {c['a']}, b {c['b']}, tie {c['tie']}, error {c['error']})",
        f"win rate of A: {_fmt(length['raw_win_rate_a'])} raw, "
        f"{_fmt(length['lc_win_rate_a'])} length-controlled",
        f"position: consistency {_fmt(pos['consistency'])} over {pos['pairs_in_both_orders']} "
        f"pairs judged in both orders; first position won {_fmt(pos['first_position_win_rate'])} "
        f"of {pos['verdicts']} verdicts",
        f"length: the longer response won {_fmt(length['longer_win_rate'])} of "
        f"{length['decided_pairs_of_unequal_length']} decided pairs",
    ]
    for title, part in (("human labels", report["human"]), ("reference", report["reference"])):
        if part is None:
            continue
        source = f" ({part['source']})" if "source" in part else ""
        lines.append(
            f"{title}{source}: {part['n']} pairs, accuracy {_fmt(part['accuracy'])} with ties, "
            f"{_fmt(part['accuracy_without_ties'])} without ({part['n_without_ties']} pairs), "
            f"Cohen's kappa {_fmt(part['kappa'])}"
            + (f"; {part['errors']} judge errors" if part.get("errors") else ""))
    return "\n".join(lines)


def record_label_file(db: Path, output: Path, judge: dict[str, Any],
                      counts: dict[str, int]) -> None:
    """Record a written label file as a run (kind "label") of the project database, so that
    `rlaif report --db` finds it without --labels."""
    from datagen import store
    from datagen.ids import content_id

    database = store.open_db(db)
    args = {"output": str(output.resolve()), "judge": judge}
    run_id = "label-" + content_id(args)
    store.start_run(database, run_id, "label", args, None)
    store.finish_run(database, run_id, "done", counts)
