"""CPU-only stages on a Ray cluster: a pure function over blocks of rows, results in order.

Some stages send no request but check or render many rows: the constraint verifier behind
`rlaif label --judge verify` and `rlaif eval constraints`, IFEval scoring (`rlaif eval ifeval
--responses`), FLAN rendering and `rlaif generate constrained`. ``map_blocks`` cuts the rows
into contiguous blocks, runs the function on each block as a Ray task spread over the nodes,
and puts the results back in input order, so the output is the local executor's byte for
byte. The function must be pure (a module-level function or a ``functools.partial`` of one,
returning one result per row): Ray runs a block again on another node when its node dies, and
a pure function gives the same answer the second time. ``block_mapper`` hands a command the
mapper its ``--executor`` chose: the function applied in this process, or ``map_blocks`` on
the cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from datagen.distributed.session import TASK_RETRIES, ray_session
from datagen.distributed.shards import shard_count

BLOCK_SIZE = 512  # rows per block: large enough that a task's overhead (ms) is small beside it
BlockFn = Callable[[list[Any]], list[Any]]
Mapper = Callable[[BlockFn, Sequence[Any]], list[Any]]


def map_local(fn: BlockFn, items: Sequence[Any]) -> list[Any]:
    """The function over all the rows at once, in this process."""
    return _checked(fn(list(items)), len(items))


def map_blocks(fn: BlockFn, items: Sequence[Any], block_size: int = BLOCK_SIZE) -> list[Any]:
    """The function over contiguous blocks of rows as Ray tasks; results in input order.

    Needs a connected Ray (``ray_session``). An exception the function raises reaches the
    caller as itself (a ``UserInputError`` stays one line)."""
    import ray

    items = list(items)
    if not items:
        return []
    nodes = max(1, len([n for n in ray.nodes() if n.get("Alive")]))
    size = -(-len(items) // shard_count(len(items), nodes, block_size))
    task = ray.remote(_apply).options(max_retries=TASK_RETRIES, scheduling_strategy="SPREAD",
                                      num_cpus=1)
    function = ray.put(fn)
    refs = [task.remote(function, items[i:i + size]) for i in range(0, len(items), size)]
    try:
        blocks = ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        raise exc.cause from None
    out = [result for block in blocks for result in block]
    return _checked(out, len(items))


def _apply(fn: BlockFn, block: list[Any]) -> list[Any]:
    return list(fn(block))


def _checked(results: Sequence[Any], expected: int) -> list[Any]:
    if len(results) != expected:
        raise ValueError(f"a block function returned {len(results)} results for {expected} rows")
    return list(results)


@contextmanager
def block_mapper(executor: str | None, address: str | None = None) -> Iterator[Mapper]:
    """The mapper for ``--executor``: ``map_local``, or ``map_blocks`` on the cluster at
    ``address`` (joined for the length of the ``with`` block)."""
    if executor != "ray":
        yield map_local
        return
    with ray_session(address):
        yield map_blocks
