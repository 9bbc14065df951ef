"""The server's admission rules on their own: max-min fair slots and the in-flight token gate."""

from __future__ import annotations

import asyncio

import pytest

from datagen.serve.admission import TokenGate
from datagen.serve.batcher import fair_shares


@pytest.mark.parametrize(("demand", "capacity", "expected"), [
    ({1: 16, 2: 1}, 16, {1: 15, 2: 1}),  # a 1-row request gets its slot next to 16 rows
    ({1: 16, 2: 16}, 16, {1: 8, 2: 8}),
    ({1: 3, 2: 2}, 16, {1: 3, 2: 2}),  # everyone fits: everyone gets everything
    ({1: 1, 2: 1, 3: 1}, 2, {1: 1, 2: 1, 3: 0}),  # more jobs than slots: first come first
    ({1: 128, 2: 5, 3: 1}, 8, {1: 4, 2: 3, 3: 1}),
])
def test_fair_shares(demand, capacity, expected):
    shares = fair_shares(demand, capacity)
    assert shares == expected and sum(shares.values()) <= capacity


def test_gate_queues_in_order_and_lets_small_requests_pass():
    async def scenario() -> list[str]:
        gate, order = TokenGate(1600), []

        async def request(name: str, weight: int, hold: float) -> None:
            await gate.acquire(weight)
            order.append(name)
            assert gate.used <= gate.capacity
            await asyncio.sleep(hold)
            gate.release(weight)

        first = asyncio.create_task(request("large-1", 1000, 0.05))
        await asyncio.sleep(0)
        queued = asyncio.create_task(request("large-2", 1000, 0.0))
        await asyncio.sleep(0)
        assert gate.waiting == 1
        await request("small", 100, 0.0)  # 100 <= 1600 / 16: passes large-2
        await asyncio.gather(first, queued)
        assert gate.used == 0 and gate.waiting == 0
        return order

    assert asyncio.run(scenario()) == ["large-1", "small", "large-2"]


def test_gate_forgets_a_waiter_whose_client_left():
    async def scenario() -> None:
        gate = TokenGate(1000)
        await gate.acquire(900)
        waiter = asyncio.create_task(gate.acquire(500))
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert gate.waiting == 0
        gate.release(900)
        assert gate.used == 0

    asyncio.run(scenario())
