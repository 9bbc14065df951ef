"""How a command's requests are cut into shards for the workers of a cluster.

A request's shard is a function of its ledger key alone, so a rerun (after a crash, or with
more answers already in the ledger) cuts the same requests into the same shards, and a shard
retried on another node asks the ledger about exactly the requests it asked about before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from datagen.endpoint.client import Request
from datagen.endpoint.keys import canonical_bytes, payload_key


def request_key(request: Request) -> str:
    """The ledger key the client will give this request (same body cleaning as the client)."""
    body = {k: v for k, v in request.body.items() if v is not None}
    return payload_key(request.path, canonical_bytes(body), request.sample_index)


def shard_count(requests: int, nodes: int, per_shard: int = 256) -> int:
    """Enough shards to spread over every node and to show progress as shards finish."""
    return max(1, min(requests, max(2 * nodes, -(-requests // per_shard))))


def split(requests: Sequence[Request], shards: int) -> list[list[tuple[int, Request]]]:
    """(position, request) pairs per shard; a request's shard depends only on its key."""
    out: list[list[tuple[int, Any]]] = [[] for _ in range(shards)]
    for position, request in enumerate(requests):
        out[int(request_key(request)[:12], 16) % shards].append((position, request))
    return [shard for shard in out if shard]
