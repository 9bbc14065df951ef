"""`--executor ray`: a command's requests answered by the nodes of a Ray cluster.

``RayClient`` has the surface of ``LLMClient`` that the bulk commands use (``call_many``,
``call``, ``chat``, ``stats``, ``budget_exhausted``), so `rlaif batch`, `rlaif label` and
`rlaif generate responses` run unchanged on top of it. The driver cuts the requests into shards
by ledger key (``datagen.distributed.shards``), runs one Ray task per shard spread over the
nodes (``datagen.distributed.worker``), and keeps one ``Limits`` actor holding the global
requests and tokens buckets and the budget, which every worker's client waits on. Every request
still goes through the one shared ledger (PostgreSQL across machines; SQLite on a single node),
so a task that Ray retries after its node died pays again only for what had not been answered.
``stats`` is live while requests are answered: running shards report their counters to a
``ProgressBoard`` actor (``datagen.distributed.progress``) that the driver reads while it
waits, so a command's progress display (``datagen.progress``), which polls ``client.stats``
as it does for the local client, moves with every node's answers. Ray is imported when a
cluster is used, never at import time (``datagen.distributed.session``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

from datagen.distributed.progress import REPORT_SECONDS, ProgressBoard, add_stats
from datagen.distributed.session import TASK_RETRIES, ray_session
from datagen.distributed.shards import shard_count, split
from datagen.distributed.worker import answer_shard
from datagen.endpoint.client import CHAT_PATH, ClientConfig, Request, Stats
from datagen.endpoint.completion import Completion
from datagen.endpoint.limits import Limits

# Large shards: a task costs a worker start, a ledger lookup and a connection pool, and progress
# comes from running shards anyway (measured: 256 per shard ran at 0.24x the local executor on
# 10,000 requests, bench/ray_executor.py). Two shards per node at least keep every node busy.
REQUESTS_PER_SHARD = 4096


class RayClient:
    """Answer requests on a Ray cluster. Use as ``async with RayClient(...) as client``."""

    def __init__(
        self, config: ClientConfig, db: str | None, *, address: str | None = None,
        api_key_env: str | None = None, endpoint_per_node: str | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.address = address
        self.api_key_env = api_key_env
        self.endpoint_per_node = endpoint_per_node
        self.finished = Stats()  # exact counts of the shards that came back
        self.running: dict[str, dict[str, Any]] = {}  # latest report of each running shard
        self.served_by: dict[str, int] = {}
        self._ray: Any = None
        self._limits: Any = None
        self._board: Any = None
        self._calls = 0
        self._session = ExitStack()

    async def __aenter__(self) -> RayClient:
        ray = self._ray = self._session.enter_context(ray_session(self.address))
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # The shared limits and the progress board live on the driver's own node: if they
        # lived on a worker node, that node's death would take the cluster's rate limits and
        # budget with it.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        actor = ray.remote(Limits).options(max_concurrency=1000, num_cpus=0,
                                           scheduling_strategy=here)
        self._limits = actor.remote(self.config.rpm, self.config.tpm, self.config.budget_usd)
        self._board = ray.remote(ProgressBoard).options(num_cpus=0,
                                                        scheduling_strategy=here).remote()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._session.close()

    @property
    def stats(self) -> Stats:
        """Counts so far: finished shards exactly, running ones as last reported."""
        total = self.finished
        for counts in self.running.values():
            total = add_stats(total, counts)
        return total

    @property
    def budget_exhausted(self) -> bool:
        return self.stats.skipped > 0

    async def call_many(self, requests: Sequence[Request]) -> list[Completion]:
        """Answer every request through the shared ledger, spread over the cluster's nodes."""
        self.finished.scheduled += len(requests)  # the workers' own counts leave it out
        ray = self._ray
        nodes = max(1, len([n for n in ray.nodes() if n.get("Alive")]))
        shards = split(list(requests), shard_count(len(requests), nodes, REQUESTS_PER_SHARD))
        task = ray.remote(answer_shard).options(
            max_retries=TASK_RETRIES, scheduling_strategy="SPREAD", num_cpus=1)
        settings = self.config.model_dump(exclude={"api_key"})
        self._calls += 1
        names = {}
        for number, shard in enumerate(shards):
            name = f"{self._calls}:{number}"
            names[task.remote(settings, self.api_key_env, self.endpoint_per_node, self.db,
                              shard, self._limits, self._board, name)] = name
        pending = list(names)
        answers: list[Completion | None] = [None] * len(requests)
        while pending:
            done, pending = await asyncio.to_thread(
                ray.wait, pending, num_returns=1, timeout=REPORT_SECONDS)
            for ref in done:
                for position, fields, node in await asyncio.to_thread(ray.get, ref):
                    answers[position] = self._count(Completion(**fields), node)
                self.running.pop(names[ref], None)
            running = [names[ref] for ref in pending]
            reports = await asyncio.to_thread(ray.get, self._board.read.remote(running))
            self.running.update({name: reports[name] | {"scheduled": 0}
                                 for name in running if name in reports})
        return answers  # type: ignore[return-value]

    async def call(self, path: str, body: dict[str, Any], *, sample_index: int = 0,
                   known: dict[str, Any] | None = None) -> Completion:
        """One request, as ``LLMClient.call`` (a task of its own: prefer ``call_many``)."""
        return (await self.call_many([Request(path, body, sample_index)]))[0]

    async def chat(self, messages: list[dict[str, Any]], *, model: str | None = None,
                   sample_index: int = 0, **params: Any) -> Completion:
        body = {"model": model or self.config.model, "messages": messages, **params}
        return await self.call(CHAT_PATH, body, sample_index=sample_index)

    def _count(self, answer: Completion, node: str) -> Completion:
        stats = self.finished
        stats.ok += answer.status == "ok"
        stats.failed += answer.status == "failed"
        stats.skipped += answer.status == "skipped"
        stats.from_ledger += answer.from_ledger
        stats.sent += answer.attempts if not answer.from_ledger else 0
        stats.prompt_tokens += answer.prompt_tokens
        stats.completion_tokens += answer.completion_tokens
        stats.cost_usd += answer.cost_usd
        if not answer.from_ledger and answer.status != "skipped":
            self.served_by[node] = self.served_by.get(node, 0) + 1
        return answer
