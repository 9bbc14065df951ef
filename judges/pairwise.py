"""Pairwise preference labels: read pairs, ask an LLM judge which response is better, combine.

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

This module also holds what every judge shares: the input rows (``read_pairs``), the per-judge
result (``JudgeResult``) and the panel that runs several judges and averages their p_a
(``label_pairs``). Other judges (``pointwise``, ``reward_judge``, ``verify_results``) return
``JudgeResult`` lists in the same shape.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import re
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from datagen.batch import BatchLine, run_batch
from datagen.errors import UserInputError
from datagen.jsonl import numbered_lines, parse_json, read_text
from datagen.llm import CHAT_PATH, Completion, LLMClient, canonical_json, request_key
from datagen.responses import is_prompt
from judges.constraints import parse_constraints
from judges.verify import verify_pair

RUBRIC_DIR = Path(__file__).parent / "rubrics"
PAIRWISE_FIELDS = {"prompt": "", "first": "", "second": "", "ending": ""}
HUMAN_LABELS = ("a", "b", "tie")
Preferred = Literal["a", "b", "tie", "error"]
Order = Literal["both", "random", "first"]


# --- rubrics ----------------------------------------------------------------------------------


class PairwiseParams(BaseModel):
    """Sampling parameters of a pairwise judge request."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(default=0.0, ge=0)
    max_tokens: int = Field(default=1, ge=1, description="Tokens for the verdict reply")
    cot_max_tokens: int = Field(default=512, ge=1, description="Tokens for the CoT rationale")
    top_logprobs: int = Field(default=5, ge=2, le=20)
    missing_logprob: float | None = Field(
        default=None,
        description="Log-probability given to a verdict token absent from the top-k list. "
                    "Unset: the lowest log-probability in the returned list (the missing "
                    "token's cannot be higher), the least confident value the reply allows.")


class PairwiseRubric(BaseModel):
    """A pairwise judge as data.

    Example: ``load_rubric(default_rubric_path("pairwise"), PairwiseRubric, **PAIRWISE_FIELDS)``
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["pairwise"] = "pairwise"
    labels: tuple[str, str] = ("A", "B")
    system: str
    template: str = Field(description="Placeholders {prompt} {first} {second} {ending}")
    ending: str
    cot_request: str
    cot_ending: str
    reminder: str
    params: PairwiseParams = PairwiseParams()
    sha: str = Field(default="", description="Set on load: sha256 of the file, first 12 digits")


def load_rubric(path: str | Path, model: type[BaseModel], **placeholders: str) -> Any:
    """Read a rubric YAML file into ``model``; check its template renders with the placeholders."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        data = yaml.safe_load(raw)
    except (OSError, yaml.YAMLError) as exc:
        raise UserInputError(f"{path}: cannot read rubric: {exc}") from None
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: a rubric is a YAML mapping")
    try:
        rubric = model(**data, sha=hashlib.sha256(raw).hexdigest()[:12])
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserInputError(f"{path}: {where}: {first['msg']}") from None
    try:
        rubric.template.format(**placeholders)
    except (KeyError, IndexError, ValueError) as exc:
        raise UserInputError(f"{path}: template: unknown or malformed placeholder {exc}") from None
    return rubric


def default_rubric_path(kind: str) -> Path:
    """The rubric shipped for a judge kind ("pairwise" or "pointwise")."""
    return RUBRIC_DIR / f"{kind}.yaml"


# --- input rows -------------------------------------------------------------------------------


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
    if check_constraints and obj.get("constraints"):
        try:
            parse_constraints(obj["constraints"])
        except ValueError as exc:
            reason = str(exc).splitlines()[0]
            raise UserInputError(f"{where}: constraints cannot be read ({reason})") from None
    pair_id = obj.get("id")
    if pair_id is None:
        content = canonical_json([prompt, obj["response_a"], obj["response_b"]])
        pair_id = hashlib.sha256(content.encode()).hexdigest()[:16]
    return PairRow(where=where, id=str(pair_id), prompt=prompt, response_a=obj["response_a"],
                   response_b=obj["response_b"], human=human,
                   constraints=obj.get("constraints"), data=obj)


def read_pairs(
    path: str | Path, skip_bad: bool = False, check_constraints: bool = False
) -> tuple[list[PairRow], list[str]]:
    """Read a pairs JSONL file. Bad lines raise UserInputError, or are returned as messages
    (and left out) with ``skip_bad``."""
    path = Path(path)
    rows: list[PairRow] = []
    bad: list[str] = []
    # Line by line rather than read_objects: with skip_bad a bad line is kept as a message
    # and reading goes on (pair_row checks that the value is an object).
    for _, where, raw in numbered_lines(path, read_text(path)):
        try:
            rows.append(pair_row(parse_json(raw, where), where, check_constraints))
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


