"""The endpoint client: the only module that speaks HTTP to a model.

It sends OpenAI-compatible ``/v1/chat/completions`` and ``/v1/completions`` requests with a
concurrency limit, requests- and tokens-per-minute token buckets, retries with exponential
backoff and jitter (honouring ``Retry-After``), usage and cost accounting and a spending cap.
Every request goes through the ledger in the project database when one is given: a row is
committed as ``pending`` before the request is sent and completed with the response after,
so a rerun answers finished requests from the database and never pays twice.

HTTP goes through a small asyncio HTTP/1.1 transport of our own (`datagen/endpoint/_http.py`), not
httpx, aiohttp or the openai SDK: on a 2-core machine those spend 0.15-8 ms of CPU per
request and cannot keep 256 requests in flight at an endpoint's speed (README, "Client
throughput").
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from datagen import store
from datagen.endpoint._http import ConnectionPool
from datagen.endpoint.completion import Completion
from datagen.endpoint.keys import canonical_bytes, canonical_json, normalise_path, payload_key
from datagen.endpoint.limits import Limits, estimate_tokens, price_for

CHAT_PATH = "/chat/completions"
COMPLETIONS_PATH = "/completions"
SUPPORTED_PATHS = (CHAT_PATH, COMPLETIONS_PATH)
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 522, 524})


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
    prices: dict[str, tuple[float, float]] = Field(default_factory=dict)
    backoff_base: float = Field(default=0.5, ge=0)
    backoff_max: float = Field(default=30.0, ge=0)


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _error_message(raw: bytes, status: int) -> str:
    try:
        data = json.loads(raw)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict) and err.get("message"):
            return f"HTTP {status}: {err['message']}"
        if isinstance(err, str):
            return f"HTTP {status}: {err}"
    except (ValueError, UnicodeDecodeError):
        pass
    return f"HTTP {status}: {raw[:200].decode('utf-8', 'replace')}"


@dataclass
class Stats:
    """Live counters for progress displays and run summaries (a plain dataclass: it is
    updated on every request)."""

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
        self._pool: ConnectionPool | None = None
        self._sem: asyncio.Semaphore | None = None
        self.limits = limits or Limits(config.rpm, config.tpm, config.budget_usd)
        self._ledger: store.DBThread | None = None
        self._queue: asyncio.Queue | None = None
        self._writer: asyncio.Task | None = None
        self._headers = {"Content-Type": "application/json", "Accept": "application/json",
                         "User-Agent": "rlaif"}
        if config.api_key is not None and config.api_key.get_secret_value():
            self._headers["Authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        self._endpoint = config.base_url.split("@")[-1]
        self._budget_hit = False

    async def __aenter__(self) -> LLMClient:
        self._pool = ConnectionPool(self.config.base_url, self.config.concurrency)
        self._sem = asyncio.Semaphore(self.config.concurrency)
        if self.db is not None:
            # The ledger thread gets a connection of its own: sharing the caller's would let
            # its commits end the caller's open transactions.
            self._ledger = store.DBThread(self.db)
            self._queue = asyncio.Queue()
            self._writer = asyncio.create_task(self._write_loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._writer is not None:
            await self._queue.put(None)
            await self._writer
        if self._ledger is not None:
            self._ledger.close()
        if self._pool is not None:
            self._pool.close()

    # --- ledger plumbing ---------------------------------------------------------------------

    async def _write_loop(self) -> None:
        """Group commit: drain every queued ledger write into one transaction."""
        closing = False
        while not closing:
            item = await self._queue.get()
            items = [item]
            while not self._queue.empty():
                items.append(self._queue.get_nowait())
            closing = None in items
            ops = [i for i in items if i is not None]
            pending = [row for kind, row, _ in ops if kind == "pending"]
            finished = [row for kind, row, _ in ops if kind == "finish"]
            try:
                await self._ledger.call(_write_ledger, pending, finished)
            except Exception as exc:  # a full disk must not be reported as sent
                for _, _, fut in ops:
                    if fut is not None and not fut.done():
                        fut.set_exception(exc)
                continue
            for _, _, fut in ops:
                if fut is not None and not fut.done():
                    fut.set_result(None)

    async def lookup(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """Ledger rows for these keys (empty without a database)."""
        if self.db is None:
            return {}
        return await self._ledger.call(store.ledger_lookup, keys)

    async def record_pending(self, rows: list[dict[str, Any]]) -> None:
        """Commit pending rows for requests about to be sent (used by batch to pre-register)."""
        if self.db is None or not rows:
            return
        fut = asyncio.get_running_loop().create_future()
        for row in rows[:-1]:
            self._queue.put_nowait(("pending", row, None))
        self._queue.put_nowait(("pending", rows[-1], fut))
        await fut

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

    async def call(
        self,
        path: str,
        body: dict[str, Any],
        *,
        sample_index: int = 0,
        known: dict[str, Any] | None = None,
    ) -> Completion:
        """Answer from the ledger if this exact request completed before, else send it.

        ``known`` is the ledger row for this request when the caller already looked it up
        (``{}`` for "not in the ledger"); ``None`` makes the client look it up itself.
        """
        body = {k: v for k, v in body.items() if v is not None}
        payload = canonical_bytes(body)
        key = payload_key(path, payload, sample_index)
        if self.db is not None:
            row = known if known is not None else (await self.lookup([key])).get(key)
            if row and row["status"] == "ok":
                self.stats.from_ledger += 1
                self.stats.ok += 1
                return _from_ledger_row(key, row)
            if not row:
                await self.record_pending([_pending_row(key, path, body, payload, sample_index)])
        result = await self._send(key, path, body, payload)
        if self.db is not None and result.status != "skipped":
            self._queue.put_nowait(("finish", _finish_row(result, self._endpoint), None))
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
        await self.record_pending([_pending_row(key, *request) for key, request in unique.items()
                                   if key not in known])
        answers = await asyncio.gather(*(
            self.call(path, body, sample_index=index, known=known.get(key) or {"status": "pending"})
            for key, (path, body, _, index) in unique.items()))
        by_key = dict(zip(unique, answers, strict=True))
        return [by_key[key] for key in keys]

    async def _over_budget(self) -> bool:
        if not self._budget_hit and await self.limits.over_budget():
            self._budget_hit = True
        return self._budget_hit

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
                    status_code, raw, headers = None, b"", {}
                    error = f"{type(exc).__name__}: {exc}".rstrip(": ") or "connection error"
                    retryable = True
                else:
                    if status_code == 200:
                        parsed = _parse_body(raw)
                        if parsed is not None:
                            return self._success(key, body, parsed, attempts, started)
                        error = "malformed or truncated response body"
                        retryable = True
                    else:
                        error = _error_message(raw, status_code)
                        retryable = status_code in RETRY_STATUSES
                        retry_after = _retry_after_seconds(headers.get("retry-after"))
                self.limits.release(estimate)
                if not retryable or attempts > self.config.max_retries:
                    break
                self.stats.retries += 1
                await asyncio.sleep(self._backoff(attempts, retry_after))
        self.stats.failed += 1
        return Completion(key=key, status="failed", status_code=status_code, error=error,
                          attempts=attempts)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, max(self.config.backoff_max, retry_after))
        ceiling = min(self.config.backoff_max, self.config.backoff_base * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    def _success(
        self, key: str, body: dict[str, Any], parsed: dict[str, Any], attempts: int, started: float
    ) -> Completion:
        usage = parsed.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        price_in, price_out = price_for(body.get("model"), self.config.prices)
        cost = (prompt_tokens * price_in + completion_tokens * price_out) / 1e6
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
            latency_ms=(time.monotonic() - started) * 1000,
        )

    async def list_models(self) -> list[str]:
        """Model ids the endpoint serves (``GET /models``)."""
        status, _, raw = await self._pool.get(
            "/models", {k: v for k, v in self._headers.items() if k != "Content-Type"},
            min(self.config.timeout, 30))
        if status != 200:
            raise ConnectionError(_error_message(raw, status))
        return [m["id"] for m in orjson.loads(raw).get("data", [])]


def _parse_body(raw: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        return None
    return data


def _write_ledger(db: store.Database, pending: list[dict], finished: list[dict]) -> None:
    with store.transaction(db):
        store.ledger_add_pending(db, pending)
        store.ledger_finish(db, finished)


def _pending_row(
    key: str, path: str, body: dict[str, Any], payload: bytes, sample_index: int
) -> dict[str, Any]:
    return {
        "key": key, "path": normalise_path(path), "model": body.get("model"),
        "body": payload.decode(), "sample_index": sample_index,
    }


def _finish_row(result: Completion, endpoint: str) -> dict[str, Any]:
    return {
        "key": result.key, "status": result.status, "status_code": result.status_code,
        "response": canonical_json(result.body) if result.body is not None else None,
        "error": result.error, "attempts": result.attempts, "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens, "cost_usd": result.cost_usd,
        "latency_ms": result.latency_ms, "endpoint": endpoint,
    }


def _from_ledger_row(key: str, row: dict[str, Any]) -> Completion:
    return Completion(
        key=key, status="ok", status_code=row.get("status_code") or 200,
        body=orjson.loads(row["response"]), attempts=row.get("attempts") or 0, from_ledger=True,
        prompt_tokens=row.get("prompt_tokens") or 0,
        completion_tokens=row.get("completion_tokens") or 0,
        cost_usd=0.0, latency_ms=row.get("latency_ms"),
    )


def run_async(coro: Awaitable[Any]) -> Any:
    """Run a coroutine to completion on a fresh event loop (uvloop when installed)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)

