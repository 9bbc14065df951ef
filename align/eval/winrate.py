"""Win rate of a trained policy against a reference on held-out prompts: `rlaif eval winrate`.

Training is only worth it if the new policy answers better than what it started from, judged
the way the training labels were made. Both models answer every prompt once with the same
sampling settings and seed (each request through the ledger, so a rerun sends only what is
missing), the two answers to a prompt become a pair with the policy as A and the reference as
B, and the judges of `rlaif label` compare them in both orders. The policy's win rate counts a
tie as half a win and leaves errors out (a failed request or an unreadable verdict is never a
win for either side): ``(wins + ties / 2) / (wins + losses + ties)``, with a 95% Wilson
interval on that share. The length-controlled win rate is ``judges.report``'s logistic model
read at equal length, on the same outcomes (1 / 0 / 0.5), with a seeded bootstrap interval.
For prompts carrying constraints (``rlaif generate constrained``) and ``--judge verify``, each
side's constraint-satisfaction rate is the share of its answers that meet every constraint
of their prompt, with a Wilson interval. A model is a local directory (``default`` being the
embedded model), served for as long as its answers are needed, or an OpenAI-compatible URL
(``align.eval.policies``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from align.eval.intervals import wilson
from align.eval.policies import Endpoint, Sampling, Source, answer, served
from datagen.connect import client_config
from datagen.errors import UserInputError
from datagen.jsonl import atomic_write, write_jsonl
from datagen.responses.sample import PromptItem, Response
from judges.constraints.kinds import parse_constraints
from judges.constraints.verify import verify_response
from judges.pairs import PairRow, pair_row
from judges.report import OUTCOME, length_controlled_win_rate

SIDES = ("policy", "reference")
BOOTSTRAP_ROUNDS = 1000


def answer_both(sources: list[Source], prompts: list[PromptItem], sampling: Sampling,
                options: dict[str, Any], db: Any) -> tuple[dict[str, list[Response]],
                                                            list[Endpoint]]:
    """Each side's answers (servers started for local models and stopped after)."""
    answers: dict[str, list[Response]] = {}
    with served(sources) as endpoints:
        indices = (0, reference_sample_index(*sources, endpoints))
        for source, endpoint, index in zip(sources, endpoints, indices, strict=True):
            config = client_config(options, endpoint.base_url, model=endpoint.model)
            (answers[source.role],) = answer(config, db, prompts, [sampling], index,
                                             progress=options.get("progress"))
    return answers, endpoints


def reference_sample_index(policy: Source, reference: Source, endpoints: list[Endpoint]) -> int:
    """The ledger sample index of the reference's requests. The ledger keys a request by its
    body, not its endpoint, so two different models announced under one name (two checkpoint
    directories both called ``final``, say) would share answers; the reference then asks as
    sample 1. The same source given twice asks the same requests and gets the same answers."""
    same_source = (policy.local, policy.url) == (reference.local, reference.url)
    return 1 if endpoints[0].model == endpoints[1].model and not same_source else 0


def check_constraints(prompts: list[PromptItem], path: Path) -> None:
    """For ``--judge verify``: some prompt carries constraints and every one parses."""
    if not any(item.constraints for item in prompts):
        raise UserInputError(f"{path}: --judge verify needs prompts with constraints (make them "
                             "with `rlaif generate constrained`)")
    for item in prompts:
        if item.constraints:
            try:
                parse_constraints(item.constraints)
            except ValueError as exc:
                raise UserInputError(f"{path}: prompt {item.id}: constraints cannot be read "
                                     f"({str(exc).splitlines()[0]})") from None


def build_pairs(prompts: list[PromptItem], policy: list[Response],
                reference: list[Response]) -> tuple[list[PairRow], dict[int, dict[str, Any]]]:
    """Pairs to judge (policy as A, reference as B) and, by prompt position, the "error" label
    rows of prompts where a side's request failed (an empty answer is judged like any other)."""
    rows: list[PairRow] = []
    failed: dict[int, dict[str, Any]] = {}
    for index, (item, mine, theirs) in enumerate(zip(prompts, policy, reference, strict=True)):
        data = {"id": item.id, "prompt_id": item.id, "prompt": item.prompt,
                "response_a": mine.text, "response_b": theirs.text, "model_a": mine.model,
                "model_b": theirs.model, "side_a": "policy", "side_b": "reference"}
        if item.constraints:
            data["constraints"] = item.constraints
        broken = [(side, r) for side, r in zip(SIDES, (mine, theirs), strict=True)
                  if r.status != "ok"]
        if broken:
            side, response = broken[0]
            failed[index] = data | {"preferred": "error", "p_a": None, "consistent": None,
                                    "verdicts": [],
                                    "reason": f"{side} request failed: {response.error}"}
        else:
            rows.append(pair_row(data, f"prompt {item.id}"))
    return rows, failed


