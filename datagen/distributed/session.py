"""Joining a Ray cluster for the length of one command, and leaving it as it was.

A command may use the cluster twice (its requests through ``RayClient`` and a CPU-only stage
through ``map_blocks``); ``ray_session`` connects once, to ``--ray-address`` (or
``$RAY_ADDRESS``, else a local one-node cluster), and disconnects only if it was the one that
connected, so a nested use shares the outer one's connection. Ray is imported here, when a
cluster is used, never at import time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from datagen.errors import UserInputError

TASK_RETRIES = 3  # how often Ray runs a task again after its worker or node died


@contextmanager
def ray_session(address: str | None) -> Iterator[Any]:
    """Yield the ``ray`` module, connected to the cluster at ``address``."""
    try:
        import ray
    except ImportError:
        raise UserInputError("--executor ray: Ray is not installed "
                             "(pip install 'rlaif[cluster]')") from None
    started = False
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise UserInputError(f"--ray-address {address}: {exc}") from None
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()