# --- quoting judged text as data --------------------------------------------------------------


def defuse(text: str, tags: Sequence[str]) -> str:
    """Escape every opening or closing form of the template's tags inside quoted text, so a
    response cannot close its quote and speak to the judge from outside it."""
    if not tags:
        return text
    pattern = re.compile(r"<(\s*/?\s*(?:" + "|".join(map(re.escape, tags)) + r")\b)", re.I)
    return pattern.sub(r"&lt;\1", text)


def template_tags(template: str) -> list[str]:
    """The tag names a template quotes data between (from its closing tags)."""
    return sorted(set(re.findall(r"</([A-Za-z_][\w-]*)>", template)))


def render_pair(
    rubric: PairwiseRubric, prompt: str, first: str, second: str, ending: str
) -> list[dict[str, str]]:
    """The judge's chat messages for one pair in one order."""
    tags = template_tags(rubric.template)
    user = rubric.template.format(
        prompt=defuse(prompt, tags), first=defuse(first, tags), second=defuse(second, tags),
        ending=ending)
    return [{"role": "system", "content": rubric.system}, {"role": "user", "content": user}]


# --- reading verdicts -------------------------------------------------------------------------


def parse_label(text: str, labels: Sequence[str]) -> str | None:
    """The verdict label in a reply ("A", " A.", "[[A]]", "**B**"), or None when there is not
    exactly one."""
    stripped = text.strip().strip("[]()*\"'`.:! \n")
    if stripped in labels:
        return stripped
    found = {lab for lab in labels if re.search(r"\[\[\s*" + re.escape(lab) + r"\s*\]\]", text)}
    return found.pop() if len(found) == 1 else None


def token_logprob(top: dict[str, float], label: str) -> float | None:
    """Log-probability of a label summed over its spellings in top-k (" A", "A", "A\\n")."""
    values = [lp for tok, lp in top.items() if tok.strip() == label]
    if not values:
        return None
    peak = max(values)
    return peak + math.log(sum(math.exp(v - peak) for v in values))


def first_probability(
    top: dict[str, float], labels: Sequence[str], missing_logprob: float | None
) -> tuple[float | None, list[str]]:
    """P(first) from top-k log-probs, softmax over the two verdict tokens only.

    A verdict token absent from top-k gets ``missing_logprob`` (default: the lowest
    log-probability in the list) and the reply is flagged ``missing_token:<label>``.
    Returns (None, flags) when neither token is present.
    """
    lps = [token_logprob(top, lab) for lab in labels]
    if all(lp is None for lp in lps):
        return None, []
    floor = missing_logprob if missing_logprob is not None else min(top.values())
    flags = [f"missing_token:{lab}" for lab, lp in zip(labels, lps, strict=True) if lp is None]
    first, second = (floor if lp is None else lp for lp in lps)
    if first == second:  # equal, or both -inf
        return 0.5, flags
    return sigmoid(first - second), flags


def sigmoid(x: float) -> float:
    """1 / (1 + e^-x) without overflow for large |x|."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def preferred_from_p(p_a: float, tie_margin: float) -> Preferred:
    """The hard label of a soft one: a or b when p_a is more than tie_margin from 0.5, else tie."""
    if p_a - 0.5 > tie_margin:
        return "a"
    if 0.5 - p_a > tie_margin:
        return "b"
    return "tie"


# --- judge results and the panel --------------------------------------------------------------


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


# --- the LLM pairwise judge -------------------------------------------------------------------


async def ask_all(client: LLMClient, bodies: list[dict[str, Any]]) -> list[Completion]:
    """Send chat bodies through the ledger in one sweep (one lookup, one pending commit);
    identical bodies are sent once."""
    keys = [request_key(CHAT_PATH, body) for body in bodies]
    unique = dict(zip(keys, bodies, strict=True))
    lines = [BatchLine(line_no=i, custom_id=key, path=CHAT_PATH, body=body, key=key)
             for i, (key, body) in enumerate(unique.items())]
    answers = dict(zip(unique, await run_batch(client, lines), strict=True)) if lines else {}
    return [answers[key] for key in keys]


def chat_body(model: str | None, messages: list[dict[str, str]], **params: Any) -> dict[str, Any]:
    """A chat completion body without unset fields, keyed as LLMClient.call keys it."""
    body = {"model": model, "messages": messages, **params}
    return {k: v for k, v in body.items() if v is not None}


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


# --- the verifier as a panel member -------------------------------------------------------------


def judge_verify(rows: list[PairRow], name: str = "verify") -> list[JudgeResult]:
    """Label pairs by checking their constraints (``judges.verify``); no model call. A pair
    without constraints is "error"."""
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
