"""The hosted Files and Batches endpoints (OpenAI's Batch API), over httpx.

Five calls make a hosted batch: upload the input file (``POST /v1/files``, multipart, purpose
``batch``), create the batch (``POST /v1/batches``), retrieve it until it is terminal, download
its output and error files (``GET /v1/files/{id}/content``), and cancel it. Every object the
API returns is validated with the ``openai`` package's own types (``FileObject``, ``Batch``),
so a reply in the wrong shape is caught here, not deep in the ingestion. Transient faults (429,
5xx, timeouts, broken connections) are retried with backoff; an upload or a create that may have
reached the API before failing is first looked up (by file name, by the job named in the
batch's metadata) before it is sent again, because a second batch is paid for twice.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from openai.types import Batch, FileObject
from pydantic import ValidationError

from datagen.endpoint._httpx import HttpxPool, Reply
from datagen.endpoint.replies import (
    RETRY_STATUSES,
    error_body,
    error_message,
    retry_after_seconds,
)
from datagen.errors import HostedBatchError

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
JOB_KEY = "rlaif_job"


class BatchAPI:
    """Files and Batches calls against one OpenAI-style base URL."""

    def __init__(self, base_url: str, headers: dict[str, str], *, timeout: float,
                 max_retries: int, backoff: tuple[float, float]) -> None:
        self._pool = HttpxPool(base_url, 8)
        self._headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        self._timeout = min(timeout, 600.0)
        self._max_retries = max_retries
        self._backoff = backoff

    async def aclose(self) -> None:
        """Close the connections."""
        await self._pool.aclose()

    async def _call(self, send: Callable[[], Awaitable[Reply]], what: str,
                    before_retry: Callable[[], Awaitable[Any]] | None = None,
                    decode: Callable[[bytes], Any] = orjson.loads) -> Any:
        """One call's decoded reply, retrying transient faults; ``before_retry`` may return a
        result that makes the retry unnecessary (the upload or batch turned out to exist)."""
        attempt = 0
        while True:
            attempt += 1
            retry_after = None
            try:
                status, headers, raw = await send()
            except (TimeoutError, OSError) as exc:
                problem = f"{what}: {type(exc).__name__}: {exc}"
            else:
                if status == 200:
                    try:
                        return decode(raw)
                    except orjson.JSONDecodeError:
                        problem = f"{what}: malformed reply"
                else:
                    problem = f"{what}: {error_message(error_body(raw), status)}"
                    if status not in RETRY_STATUSES:
                        raise HostedBatchError(problem)
                    retry_after = retry_after_seconds(headers.get("retry-after"))
            if attempt > self._max_retries:
                raise HostedBatchError(problem)
            base, ceiling = self._backoff
            await asyncio.sleep(retry_after if retry_after is not None else random.uniform(
                0, min(ceiling, base * 2 ** (attempt - 1))))
            if before_retry is not None:
                found = await before_retry()
                if found is not None:
                    return found

    async def upload(self, filename: str, content: bytes) -> FileObject:
        """Upload a batch input file (or find it, when a failed try had reached the API)."""
        async def find() -> dict[str, Any] | None:
            found = await self.find_file(filename)
            return found.model_dump() if found else None

        data = await self._call(lambda: self._pool.upload(
            "/files", {"purpose": "batch"}, filename, content, self._headers, self._timeout),
            "upload", find)
        return _validated(FileObject, data, "upload")

    async def find_file(self, filename: str) -> FileObject | None:
        """The uploaded batch input file of this name, if the API has it."""
        data = await self._call(lambda: self._pool.get(
            "/files?purpose=batch&limit=10000", self._headers, self._timeout), "list files")
        for item in data.get("data") or []:
            if item.get("filename") == filename and item.get("status") != "error":
                return _validated(FileObject, item, "list files")
        return None

    async def create(self, input_file_id: str, endpoint: str, window: str, job: str,
                     metadata: dict[str, str]) -> Batch:
        """Create the batch for ``job`` (or find it, when a failed try had created it)."""
        body = orjson.dumps({"input_file_id": input_file_id, "endpoint": endpoint,
                             "completion_window": window, "metadata": {**metadata, JOB_KEY: job}})

        async def find() -> dict[str, Any] | None:
            found = await self.find_batch(job)
            return found.model_dump() if found else None

        headers = {**self._headers, "Content-Type": "application/json"}
        data = await self._call(lambda: self._pool.post("/batches", body, headers, self._timeout),
                                "create batch", find)
        return _validated(Batch, data, "create batch")

    async def find_batch(self, job: str, pages: int = 20) -> Batch | None:
        """The batch created for ``job``, if the API has one (newest pages first)."""
        after = ""
        for _ in range(pages):
            query = "/batches?limit=100" + (f"&after={after}" if after else "")
            data = await self._call(
                lambda q=query: self._pool.get(q, self._headers, self._timeout), "list batches")
            for item in data.get("data") or []:
                if (item.get("metadata") or {}).get(JOB_KEY) == job:
                    return _validated(Batch, item, "list batches")
            if not data.get("has_more") or not data.get("data"):
                return None
            after = data["data"][-1]["id"]
        return None

    async def retrieve(self, batch_id: str) -> Batch:
        """The batch's current state and request counts."""
        data = await self._call(lambda: self._pool.get(
            f"/batches/{batch_id}", self._headers, self._timeout), "retrieve batch")
        return _validated(Batch, data, "retrieve batch")

    async def cancel(self, batch_id: str) -> Batch:
        """Ask the API to cancel the batch (it passes through ``cancelling``)."""
        data = await self._call(lambda: self._pool.post(
            f"/batches/{batch_id}/cancel", b"", self._headers, self._timeout), "cancel batch")
        return _validated(Batch, data, "cancel batch")

    async def content(self, file_id: str) -> bytes:
        """The bytes of an output or error file."""
        return await self._call(lambda: self._pool.get(
            f"/files/{file_id}/content", self._headers, self._timeout), "download file",
            decode=bytes)


def _validated(kind: type[Batch] | type[FileObject], data: Any, what: str) -> Any:
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        raise HostedBatchError(f"{what}: reply is not a {kind.__name__}: "
                            f"{exc.errors()[0]['msg']}") from None
