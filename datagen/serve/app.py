"""The HTTP side of ``rlaif serve``: an OpenAI-compatible aiohttp server over a local model.

It lets every command run offline against the embedded model (or any local Hugging Face model
directory) through the same client code that talks to hosted APIs. It answers
``GET /v1/models``, ``POST /v1/chat/completions`` and ``POST /v1/completions`` (whole or, with
``stream: true``, as server-sent events) and ``GET /v1/stats`` (the backend's counters and the
admission state). The event loop only moves bytes: bodies are size-checked while they are read
(``Limits.max_body_bytes``, 413), parsed and tokenized on a worker thread
(``datagen.serve.api``), admitted under the in-flight token budget (``TokenGate``), and decoded
by the backend's threads. A client that disconnects cancels its rows; idle connections and
slow bodies time out; on SIGINT/SIGTERM the server stops listening, lets requests in flight
finish for a grace period, cancels the rest and exits without a traceback. The API key, when
set, is compared as a SHA-256 digest in constant time; the scheme name is case-insensitive.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from datagen.errors import UserInputError
from datagen.serve.admission import Limits, TokenGate
from datagen.serve.api import ApiError, Prepared, prepare_chat, prepare_completion
from datagen.serve.model import ServedModel, load_served
from datagen.serve.replies import ChunkStream, chat_response, completion_response

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


class Server:
    """The routes' shared state: model, limits, token gate, request-preparation thread."""

    def __init__(self, served: ServedModel, limits: Limits) -> None:
        self.served, self.limits = served, limits
        self.gate = TokenGate(limits.max_inflight_tokens)
        self.prep = ThreadPoolExecutor(1, thread_name_prefix="prepare")
        self.streams_cancelled = 0

    async def prepare(self, request: web.Request, kind: str) -> Prepared:
        """Read the body (bounded in size and time) and prepare it off the event loop."""
        try:
            raw = await asyncio.wait_for(request.read(), self.limits.idle_timeout_s)
        except TimeoutError:
            raise ApiError(408, f"the request body did not arrive within "
                                f"{self.limits.idle_timeout_s:g} s") from None
        prepare = prepare_chat if kind == "chat" else prepare_completion
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.prep, partial(prepare, self.served.info, raw, self.limits.max_request_tokens))

    async def answer(self, request: web.Request, kind: str) -> web.StreamResponse:
        prep = await self.prepare(request, kind)
        await self.gate.acquire(prep.weight)
        try:
            if prep.stream:
                return await self.stream(request, prep)
            results = await self.decode(prep)
        finally:
            self.gate.release(prep.weight)
        build = chat_response if kind == "chat" else completion_response
        return web.json_response(build(self.served, prep, results),
                                 dumps=lambda body: orjson.dumps(body).decode())

    async def decode(self, prep: Prepared) -> list[Any]:
        """Decode a request's rows; cancelling the caller (client gone) cancels the rows."""
        loop = asyncio.get_running_loop()
        holder: dict[str, asyncio.Future] = {}
        job, future = self.served.job_for(loop, prep.prompts, prep.seeds, prep.sampling,
                                          cancelled=lambda: holder["f"].cancelled())
        holder["f"] = future
        self.served.submit(job)
        return await future

    async def stream(self, request: web.Request, prep: Prepared) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        stopped = asyncio.Event()

        def on_token(index: int, token: int, scored: Any) -> None:
            post(loop, events.put_nowait, (index, token, scored))

        job, future = self.served.job_for(loop, prep.prompts, prep.seeds, prep.sampling,
                                          cancelled=stopped.is_set, on_token=on_token)
        future.add_done_callback(lambda _: events.put_nowait(None))
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        chunks = ChunkStream(self.served, prep, job.results)
        self.served.submit(job)
        finished = False
        try:
            await send(response, chunks.opening())
            while (event := await events.get()) is not None:
                await send(response, chunks.token(*event))
            error = future.exception()
            if error is None:
                await send(response, chunks.closing())
            else:  # the status line is sent already: report the fault as OpenAI does, in-band
                await send(response, [ApiError(500, f"generation failed: {error}",
                                               kind="server_error").body()])
            await response.write(b"data: [DONE]\n\n")
            finished = True
        finally:
            if not finished:
                stopped.set()
                self.streams_cancelled += 1
        return response

    def stats(self) -> dict[str, Any]:
        return self.served.engine.snapshot() | {
            "inflight_tokens": self.gate.used, "waiting_requests": self.gate.waiting,
            "max_inflight_tokens": self.gate.capacity, "streams_cancelled":
                self.streams_cancelled}


