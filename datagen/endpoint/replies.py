"""How an endpoint's replies are read: which bodies are answers, what usage they report, which
failures are worth another try and how long to wait before it.

Online calls (``client.py``) and hosted batches (``hosted.py``) read the same replies: a chat or
completions body has ``choices``, an embeddings body ``data``, a Responses API body ``output``;
usage comes as ``prompt_tokens``/``completion_tokens`` or ``input_tokens``/``output_tokens``.
An upstream error body is kept as the endpoint sent it (the hosted Batch API does the same in
its output files), and also summarised in one line for logs and the ledger's ``error`` column.
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 522, 524})

# The list field every successful body of an endpoint path carries.
ANSWER_FIELD = {
    "/chat/completions": "choices",
    "/completions": "choices",
    "/embeddings": "data",
    "/responses": "output",
}


def parse_answer(raw: bytes, path: str) -> dict[str, Any] | None:
    """The JSON body of a successful reply to ``path``, or None when it is malformed."""
    try:
        return answer_or_none(orjson.loads(raw), path)
    except orjson.JSONDecodeError:
        return None


def answer_or_none(data: Any, path: str) -> dict[str, Any] | None:
    """``data`` when it is a successful body for ``path`` (an object with its answer list)."""
    if not isinstance(data, dict) or not isinstance(data.get(ANSWER_FIELD[path]), list):
        return None
    return data


def error_body(raw: bytes) -> Any:
    """An error reply's body as the endpoint sent it: its JSON value, else its text."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")


def error_message(body: Any, status: int) -> str:
    """One line for an error reply: ``HTTP 400: <the error's message>``."""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict) and err.get("message"):
        return f"HTTP {status}: {err['message']}"
    if isinstance(err, str):
        return f"HTTP {status}: {err}"
    text = body if isinstance(body, str) else orjson.dumps(body).decode()
    return f"HTTP {status}: {text[:200]}"


def usage_tokens(body: dict[str, Any]) -> tuple[int, int]:
    """(input, output) tokens a successful body reports (either naming scheme)."""
    usage = body.get("usage") or {}
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    return int(prompt or 0), int(completion or 0)


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (a number or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
