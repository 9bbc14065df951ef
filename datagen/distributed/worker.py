"""What one Ray task does with one shard: the ordinary client, on its node's endpoint.

The task rebuilds the client from plain settings: the API key is read from the worker node's
own environment (the variable named by ``--api-key-env``), never shipped through Ray's object
store; the endpoint is the shared ``--base-url`` or the node's own (``--endpoint-per-node``,
with ``${VAR}`` taken from the node's environment, so each node's local vLLM or `rlaif serve`
takes that node's share); the rate limits and budget are the cluster's shared ``Limits`` actor.
Answers go through the shared ledger first, so a task retried elsewhere after its node died
re-asks only what was never answered.
"""

from __future__ import annotations

import asyncio
import os
import string
from typing import Any

from pydantic import SecretStr

from datagen import store
from datagen.distributed.progress import report_while_running
from datagen.endpoint.client import ClientConfig, LLMClient, Request, run_async
from datagen.endpoint.completion import Completion


class SharedLimits:
    """The client's view of the cluster's ``Limits`` actor (same methods as ``Limits``).

    Only the limits that were set cost a call to the actor: without ``--rpm``/``--tpm`` nothing
    is asked before a request, and without ``--budget-usd`` nothing is charged. (An actor call
    per request cut a one-node cluster to 0.23x the local executor in bench/ray_executor.py.)
    """

    def __init__(self, actor: Any, *, rates: bool, counts_tokens: bool, budget: bool) -> None:
        self.actor = actor
        self.rates = rates
        self.counts_tokens = counts_tokens
        self.budget = budget

    async def acquire(self, tokens: int) -> None:
        if self.rates:
            await self.actor.acquire.remote(tokens)

    def release(self, tokens: int) -> None:
        if tokens and self.counts_tokens:
            self.actor.release.remote(tokens)

    def charge(self, usd: float) -> None:
        if usd and self.budget:
            self.actor.charge.remote(usd)

    async def over_budget(self) -> bool:
        return self.budget and await self.actor.over_budget.remote()


def node_endpoint(template: str) -> str:
    """The endpoint URL on this node: ``${VAR}`` filled from the node's environment."""
    try:
        return string.Template(template).substitute(os.environ)
    except (KeyError, ValueError) as exc:
        raise RuntimeError(f"--endpoint-per-node {template!r}: this node has no {exc}") from None


def answer_shard(
    settings: dict[str, Any], api_key_env: str | None, endpoint_template: str | None,
    db: str | None, shard: list[tuple[int, Request]], limits_actor: Any,
    board: Any = None, shard_id: str = "",
) -> list[tuple[int, dict[str, Any], str]]:
    """Answer one shard; returns (position, completion as a dict, node address) per request.
    With ``board`` (a ``ProgressBoard`` actor), the client's counters are reported there as
    ``shard_id`` while the shard runs."""
    key = os.environ.get(api_key_env) if api_key_env else None
    base_url = node_endpoint(endpoint_template) if endpoint_template else settings["base_url"]
    config = ClientConfig(**{**settings, "base_url": base_url,
                             "api_key": SecretStr(key) if key else None})
    limits = SharedLimits(limits_actor, rates=bool(config.rpm or config.tpm),
                          counts_tokens=config.tpm is not None,
                          budget=config.budget_usd is not None)
    node = os.environ.get("RLAIF_NODE_NAME") or base_url

    async def go() -> list[Completion]:
        database = store.open_db(db) if db else None
        async with LLMClient(config, database, limits=limits) as client:
            reporter = asyncio.create_task(report_while_running(board, shard_id, client.stats)
                                           ) if board is not None else None
            try:
                return await client.call_many([request for _, request in shard])
            finally:
                if reporter is not None:
                    reporter.cancel()

    answers = run_async(go())
    return [(position, answer.model_dump(), node)
            for (position, _), answer in zip(shard, answers, strict=True)]
