"""The outcome of one model request, and how to read text and log-probabilities from it.

A ``Completion`` is what every generator and judge gets back from the client, whether the
answer came from the endpoint, a hosted batch or the ledger: the response body in OpenAI's
shape, or the error that ended its attempts (with the upstream error body kept as sent), plus
usage, cost and the request id the endpoint gave. Its accessors read the chat format and the
legacy completions format alike, so judges need not care which endpoint answered.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from datagen.endpoint.keys import canonical_json


class Completion(BaseModel):
    """The outcome of one request: a response body, or the error that ended its attempts."""

    key: str
    status: Literal["ok", "failed", "skipped"]
    status_code: int | None = None
    body: dict[str, Any] | None = None
    error: str | None = None
    attempts: int = 0
    from_ledger: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float | None = None
    request_id: str | None = Field(default=None, description="The endpoint's x-request-id")
    error_body: Any = Field(default=None, description="An error reply's body, verbatim")
    error_code: str | None = Field(
        default=None, description="Why no response came back (batch_expired, budget_exhausted)")
    via: Literal["online", "batch"] = "online"
    batch_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def texts(self) -> list[str]:
        """The text of every choice (chat message content or completion text)."""
        out = []
        for choice in (self.body or {}).get("choices", []):
            if "message" in choice:
                out.append((choice["message"] or {}).get("content") or "")
            else:
                out.append(choice.get("text") or "")
        return out

    @property
    def text(self) -> str:
        """The first choice's text ("" when there is none)."""
        texts = self.texts
        return texts[0] if texts else ""

    @property
    def finish_reason(self) -> str | None:
        choices = (self.body or {}).get("choices") or [{}]
        return choices[0].get("finish_reason")

    def token_logprobs(self, choice: int = 0) -> list[dict[str, Any]]:
        """Chat-format per-token logprob records ({token, logprob, top_logprobs}) of a choice."""
        choices = (self.body or {}).get("choices") or []
        if choice >= len(choices):
            return []
        logprobs = choices[choice].get("logprobs") or {}
        if "content" in logprobs:
            return logprobs.get("content") or []
        # completions format: tokens, token_logprobs, top_logprobs (list of dicts)
        tokens = logprobs.get("tokens") or []
        lps = logprobs.get("token_logprobs") or []
        tops = logprobs.get("top_logprobs") or [None] * len(tokens)
        return [
            {
                "token": t,
                "logprob": lp,
                "top_logprobs": [{"token": k, "logprob": v} for k, v in (top or {}).items()],
            }
            for t, lp, top in zip(tokens, lps, tops, strict=False)
        ]

    def top_logprobs(self, position: int = 0, choice: int = 0) -> dict[str, float]:
        """{token: logprob} of the alternatives at one generated position."""
        records = self.token_logprobs(choice)
        if position >= len(records):
            return {}
        return {t["token"]: t["logprob"] for t in records[position].get("top_logprobs") or []}


def finish_row(result: Completion, endpoint: str) -> dict[str, Any]:
    """The ledger update for a finished request (an error reply's body goes in ``response``)."""
    response = result.body if result.ok else result.error_body
    return {
        "key": result.key, "status": result.status, "status_code": result.status_code,
        "response": canonical_json(response) if response is not None else None,
        "error": result.error, "attempts": result.attempts, "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens, "cost_usd": result.cost_usd,
        "latency_ms": result.latency_ms, "endpoint": endpoint, "via": result.via,
        "batch_id": result.batch_id, "request_id": result.request_id,
    }
