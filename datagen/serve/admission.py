"""What ``rlaif serve`` lets in: size limits checked before work starts, and a token budget.

A request's cost is its rows times (prompt tokens + new tokens); one valid request used to be
able to ask for 128 x 8,000 tokens and stall everyone for minutes. ``Limits`` holds the bounds
(body bytes, tokens per request, tokens in flight, timeouts); ``TokenGate`` admits requests
while the tokens in flight stay within the budget and queues the rest first come, first
served (small requests that fit pass a queued large one, so a judge's 1-token request never
waits for two large generations), so memory stays bounded however many clients connect.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

SMALL_SHARE = 16  # requests up to 1/16 of the in-flight budget never queue behind larger ones


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request and all requests together may cost.

    Example: ``Limits(max_request_tokens=16384, max_inflight_tokens=32768)``
    """

    max_body_bytes: int = 4 * 2**20
    max_request_tokens: int = 16_384
    max_inflight_tokens: int = 32_768
    idle_timeout_s: float = 30.0  # an idle connection is closed, a body must arrive, within this
    shutdown_grace_s: float = 5.0  # requests in flight may finish for this long on shutdown


class TokenGate:
    """An async, first-come-first-served budget of tokens in flight."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self, weight: int) -> None:
        """Wait until ``weight`` tokens fit in the budget, after everyone queued earlier; a
        small request (1/16 of the budget or less) that fits now passes a queued large one."""
        small = weight * SMALL_SHARE <= self.capacity
        if (small or not self._waiters) and self.used + weight <= self.capacity:
            self.used += weight
            return
        future = asyncio.get_running_loop().create_future()
        entry = (weight, future)
        self._waiters.append(entry)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # admitted just as the client left
                self.release(weight)
            else:
                self._waiters.remove(entry)
                self._wake()
            raise

    def release(self, weight: int) -> None:
        self.used -= weight
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.used + self._waiters[0][0] <= self.capacity:
            weight, future = self._waiters.popleft()
            if not future.done():
                self.used += weight
                future.set_result(None)
