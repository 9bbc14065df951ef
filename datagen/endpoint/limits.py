"""Rate limits and prices: the token buckets the client waits on, and what a request costs.

Providers limit requests and tokens per minute; the client takes from a requests bucket and a
tokens bucket (estimated before sending, corrected with the reported usage after) shared by
every task of the process, and stops scheduling once the spending cap is reached. ``Limits``
holds the buckets and the money spent; on a Ray cluster one ``Limits`` lives in an actor and
every worker's client waits on it (``datagen.distributed``), so the limits are global. Cost is
priced from a table of dollars per million input and output tokens, which users override for
their own models and contracts.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from datagen.endpoint.keys import canonical_json

Prices = dict[str, tuple[float, float] | tuple[float, float, float, float]]

# US dollars per million (input, output, batch input, batch output) tokens; the longest
# matching prefix wins. Hosted Batch APIs charge half the online price for these models.
# Local models cost nothing. Override with ClientConfig.prices or `--prices FILE`, whose
# entries give [input, output] (batch prices then default to half) or all four.
DEFAULT_PRICES: Prices = {
    "gpt-4o-mini": (0.15, 0.60, 0.075, 0.30),
    "gpt-4o": (2.50, 10.00, 1.25, 5.00),
    "gpt-4.1-nano": (0.10, 0.40, 0.05, 0.20),
    "gpt-4.1-mini": (0.40, 1.60, 0.20, 0.80),
    "gpt-4.1": (2.00, 8.00, 1.00, 4.00),
    "gpt-5-nano": (0.05, 0.40, 0.025, 0.20),
    "gpt-5-mini": (0.25, 2.00, 0.125, 1.00),
    "gpt-5": (1.25, 10.00, 0.625, 5.00),
    "o4-mini": (1.10, 4.40, 0.55, 2.20),
    "gpt-3.5-turbo": (0.50, 1.50, 0.25, 0.75),
}


def price_for(model: str | None, prices: Prices, batch: bool = False) -> tuple[float, float]:
    """(input, output) dollars per million tokens for a model, online or in a hosted batch."""
    if not model:
        return (0.0, 0.0)
    table = {**DEFAULT_PRICES, **prices}
    matches = [name for name in table if model == name or model.startswith(name + "-")]
    if not matches:
        return (0.0, 0.0)
    row = table[max(matches, key=len)]
    if not batch:
        return (row[0], row[1])
    return (row[2], row[3]) if len(row) == 4 else (row[0] / 2, row[1] / 2)


def cost_usd(model: str | None, prices: Prices, tokens: tuple[int, int],
             batch: bool = False) -> float:
    """What ``(input, output)`` tokens of a model cost, online or in a hosted batch."""
    price_in, price_out = price_for(model, prices, batch)
    return (tokens[0] * price_in + tokens[1] * price_out) / 1e6


def estimate_split(body: dict[str, Any]) -> tuple[int, int]:
    """A cheap upper-side guess of a request's (input, output) tokens."""
    prompt = body.get("messages") or body.get("prompt") or body.get("input") or ""
    out = (body.get("max_completion_tokens") or body.get("max_tokens")
           or body.get("max_output_tokens") or 256)
    return len(canonical_json(prompt)) // 4, int(out) * int(body.get("n") or 1)


def estimate_tokens(body: dict[str, Any]) -> int:
    """``estimate_split`` summed, for the tokens-per-minute bucket."""
    return sum(estimate_split(body))


class TokenBucket:
    """A refilling bucket that may go into debt, so one large request is never starved."""

    def __init__(self, per_minute: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, per_minute / 6.0)
        self.level = self.capacity
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    async def take(self, amount: float) -> None:
        while True:
            self._refill()
            if self.level >= min(amount, self.capacity):
                self.level -= amount
                return
            await asyncio.sleep(max(0.001, (min(amount, self.capacity) - self.level) / self.rate))

    def give_back(self, amount: float) -> None:
        self._refill()
        self.level = min(self.capacity, self.level + amount)


class Limits:
    """The requests and tokens buckets and the spending cap a client waits on.

    ``acquire`` before each attempt, ``release`` the unused part of the token estimate after,
    ``charge`` what a success cost; ``over_budget`` says whether to stop scheduling. The same
    object serves one process, or, inside a Ray actor, every worker of a cluster.
    """

    def __init__(
        self, rpm: float | None = None, tpm: float | None = None, budget_usd: float | None = None
    ) -> None:
        self.requests = TokenBucket(rpm) if rpm else None
        self.tokens = TokenBucket(tpm) if tpm else None
        self.budget_usd = budget_usd
        self.spent_usd = 0.0

    @property
    def counts_tokens(self) -> bool:
        return self.tokens is not None

    async def acquire(self, tokens: int) -> None:
        if self.requests:
            await self.requests.take(1)
        if self.tokens:
            await self.tokens.take(tokens)

    def release(self, tokens: int) -> None:
        if self.tokens and tokens:
            self.tokens.give_back(tokens)

    def charge(self, usd: float) -> None:
        self.spent_usd += usd

    async def over_budget(self) -> bool:
        return self.budget_usd is not None and self.spent_usd >= self.budget_usd
