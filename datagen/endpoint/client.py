"""The endpoint client: the only module that speaks HTTP to a model.

It sends OpenAI-compatible ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``
and ``/v1/responses`` requests with a concurrency limit, requests- and tokens-per-minute token
buckets, retries with exponential backoff and jitter (honouring ``Retry-After``), usage and
cost accounting and a spending cap. Every request goes through the ledger in the project
database when one is given: a row is committed as ``pending`` before the request is sent and
completed with the response after, so a rerun answers finished requests from the database and
never pays twice.

Plain-http endpoints go through a small asyncio HTTP/1.1 transport of our own
(`datagen/endpoint/_http.py`), not httpx, aiohttp or the openai SDK: on a 2-core machine those
spend 0.15-8 ms of CPU per request and cannot keep 256 requests in flight at an endpoint's
speed (README, "Client throughput"). https endpoints, and any endpoint a proxy from the
environment applies to, go through httpx (`_httpx.py`): hosted APIs are bounded by their rate
limits, not by client CPU, and need proxies, HTTP/2 and the system's CA store. With
``ClientConfig.hosted`` set, requests are collected into hosted Batch API jobs
(`hosted.py`) instead of being sent one by one; callers see the same ``Completion``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from datagen import store
from datagen.endpoint._http import ConnectionPool
from datagen.endpoint._httpx import HttpxPool, wants_httpx
from datagen.endpoint.completion import Completion, finish_row
from datagen.endpoint.hosted_options import HostedOptions
from datagen.endpoint.keys import canonical_bytes, normalise_path, payload_key
from datagen.endpoint.limits import Limits, Prices, cost_usd, estimate_tokens
from datagen.endpoint.replies import (
    ANSWER_FIELD,
    RETRY_STATUSES,
    error_body,
    error_message,
    parse_answer,
    retry_after_seconds,
    usage_tokens,
)

CHAT_PATH = "/chat/completions"
COMPLETIONS_PATH = "/completions"
SUPPORTED_PATHS = tuple(ANSWER_FIELD)


class Request(NamedTuple):
    """One request of ``LLMClient.call_many``: endpoint path, body and sample index."""

    path: str
    body: dict[str, Any]
    sample_index: int = 0


class ClientConfig(BaseModel):
    """Where and how to send requests.

    Example: ``ClientConfig(base_url="http://127.0.0.1:8000/v1", concurrency=64, rpm=500)``
    """

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="OpenAI-style base URL, e.g. http://host:port/v1")
    api_key: SecretStr | None = Field(default=None, exclude=True, repr=False)
    model: str | None = Field(default=None, description="Model used when a call names none")
    concurrency: int = Field(default=64, ge=1, le=10_000)
    rpm: float | None = Field(default=None, gt=0, description="Requests per minute cap")
    tpm: float | None = Field(default=None, gt=0, description="Tokens per minute cap")
    max_retries: int = Field(default=5, ge=0)
    timeout: float = Field(default=600.0, gt=0, description="Seconds per attempt")
    budget_usd: float | None = Field(default=None, ge=0)
    lease_s: float = Field(default=60.0, gt=0, description="Seconds a worker's claim on a "
                           "request lasts unless renewed (a dead worker's claims then expire)")
    prices: Prices = Field(default_factory=dict)
    backoff_base: float = Field(default=0.5, ge=0)
    backoff_max: float = Field(default=30.0, ge=0)
    transport: Literal["auto", "own", "httpx"] = Field(
        default="auto", description="auto: httpx for https and proxied endpoints, else own")
    hosted: HostedOptions | None = Field(
        default=None, description="Send through the hosted Batch API instead of online")


@dataclass
class Stats:
    """Live counters for progress displays and run summaries (a plain dataclass: it is
    updated on every request)."""

    scheduled: int = 0  # calls started so far (the total a progress display counts toward)
    sent: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    from_ledger: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


class LLMClient:
    """Async OpenAI-compatible client with limits, retries and an exactly-once ledger.

    Use as ``async with LLMClient(config, db) as client: c = await client.chat(messages)``.
    With ``db=None`` no ledger is kept (nothing is cached or recorded). ``limits`` replaces the
    process's own rate limits and budget (a cluster passes one shared by all its workers).
    """

    def __init__(
        self, config: ClientConfig, db: Any | None = None, limits: Any | None = None
    ) -> None:
        self.config = config
        self.db = db
        self.stats = Stats()
        self._pool: ConnectionPool | HttpxPool | None = None
        self._batcher: Any = None  # a hosted.HostedBatcher with ClientConfig.hosted
        self._sem: asyncio.Semaphore | None = None
        self.limits = limits or Limits(config.rpm, config.tpm, config.budget_usd)
        self._ledger: store.DBThread | None = None
        self._renewer: asyncio.Task | None = None
        self.worker = store.new_worker_id()
        self._queue: asyncio.Queue | None = None
        self._writer: asyncio.Task | None = None
        self._headers = {"Content-Type": "application/json", "Accept": "application/json",
                         "User-Agent": "rlaif"}
        if config.api_key is not None and config.api_key.get_secret_value():
            self._headers["Authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        self._endpoint = config.base_url.split("@")[-1]
        self._budget_hit = False

    async def __aenter__(self) -> LLMClient:
        transport = self.config.transport
        if transport == "auto":
            transport = "httpx" if wants_httpx(self.config.base_url) else "own"
        pool_class = HttpxPool if transport == "httpx" else ConnectionPool
        self._pool = pool_class(self.config.base_url, self.config.concurrency)
        self._sem = asyncio.Semaphore(self.config.concurrency)
        if self.db is not None:
            # The ledger thread gets a connection of its own: sharing the caller's would let
            # its commits end the caller's open transactions.
            self._ledger = store.DBThread(self.db)
            self._queue = asyncio.Queue()
            self._writer = asyncio.create_task(self._write_loop())
            self._renewer = asyncio.create_task(self._renew_loop())
        if self.config.hosted is not None:
            if self.db is None:
                raise ValueError("hosted batches need a ledger database")
            # imported here: the openai types it validates with take a second to import
            from datagen.endpoint.hosted import HostedBatcher

            self._batcher = HostedBatcher(
                self.config, self.config.hosted, self._headers, self.stats, self.limits,
                self._ledger.call)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._batcher is not None:
            await self._batcher.aclose()
        if self._writer is not None:
            self._renewer.cancel()
            await self._queue.put(None)
            await self._writer
            await self._ledger.call(store.ledger_release, self.worker)
        if self._ledger is not None:
            self._ledger.close()
        if self._pool is not None:
            await self._pool.aclose()

    # --- ledger plumbing ---------------------------------------------------------------------

    async def _write_loop(self) -> None:
        """Group commit: drain every queued ledger write (finished requests, claims of requests
        about to be sent) into one transaction."""
        closing = False
        while not closing:
            item = await self._queue.get()
            items = [item]
            while not self._queue.empty():
                items.append(self._queue.get_nowait())
            closing = None in items
            ops = [i for i in items if i is not None]
            claims = [row for kind, rows, _ in ops if kind == "claim" for row in rows]
            finished = [row for kind, row, _ in ops if kind == "finish"]
            try:
                held = await self._ledger.call(_write_ledger, claims, finished, self.worker,
                                               self.config.lease_s)
            except Exception as exc:  # a full disk must not be reported as sent
                for _, _, fut in ops:
                    if fut is not None and not fut.done():
                        fut.set_exception(exc)
                continue
            for kind, rows, fut in ops:
                if fut is not None and not fut.done():
                    fut.set_result({r["key"] for r in rows if r["key"] in held}
                                   if kind == "claim" else None)

    async def _renew_loop(self) -> None:
        """Keep this worker's leases alive while it runs (a dead worker's expire)."""
        while True:
            await asyncio.sleep(self.config.lease_s / 3)
            await self._ledger.call(store.ledger_renew, self.worker, self.config.lease_s)

    async def lookup(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """Ledger rows for these keys (empty without a database)."""
        if self.db is None:
            return {}
        return await self._ledger.call(store.ledger_lookup, keys)

    async def claim(self, rows: list[dict[str, Any]]) -> set[str]:
        """Record requests about to be sent as pending and take their leases for this worker;
        returns the keys it holds (the others are held by another live worker)."""
        if not rows:
            return set()
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(("claim", rows, fut))
        return await fut

    # --- requests ----------------------------------------------------------------------------

    async def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        model: str | None = None,
        sample_index: int = 0,
        **params: Any,
    ) -> Completion:
        """One chat completion through the ledger; sampling parameters pass through as given."""
        body = {"model": model or self.config.model, "messages": messages, **params}
        return await self.call(CHAT_PATH, body, sample_index=sample_index)

    async def complete(
        self, prompt: str, *, model: str | None = None, sample_index: int = 0, **params: Any
    ) -> Completion:
        """One text completion (``/v1/completions``) through the ledger."""
        body = {"model": model or self.config.model, "prompt": prompt, **params}
        return await self.call(COMPLETIONS_PATH, body, sample_index=sample_index)

    async def call(self, path: str, body: dict[str, Any], *, sample_index: int = 0) -> Completion:
        """Answer from the ledger if this exact request completed before, else send it (once
        across every worker sharing the ledger)."""
        return (await self.call_many([Request(path, body, sample_index)]))[0]

    async def _answer(self, key: str, request: tuple[str, dict[str, Any], bytes, int],
                      row: dict[str, Any] | None, held: bool) -> Completion:
        """One request of a sweep: from its ledger row when it completed, sent when this worker
        holds its lease, else awaited from the worker that does."""
        path, body, payload, sample_index = request
        self.stats.scheduled += 1
        if self.db is None:
            return await self._send(key, path, body, payload)
        while not held:
            if row and row["status"] == "ok":
                break
            if row and row["status"] == "failed" and row["lease_until"] is None:
                self.stats.failed += 1
                return _failed_ledger_row(key, row)
            await asyncio.sleep(min(1.0, self.config.lease_s / 20))
            row = (await self.lookup([key])).get(key)
            if row and row["status"] != "ok" and (
                    row["lease_until"] is None or row["lease_until"] < time.time()
                    or store.worker_gone(row["worker_id"])):
                held = key in await self.claim([_pending_row(key, *request)])
        if row and row["status"] == "ok" and not held:
            self.stats.from_ledger += 1
            self.stats.ok += 1
            return _from_ledger_row(key, row)
        if self._batcher is not None:  # the batcher writes its answers to the ledger itself
            return await self._batcher.submit(key, normalise_path(path), body)
        result = await self._send(key, path, body, payload)
        if result.status != "skipped":
            self._queue.put_nowait(("finish", finish_row(result, self._endpoint), None))
        return result

    async def call_many(self, requests: Sequence[Request]) -> list[Completion]:
        """Answer many requests, in order, through the ledger in one sweep: one lookup and one
        pending commit for all of them, then every request concurrently within the client's
        limits (as ``call`` would answer each). Identical requests (same path, body and sample
        index) are one request: sent once, and each gets its answer."""
        keys: list[str] = []
        unique: dict[str, tuple[str, dict[str, Any], bytes, int]] = {}
        for path, body, sample_index in requests:
            body = {k: v for k, v in body.items() if v is not None}
            payload = canonical_bytes(body)
            key = payload_key(path, payload, sample_index)
            keys.append(key)
            unique.setdefault(key, (path, body, payload, sample_index))
        if not unique:
            return []
        known = await self.lookup(list(unique))
        held = await self.claim([_pending_row(key, *request) for key, request in unique.items()
                                 if self.db is not None and
                                 known.get(key, {}).get("status") != "ok"])
        answers = await asyncio.gather(*(
            self._answer(key, request, known.get(key), key in held)
            for key, request in unique.items()))
        by_key = dict(zip(unique, answers, strict=True))
        return [by_key[key] for key in keys]

    async def _over_budget(self) -> bool:
        if not self._budget_hit and await self.limits.over_budget():
            self._budget_hit = True
        return self._budget_hit

    @property
    def transport(self) -> str:
        """Which transport carries the requests: "own" or "httpx" (once entered)."""
        return "httpx" if isinstance(self._pool, HttpxPool) else "own"

    @property
    def budget_exhausted(self) -> bool:
        return self._budget_hit

    async def _send(
        self, key: str, path: str, body: dict[str, Any], payload: bytes
    ) -> Completion:
        path = normalise_path(path)
        estimate = estimate_tokens(body) if self.limits.counts_tokens else 0
        attempts = 0
        error = "not sent"
        status_code: int | None = None
        failure: Any = None
        request_id: str | None = None
        async with self._sem:
            if await self._over_budget():
                self.stats.skipped += 1
                return Completion(key=key, status="skipped",
                                  error="budget exhausted (--budget-usd)")
            while True:
                attempts += 1
                await self.limits.acquire(estimate)
                started = time.monotonic()
                retry_after = None
                self.stats.sent += 1
                try:
                    status_code, headers, raw = await self._pool.post(
                        path, payload, self._headers, self.config.timeout)
                except (TimeoutError, OSError) as exc:
                    status_code, raw, headers, failure = None, b"", {}, None
                    error = f"{type(exc).__name__}: {exc}".rstrip(": ") or "connection error"
                    retryable = True
                else:
                    request_id = headers.get("x-request-id")
                    if status_code == 200:
                        parsed = parse_answer(raw, path)
                        if parsed is not None:
                            return self._success(key, body, parsed, attempts, started,
                                                 request_id)
                        error, failure = "malformed or truncated response body", None
                        retryable = True
                    else:
                        failure = error_body(raw)
                        error = error_message(failure, status_code)
                        retryable = status_code in RETRY_STATUSES
                        retry_after = retry_after_seconds(headers.get("retry-after"))
                self.limits.release(estimate)
                if not retryable or attempts > self.config.max_retries:
                    break
                self.stats.retries += 1
                await asyncio.sleep(self._backoff(attempts, retry_after))
        self.stats.failed += 1
        return Completion(key=key, status="failed", status_code=status_code, error=error,
                          attempts=attempts, error_body=failure,
                          request_id=request_id if status_code else None)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, max(self.config.backoff_max, retry_after))
        ceiling = min(self.config.backoff_max, self.config.backoff_base * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    def _success(
        self, key: str, body: dict[str, Any], parsed: dict[str, Any], attempts: int,
        started: float, request_id: str | None,
    ) -> Completion:
        prompt_tokens, completion_tokens = usage_tokens(parsed)
        cost = cost_usd(body.get("model"), self.config.prices, (prompt_tokens, completion_tokens))
        self.stats.ok += 1
        self.stats.prompt_tokens += prompt_tokens
        self.stats.completion_tokens += completion_tokens
        self.stats.cost_usd += cost
        self.limits.charge(cost)
        if self.limits.counts_tokens:
            self.limits.release(estimate_tokens(body) - prompt_tokens - completion_tokens)
        return Completion(
            key=key, status="ok", status_code=200, body=parsed, attempts=attempts,
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cost_usd=cost,
            latency_ms=(time.monotonic() - started) * 1000, request_id=request_id,
        )

    async def cancel_hosted(self, keys: list[str] | None = None) -> list[tuple[str, str]]:
        """Cancel this database's open hosted batches (those holding ``keys``, when given)."""
        if self._batcher is None:
            raise ValueError("cancel_hosted needs ClientConfig.hosted")
        return await self._batcher.cancel(keys)

    async def list_models(self) -> list[str]:
        """Model ids the endpoint serves (``GET /models``)."""
        status, _, raw = await self._pool.get(
            "/models", {k: v for k, v in self._headers.items() if k != "Content-Type"},
            min(self.config.timeout, 30))
        if status != 200:
            raise ConnectionError(error_message(error_body(raw), status))
        return [m["id"] for m in orjson.loads(raw).get("data", [])]