def post(loop: asyncio.AbstractEventLoop, callback: Callable, *args: Any) -> None:
    """Run ``callback(*args)`` on the loop from a backend thread; dropped once it has closed."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)


async def send(response: web.StreamResponse, chunks: list[dict[str, Any]]) -> None:
    if chunks:
        await response.write(b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks))


def build_app(server: Server, api_key: str | None = None) -> web.Application:
    """The aiohttp application: routes, OpenAI-shaped errors, optional bearer-token check."""
    key_digest = hashlib.sha256(api_key.encode()).digest() if api_key is not None else None

    @web.middleware
    async def openai_errors(request: web.Request, handler: Callable) -> web.StreamResponse:
        try:
            if key_digest is not None:
                check_api_key(request, key_digest)
            return await handler(request)
        except ApiError as exc:
            return exc.response()
        except web.HTTPException as exc:
            if exc.status == 404:
                return ApiError(404, f"unknown path {request.method} {request.path}",
                                code="not_found").response()
            return ApiError(exc.status, exc.reason).response()
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as exc:  # a bug: still answer in OpenAI's shape, which clients retry
            return ApiError(500, f"internal error: {type(exc).__name__}: {exc}",
                            kind="server_error").response()

    served = server.served

    async def list_models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{
            "id": served.model_id, "object": "model", "created": served.created,
            "owned_by": "rlaif", "context_length": served.context_length,
        }]})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(server.stats())

    app = web.Application(middlewares=[openai_errors],
                          client_max_size=server.limits.max_body_bytes)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/stats", stats)
    app.router.add_post("/v1/chat/completions", partial(Server.answer, server, kind="chat"))
    app.router.add_post("/v1/completions", partial(Server.answer, server, kind="completion"))
    return app


def check_api_key(request: web.Request, key_digest: bytes) -> None:
    """Accept ``Authorization: Bearer KEY`` (scheme in any case); digests are compared in
    constant time, so neither the key's content nor its length leaks through timing."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    given = token.strip() if scheme.lower() == "bearer" else ""
    if not hmac.compare_digest(hashlib.sha256(given.encode()).digest(), key_digest):
        raise ApiError(401, "incorrect or missing API key (send 'Authorization: Bearer KEY')",
                       code="invalid_api_key")


def base_url_for(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/v1"


async def serve_until_stopped(
    server: Server, host: str, port: int, api_key: str | None,
    on_ready: Callable[[str], None], exit_with_parent: bool = False,
) -> None:
    """Listen until SIGINT/SIGTERM (or the parent process exits); call on_ready(base_url)."""
    limits = server.limits
    runner = web.AppRunner(build_app(server, api_key), access_log=None,
                           shutdown_timeout=limits.shutdown_grace_s, handler_cancellation=True,
                           keepalive_timeout=limits.idle_timeout_s)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise UserInputError(f"--host {host} --port {port}: cannot listen: "
                             f"{exc.strerror or exc}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():  # asked twice: stop now, without waiting for work in flight
            os._exit(1)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    watcher = asyncio.create_task(watch_parent(stop)) if exit_with_parent else None
    try:
        on_ready(base_url_for(host, runner.addresses[0][1]))
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
        # Stops listening, waits up to the grace period for handlers, then cancels them
        # (which cancels their rows in the backend).
        await runner.cleanup()
        await loop.run_in_executor(None, server.served.engine.close)
        server.prep.shutdown(wait=False, cancel_futures=True)


async def watch_parent(stop: asyncio.Event) -> None:
    """Set ``stop`` once the process that started us is gone (we were re-parented)."""
    parent = os.getppid()
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    stop.set()


def run_server(
    model_dir: Path, model_id: str, *, backend: str = "ctranslate2", host: str = "127.0.0.1",
    port: int = 8000, max_batch: int = 16, threads: int = 1, api_key: str | None = None,
    limits: Limits | None = None, on_ready: Callable[[str], None] = print,
    exit_with_parent: bool = False,
) -> None:
    """Load the model on the chosen backend, start it and serve HTTP until stopped."""
    served = load_served(model_dir, model_id, backend, max_batch=max_batch, threads=threads)
    served.engine.start()
    server = Server(served, limits or Limits())
    try:
        asyncio.run(serve_until_stopped(server, host, port, api_key, on_ready, exit_with_parent))
    finally:
        served.engine.close()
