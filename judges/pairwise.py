"""The LLM pairwise judge: which of two responses is better, asked in both orders and combined.

An AI labeller is biased towards a position and towards length, and a reply that cannot be
read must never count as a win (RLAIF, Lee et al. 2023, arXiv 2309.00267; MT-Bench, Zheng et
al. 2023, arXiv 2306.05685). So the judge here shows each pair in both orders by default and
calls a pair whose two verdicts point at the same *position* inconsistent (a tie); it can read a
soft label from the log-probabilities of the two verdict tokens, renormalised over just those
two and averaged over both orders, p_a = (q1 + (1 - q2)) / 2; it can reason first (CoT) and
then give a one-token verdict; and a reply that is not a verdict is asked again once with a
stricter reminder and otherwise labelled "error". The responses are quoted between tags as
data, any tag-like text inside them is defused, and the judge is told to ignore instructions
found there. The prompt wording and parameters are data (``judges/rubrics/pairwise.yaml``).
"""

from __future__ import annotations

import random
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from datagen.endpoint.client import LLMClient
from datagen.endpoint.completion import Completion
from judges.pairs import PairRow, prompt_text
from judges.panel import JudgeResult, error_result
from judges.rubric import PairwiseRubric, render_pair
from judges.verdicts import ask_all, chat_body, first_probability, parse_label, preferred_from_p

Order = Literal["both", "random", "first"]


class PairwiseSettings(BaseModel):
    """How the LLM pairwise judge runs. Example: ``PairwiseSettings(soft=True, orders="both")``."""

    model_config = ConfigDict(extra="forbid")

    orders: Order = "both"
    soft: bool = False
    cot: bool = False
    seed: int = 0
    tie_margin: float = Field(default=0.05, ge=0, le=0.5)
    model: str | None = None


def shown_orders(row: PairRow, orders: Order, seed: int) -> list[str]:
    """Which response is shown first in each judged order: ["a", "b"], ["a"] or one at random
    (seeded by the seed and the pair id, so a rerun picks the same)."""
    if orders == "both":
        return ["a", "b"]
    if orders == "first":
        return ["a"]
    return [random.Random(f"{seed}:{row.id}").choice("ab")]


async def judge_pairwise(
    client: LLMClient, rows: list[PairRow], rubric: PairwiseRubric, settings: PairwiseSettings,
    name: str = "pairwise",
) -> list[JudgeResult]:
    """Label pairs with an LLM judge: one request per shown order (two with CoT), one re-ask
    per unreadable reply, then the orders combined per pair."""
    settings = settings.model_copy(update={"model": settings.model or client.config.model})
    jobs = [(r, first) for r, row in enumerate(rows)
            for first in shown_orders(row, settings.orders, settings.seed)]
    verdicts = [{"judge": name, "first": first} for _, first in jobs]
    messages = [_order_messages(rubric, rows[r], first, settings.cot) for r, first in jobs]
    if settings.cot:
        await _add_rationales(client, rubric, settings, verdicts, messages)
    params = {"max_tokens": rubric.params.max_tokens, "temperature": rubric.params.temperature}
    if settings.soft:
        params |= {"logprobs": True, "top_logprobs": rubric.params.top_logprobs}
    live = [j for j, v in enumerate(verdicts) if "error" not in v]
    bodies = [chat_body(settings.model, messages[j], **params) for j in live]
    answers = await ask_all(client, bodies)
    retry = []
    for j, answer in zip(live, answers, strict=True):
        if _read_answer(verdicts[j], answer, rubric, settings.soft):
            retry.append(j)
    reminders = [messages[j] + [{"role": "assistant", "content": verdicts[j]["reply"]},
                                {"role": "user", "content": rubric.reminder}] for j in retry]
    answers = await ask_all(client, [chat_body(settings.model, m, **params) for m in reminders])
    for j, answer in zip(retry, answers, strict=True):
        verdicts[j] |= {"retried": True, "unread_reply": verdicts[j]["reply"]}
        if _read_answer(verdicts[j], answer, rubric, settings.soft):
            verdicts[j]["error"] = "unparseable verdict after one re-ask"
    grouped: list[list[dict]] = [[] for _ in rows]
    for (r, _), verdict in zip(jobs, verdicts, strict=True):
        grouped[r].append(verdict)
    return [combine_orders(name, group, settings.tie_margin) for group in grouped]