def _write_ledger(db: store.Database, claims: list[dict], finished: list[dict], worker: str,
                  lease_s: float) -> set[str]:
    with store.transaction(db):
        store.ledger_finish(db, finished)
        return store.ledger_claim(db, claims, worker, lease_s)

def _pending_row(
    key: str, path: str, body: dict[str, Any], payload: bytes, sample_index: int
) -> dict[str, Any]:
    return {
        "key": key, "path": normalise_path(path), "model": body.get("model"),
        "body": payload.decode(), "sample_index": sample_index,
    }


def _failed_ledger_row(key: str, row: dict[str, Any]) -> Completion:
    return Completion(key=key, status="failed", status_code=row.get("status_code"),
                      error=row.get("error"), attempts=row.get("attempts") or 0, from_ledger=True)


def _from_ledger_row(key: str, row: dict[str, Any]) -> Completion:
    return Completion(
        key=key, status="ok", status_code=row.get("status_code") or 200,
        body=orjson.loads(row["response"]), attempts=row.get("attempts") or 0, from_ledger=True,
        prompt_tokens=row.get("prompt_tokens") or 0,
        completion_tokens=row.get("completion_tokens") or 0,
        cost_usd=0.0, latency_ms=row.get("latency_ms"), request_id=row.get("request_id"),
        via=row.get("via") or "online", batch_id=row.get("batch_id"),
    )


def run_async(coro: Awaitable[Any]) -> Any:
    """Run a coroutine to completion on a fresh event loop (uvloop when installed)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)

