"""The pointwise score judge: each response rated alone, so the order of a pair cannot matter.

Direct scoring (d-RLAIF, Lee et al. 2023, arXiv 2309.00267) asks the judge for a 1-10 score of
one response and reads the score as an expected value rather than a sampled digit: with the
log-probabilities of the score tokens at the first generated position,
``s = sum(v * p(v)) / sum(p(v))`` over the score tokens present in the top-k list. A pair
is then labelled ``p_a = sigmoid((s_a - s_b) / T)`` with ``T = score_temperature`` from the
rubric (default 1.0: a one-point gap gives p_a = 0.73, two points 0.88). Each response is
one request that never mentions the other response, so swapping A and B sends the very same
requests and gives ``1 - p_a``. A reply without score logprobs falls back to the number in
its text (flagged); an unreadable reply is asked again once, then the pair is "error".

Tokenizers that split "10" into "1" and "0" cannot tell 10 from 1 at the first position;
use a 1-9 or 0-9 scale in the rubric (``scores``) for such judges.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from datagen.endpoint.client import LLMClient
from datagen.endpoint.completion import Completion
from judges.pairs import PairRow, prompt_text
from judges.panel import JudgeResult, error_result
from judges.rubric import defuse, template_tags
from judges.verdicts import ask_all, chat_body, preferred_from_p, sigmoid, token_logprob

POINTWISE_FIELDS = {"prompt": "", "response": "", "ending": ""}


class PointwiseParams(BaseModel):
    """Sampling parameters of a score request."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(default=0.0, ge=0)
    max_tokens: int = Field(default=1, ge=1)
    top_logprobs: int = Field(default=20, ge=1, le=20)


class PointwiseRubric(BaseModel):
    """A score judge as data.

    Example: ``load_rubric(default_rubric_path("pointwise"), PointwiseRubric, **POINTWISE_FIELDS)``
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["pointwise"] = "pointwise"
    scores: list[str] = Field(default=[str(i) for i in range(1, 11)], min_length=2,
                              description="Score tokens; each is read as its number")
    score_temperature: float = Field(default=1.0, gt=0,
                                     description="T in p_a = sigmoid((s_a - s_b) / T)")
    system: str
    template: str = Field(description="Placeholders {prompt} {response} {ending}")
    ending: str
    reminder: str
    params: PointwiseParams = PointwiseParams()
    sha: str = ""

    @field_validator("scores")
    @classmethod
    def _numeric(cls, scores: list[str]) -> list[str]:
        for token in scores:
            float(token)  # a ValueError becomes a validation error naming the field
        return scores


def render_single(rubric: PointwiseRubric, prompt: str, response: str) -> list[dict[str, str]]:
    """The judge's chat messages for one response."""
    tags = template_tags(rubric.template)
    user = rubric.template.format(prompt=defuse(prompt, tags), response=defuse(response, tags),
                                  ending=rubric.ending)
    return [{"role": "system", "content": rubric.system}, {"role": "user", "content": user}]


def expected_score(top: dict[str, float], scores: list[str]) -> float | None:
    """Sum of v * p(v) over the score tokens in top-k, renormalised over those tokens."""
    found = [(float(tok), lp) for tok in scores if (lp := token_logprob(top, tok)) is not None]
    if not found:
        return None
    peak = max(lp for _, lp in found)
    weights = [(value, math.exp(lp - peak)) for value, lp in found]
    return sum(v * w for v, w in weights) / sum(w for _, w in weights)


def text_score(text: str, scores: list[str]) -> float | None:
    """The score written in a reply ("7", "7/10", "Score: 7"), if it is one of the scores."""
    match = re.search(r"-?\d+(?:\.\d+)?", text)
    if match is None or match.group() not in scores:
        return None
    return float(match.group())


async def judge_score(
    client: LLMClient, rows: list[PairRow], rubric: PointwiseRubric, *,
    model: str | None = None, tie_margin: float = 0.05, name: str = "score",
) -> list[JudgeResult]:
    """Label pairs by scoring each response alone (identical (prompt, response) asked once)."""
    items = sorted({(prompt_text(row.prompt), text) for row in rows
                    for text in (row.response_a, row.response_b)})
    scored = await score_each(client, items, rubric, model=model)
    return [_pair_result(name, row, scored, rubric.score_temperature, tie_margin) for row in rows]


async def score_each(
    client: LLMClient, items: list[tuple[str, str]], rubric: PointwiseRubric, *,
    model: str | None = None,
) -> dict[tuple[str, str], dict[str, Any]]:
    """Score each (prompt text, response) alone: one ledger request per distinct item, one
    re-ask per unreadable reply. Each record has ``score`` (None with ``error`` when unread)."""
    model = model or client.config.model
    params = {"max_tokens": rubric.params.max_tokens, "temperature": rubric.params.temperature,
              "logprobs": True, "top_logprobs": rubric.params.top_logprobs}
    items = sorted(set(items))
    messages = {item: render_single(rubric, *item) for item in items}
    answers = await ask_all(client, [chat_body(model, messages[i], **params) for i in items])
    scored = {item: _read_score(ans, rubric) for item, ans in zip(items, answers, strict=True)}
    retry = [item for item in items if scored[item].get("unreadable")]
    reminders = [messages[i] + [{"role": "assistant", "content": scored[i]["reply"]},
                                {"role": "user", "content": rubric.reminder}] for i in retry]
    answers = await ask_all(client, [chat_body(model, m, **params) for m in reminders])
    for item, answer in zip(retry, answers, strict=True):
        first_reply = scored[item]["reply"]
        scored[item] = _read_score(answer, rubric) | {"retried": True, "unread_reply": first_reply}
        if scored[item].pop("unreadable", False):
            scored[item]["error"] = "unparseable score after one re-ask"
    return scored


def _read_score(answer: Completion, rubric: PointwiseRubric) -> dict[str, Any]:
    record: dict[str, Any] = {"reply": answer.text, "score": None, "retried": False, "flags": []}
    if not answer.ok:
        return record | {"error": answer.error or answer.status, "failed": True}
    score = expected_score(answer.top_logprobs(0), rubric.scores)
    if score is None:
        score = text_score(answer.text, rubric.scores)
        record["flags"] = ["no_score_logprobs"]
    if score is None:
        return record | {"unreadable": True}
    return record | {"score": score}


def _pair_result(
    name: str, row: PairRow, scored: dict[tuple[str, str], dict[str, Any]], temperature: float,
    tie_margin: float,
) -> JudgeResult:
    prompt = prompt_text(row.prompt)
    records = [scored[(prompt, row.response_a)], scored[(prompt, row.response_b)]]
    verdicts = [{"judge": name, "response": side,
                 **{k: v for k, v in rec.items() if k != "failed"}}
                for side, rec in zip("ab", records, strict=True)]
    errors = [rec["error"] for rec in records if rec.get("error")]
    if errors:
        return error_result(name, errors[0], verdicts,
                            failed=any(rec.get("failed") for rec in records))
    gap = (records[0]["score"] - records[1]["score"]) / temperature
    p_a = sigmoid(gap)
    return JudgeResult(judge=name, preferred=preferred_from_p(p_a, tie_margin), p_a=p_a,
                       consistent=None, verdicts=verdicts)