def _order_messages(rubric: PairwiseRubric, row: PairRow, first: str, cot: bool) -> list[dict]:
    shown = (row.response_a, row.response_b) if first == "a" else (row.response_b, row.response_a)
    ending = rubric.cot_request if cot else rubric.ending
    return render_pair(rubric, prompt_text(row.prompt), *shown, ending)


async def _add_rationales(
    client: LLMClient, rubric: PairwiseRubric, settings: PairwiseSettings,
    verdicts: list[dict], messages: list[list[dict]],
) -> None:
    """CoT step one: ask for a rationale, then extend each conversation with it and the
    closing question (step two is the ordinary one-token verdict)."""
    params = {"max_tokens": rubric.params.cot_max_tokens, "temperature": rubric.params.temperature}
    answers = await ask_all(client, [chat_body(settings.model, m, **params) for m in messages])
    for verdict, conversation, answer in zip(verdicts, messages, answers, strict=True):
        if not answer.ok or not answer.text.strip():
            verdict |= {"reply": None, "verdict": None, "p_first": None, "retried": False,
                        "error": answer.error or "empty rationale", "failed": not answer.ok}
            continue
        verdict["rationale"] = answer.text
        conversation += [{"role": "assistant", "content": answer.text},
                         {"role": "user", "content": rubric.cot_ending}]


def _read_answer(verdict: dict, answer: Completion, rubric: PairwiseRubric, soft: bool) -> bool:
    """Fill a verdict record from a reply; return True when the reply was unreadable."""
    verdict |= {"reply": answer.text, "verdict": None, "p_first": None,
                "retried": verdict.get("retried", False), "flags": []}
    if not answer.ok:
        verdict |= {"error": answer.error or answer.status, "failed": True}
        return False
    p_first = None
    if soft:
        top = answer.top_logprobs(0)
        p_first, verdict["flags"] = first_probability(
            top, rubric.labels, rubric.params.missing_logprob)
        if p_first is None:
            verdict["flags"] = ["no_verdict_logprobs"]
    if p_first is None:
        label = parse_label(answer.text, rubric.labels)
        if label is None:
            return True
        p_first = 1.0 if label == rubric.labels[0] else 0.0
    verdict["p_first"] = p_first
    verdict["verdict"] = "first" if p_first > 0.5 else "second" if p_first < 0.5 else None
    return False


def combine_orders(name: str, verdicts: list[dict], tie_margin: float) -> JudgeResult:
    """One pair's label from its verdicts (one per shown order).

    p_a averages P(a) over the orders; with two orders whose verdicts point at the same
    position the pair is inconsistent and labelled "tie" (p_a is still reported).
    """
    failed = any(v.get("failed") for v in verdicts)
    clean = [{k: v for k, v in verdict.items() if k != "failed"} for verdict in verdicts]
    errors = [v["error"] for v in verdicts if v.get("error")]
    if errors:
        return error_result(name, errors[0], clean, failed=failed)
    p_each = [v["p_first"] if v["first"] == "a" else 1.0 - v["p_first"] for v in verdicts]
    p_a = sum(p_each) / len(p_each)
    consistent = None
    if len(verdicts) == 2:
        winners = [_winner(v) for v in verdicts]
        consistent = winners[0] is not None and winners[0] == winners[1]
    preferred = "tie" if consistent is False else preferred_from_p(p_a, tie_margin)
    return JudgeResult(judge=name, preferred=preferred, p_a=p_a, consistent=consistent,
                       verdicts=clean)


def _winner(verdict: dict) -> str | None:
    other = "b" if verdict["first"] == "a" else "a"
    return {"first": verdict["first"], "second": other}.get(verdict["verdict"])
