"""Asking a judge model and reading its verdict, for every LLM judge.

Judge requests go through the request ledger in one sweep (``ask_all``, the client's
``call_many``), so a rerun answers from the ledger whatever an earlier run paid for. A verdict
is read from the reply text ("A", "[[A]]", "**B**") or, for a soft label, from the
log-probabilities of the verdict tokens renormalised over just those tokens;
``preferred_from_p`` turns a soft label p_a into "a", "b" or "tie" (MT-Bench, Zheng et al.
2023, arXiv 2306.05685; RLAIF, Lee et al. 2023, arXiv 2309.00267).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, Literal

from datagen.endpoint.client import CHAT_PATH, LLMClient, Request
from datagen.endpoint.completion import Completion

Preferred = Literal["a", "b", "tie", "error"]


# --- asking -----------------------------------------------------------------------------------


async def ask_all(client: LLMClient, bodies: list[dict[str, Any]]) -> list[Completion]:
    """Send chat bodies through the ledger in one sweep (``LLMClient.call_many``: one lookup,
    one pending commit); identical bodies are sent once."""
    return await client.call_many([Request(CHAT_PATH, body) for body in bodies])


def chat_body(model: str | None, messages: list[dict[str, str]], **params: Any) -> dict[str, Any]:
    """A chat completion body without unset fields, keyed as LLMClient.call keys it."""
    body = {"model": model, "messages": messages, **params}
    return {k: v for k, v in body.items() if v is not None}


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