def merge_labels(count: int, judged: list[dict[str, Any]],
                 failed: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """Judged and failed label rows back in prompt order."""
    labelled = iter(judged)
    return [failed[i] if i in failed else next(labelled) for i in range(count)]


def bootstrap_lc_interval(length_diff: np.ndarray, outcome: np.ndarray, seed: int,
                          rounds: int = BOOTSTRAP_ROUNDS) -> list[float] | None:
    """Percentile 95% interval of the length-controlled win rate over resampled pairs."""
    n = len(outcome)
    if n == 0:
        return None
    rng = np.random.default_rng(seed)
    values = []
    for picks in rng.integers(0, n, size=(rounds, n)):
        if np.all(outcome[picks] == outcome[picks[0]]):  # one outcome: no fit needed
            values.append(float(outcome[picks[0]]))
        else:
            values.append(length_controlled_win_rate(length_diff[picks], outcome[picks]))
    low, high = np.percentile(values, [2.5, 97.5])
    return [float(low), float(high)]


def lc_win_rate(length_diff: np.ndarray, outcome: np.ndarray) -> float | None:
    """``judges.report.length_controlled_win_rate``, exact when every outcome is the same."""
    if len(outcome) and np.all(outcome == outcome[0]):
        return float(outcome[0])
    return length_controlled_win_rate(length_diff, outcome)


def satisfaction(prompts: list[PromptItem], responses: list[Response]) -> tuple[int, int]:
    """(answers meeting every constraint of their prompt, answers checked): prompts with
    constraints whose request succeeded."""
    checked = [(item, r) for item, r in zip(prompts, responses, strict=True)
               if item.constraints and r.status == "ok"]
    passed = sum(all(verify_response(item.constraints, r.text).passed) for item, r in checked)
    return passed, len(checked)


def interval(successes: float, n: int) -> list[float] | None:
    found = wilson(successes, n)
    return list(found) if found is not None else None


def summarise(labels: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """Counts, the policy's win rate with its Wilson interval and the length-controlled win
    rate with its bootstrap interval (labels: A = policy)."""
    counts = {k: sum(r["preferred"] == k for r in labels) for k in ("a", "b", "tie", "error")}
    judged = [r for r in labels if r["preferred"] != "error"]
    n = len(judged)
    score = counts["a"] + counts["tie"] / 2
    diff = np.array([len(r["response_a"]) - len(r["response_b"]) for r in judged], dtype=float)
    outcome = np.array([OUTCOME[r["preferred"]] for r in judged], dtype=float)
    return {
        "win_rate": score / n if n else None, "ci": interval(score, n), "n": n,
        "length_controlled_win_rate": lc_win_rate(diff, outcome),
        "length_controlled_win_rate_ci": bootstrap_lc_interval(diff, outcome, seed),
        "wins": counts["a"], "losses": counts["b"], "ties": counts["tie"],
        "errors": counts["error"],
    }


def satisfaction_report(prompts: list[PromptItem],
                        answers: dict[str, list[Response]]) -> dict[str, Any]:
    """Constraint satisfaction of each side: rates, Wilson intervals and counts, plus the
    flat ``<side>_satisfaction_rate`` / ``_ci`` keys `rlaif report` reads."""
    found = {side: satisfaction(prompts, answers[side]) for side in SIDES}
    rates = {s: p / n if n else None for s, (p, n) in found.items()}
    cis = {s: interval(p, n) for s, (p, n) in found.items()}
    flat = {}
    for side in SIDES:
        flat[f"{side}_satisfaction_rate"] = rates[side]
        flat[f"{side}_satisfaction_rate_ci"] = cis[side]
    return {"satisfaction_rate": rates, "satisfaction_ci": cis,
            "satisfaction_n": {s: n for s, (_, n) in found.items()}, **flat}


def pairs_path(output: Path) -> Path:
    """RESULT.json -> RESULT.pairs.jsonl, next to it."""
    stem = output.name[:-5] if output.name.endswith(".json") else output.name
    return output.with_name(stem + ".pairs.jsonl")


def write_result(output: Path, result: dict[str, Any], labels: list[dict[str, Any]]) -> Path:
    """Write the labelled pairs JSONL, then the result JSON (each through a temporary file);
    return the pairs path."""
    pairs = pairs_path(output)
    write_jsonl(pairs, labels)
    with atomic_write(output) as handle:
        handle.write(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return pairs


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _ci(value: list[float] | None) -> str:
    return "-" if value is None else f"[{value[0]:.3f}, {value[1]:.3f}]"


def format_table(result: dict[str, Any]) -> str:
    """The result as a short aligned table."""
    rows = [("win rate (ties half)", result["win_rate"], result["ci"], result["n"]),
            ("length-controlled win rate", result["length_controlled_win_rate"],
             result["length_controlled_win_rate_ci"], result["n"])]
    if result.get("satisfaction_rate"):
        for side in SIDES:
            rows.append((f"constraints met: {side}", result["satisfaction_rate"][side],
                         result["satisfaction_ci"][side], result["satisfaction_n"][side]))
    lines = [f"policy {result['policy']['model']} vs reference {result['reference']['model']}",
             f"{'':<28} {'value':>6}  {'95% interval':<16}  n"]
    lines += [f"{name:<28} {_num(value):>6}  {_ci(ci):<16}  {n}" for name, value, ci, n in rows]
    lines.append(f"wins {result['wins']}, losses {result['losses']}, ties {result['ties']}, "
                 f"errors {result['errors']}")
    return "\n".join(lines)
