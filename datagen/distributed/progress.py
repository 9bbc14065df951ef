"""Live counts from every worker of a cluster run, for the one progress bar on the driver.

A shard's task reports its client's counters (``Stats``) to one ``ProgressBoard`` actor on the
driver's node every ``REPORT_SECONDS``; the driver reads the board while it waits for shards and
adds the reports of shards still running to the exact counts of those that finished, so
``RayClient.stats`` moves as requests are answered anywhere in the cluster, not only when a
whole shard comes back. A report replaces the shard's previous one, so a shard that Ray runs
again after its node died counts once (the retry starts from what the ledger already holds).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, fields
from typing import Any

from datagen.endpoint.client import Stats

REPORT_SECONDS = 0.5


class ProgressBoard:
    """The latest counters of each running shard (a Ray actor)."""

    def __init__(self) -> None:
        self.reports: dict[str, dict[str, Any]] = {}

    def report(self, shard: str, counts: dict[str, Any]) -> None:
        self.reports[shard] = counts

    def read(self, shards: list[str]) -> dict[str, dict[str, Any]]:
        return {shard: self.reports[shard] for shard in shards if shard in self.reports}


async def report_while_running(board: Any, shard: str, stats: Stats) -> None:
    """Send ``stats`` to the board every ``REPORT_SECONDS`` until cancelled."""
    while True:
        await asyncio.sleep(REPORT_SECONDS)
        board.report.remote(shard, asdict(stats))


def add_stats(total: Stats, more: Stats | dict[str, Any]) -> Stats:
    """``total`` plus ``more``, field by field (a new Stats)."""
    other = more if isinstance(more, dict) else asdict(more)
    return Stats(**{f.name: getattr(total, f.name) + other.get(f.name, 0)
                    for f in fields(Stats)})
