"""An OpenAI-compatible HTTP server over a local transformers causal LM (``rlaif serve``).

It lets every command run offline against the embedded model (or any local Hugging Face model
directory) through the same client code that talks to hosted APIs. It answers
``GET /v1/models``, ``POST /v1/chat/completions`` and ``POST /v1/completions`` with the
parameters our generators and judges use: ``max_tokens``/``max_completion_tokens``,
``temperature`` (0 = greedy), ``top_p``, ``n``, ``seed``, ``stop``, chat ``logprobs`` and
``top_logprobs``, completions ``logprobs: k`` and ``echo`` (which scores the prompt, the way a
judge scores a text), and ``usage``. Errors have OpenAI's shape. Requests are decoded together
by ``datagen.serve.batcher.Batcher``; ``GET /v1/stats`` reports its counters. The HTTP side runs on
aiohttp in the main thread and never touches torch.
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import json
import os
import secrets
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from datagen.errors import UserInputError
from datagen.serve.batcher import Batcher, Job, RowResult, Sampling, Scored

MAX_ROWS_PER_REQUEST = 128
DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default for /v1/completions
DEFAULT_MODEL_ALIAS = "default"


class ApiError(Exception):
    """An error answered as OpenAI does: ``{"error": {message, type, param, code}}``."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = (
            status, message, param, code, kind)

    def response(self) -> web.Response:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}
        return web.json_response(body, status=self.status)


# --- request bodies ----------------------------------------------------------------------------

class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class ContentPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None


class _GenerationRequest(_Body):
    model: str
    max_tokens: int | None = Field(default=None, ge=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int | None = Field(default=None, ge=1, le=MAX_ROWS_PER_REQUEST)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None


class ChatRequest(_GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)


class CompletionRequest(_GenerationRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool | None = None
    logprobs: int | None = Field(default=None, ge=0, le=20)


# --- the served model --------------------------------------------------------------------------

class ServedModel:
    """A loaded model with its tokenizer, id, context length and batcher."""

    def __init__(self, model: Any, tokenizer: Any, model_id: str, batcher: Batcher) -> None:
        self.model, self.tokenizer, self.model_id, self.batcher = (
            model, tokenizer, model_id, batcher)
        self.context_length = int(model.config.max_position_embeddings)
        self.created = int(time.time())
        self._token_bytes = token_bytes_function(tokenizer)

    def token_bytes(self, token: int) -> bytes:
        return self._token_bytes(token)

    def token_text(self, token: int) -> str:
        return self._token_bytes(token).decode("utf-8", errors="replace")

    async def run(self, prompts: list[list[int]], seeds: list[int],
                  sampling: Sampling) -> list[RowResult]:
        """Queue one job and wait for its rows."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[RowResult]] = loop.create_future()

        def settle(results: list[RowResult] | None, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(ApiError(500, f"generation failed: {error}",
                                              kind="server_error"))
            else:
                future.set_result(results)

        def on_done(results: list[RowResult] | None, error: BaseException | None) -> None:
            loop.call_soon_threadsafe(settle, results, error)

        self.batcher.submit(Job(prompts=prompts, seeds=seeds, sampling=sampling,
                                on_done=on_done, cancelled=future.cancelled))
        return await future


def load_model(model_dir: Path) -> tuple[Any, Any]:
    """Load a local Hugging Face causal LM and its tokenizer (fp32, inference mode, offline)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True,
                                                 dtype=torch.float32)
    return model.eval(), tokenizer


def byte_level_alphabet() -> dict[str, int]:
    """Byte-level BPE's printable stand-ins for the 256 byte values, as character -> byte."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    table = {chr(b): b for b in kept}
    shifted = sorted(set(range(256)) - set(kept))
    table |= {chr(256 + i): b for i, b in enumerate(shifted)}
    return table


def token_bytes_function(tokenizer: Any) -> Callable[[int], bytes]:
    """A memoised id -> UTF-8 bytes map (exact for byte-level BPE, decoded otherwise)."""
    from tokenizers import decoders

    alphabet = byte_level_alphabet()
    added = {i: t.content for i, t in tokenizer.added_tokens_decoder.items()}
    byte_level = isinstance(tokenizer.backend_tokenizer.decoder, decoders.ByteLevel)
    memo: dict[int, bytes] = {}

    def lookup(token: int) -> bytes:
        if token not in memo:
            piece = tokenizer.convert_ids_to_tokens(token)
            if token in added:
                memo[token] = added[token].encode()
            elif byte_level and all(ch in alphabet for ch in piece):
                memo[token] = bytes(alphabet[ch] for ch in piece)
            else:
                memo[token] = tokenizer.decode([token]).encode()
        return memo[token]

    return lookup


# --- request handling --------------------------------------------------------------------------

def parse_body(raw: bytes, schema: type[_Body]) -> Any:
    """Decode and validate a JSON request body, or raise a 400 ApiError."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ApiError(400, f"{where}: {first['msg']}", param=str(first["loc"][0]),
                       code="invalid_type" if first["type"].endswith("_type") else None) from None


def check_request(served: ServedModel, req: _GenerationRequest) -> None:
    if req.model not in (served.model_id, DEFAULT_MODEL_ALIAS):
        raise ApiError(400, f"model {req.model!r} is not served here; this server serves "
                            f"{served.model_id!r}", param="model", code="model_not_found")
    if req.stream:
        raise ApiError(400, "stream: streaming is not supported by this server", param="stream")


def budget(served: ServedModel, prompt_lengths: list[int], requested: int | None,
           default: int | None, param: str) -> int:
    """New tokens per row: the request's max, checked against the model's context."""
    longest = max(prompt_lengths)
    if min(prompt_lengths) == 0:
        raise ApiError(400, f"{param}: the prompt is empty", param=param)
    room = served.context_length - longest
    wanted = requested if requested is not None else min(default or room, room)
    if wanted > room or room <= 0:
        raise ApiError(
            400, f"this model's context is {served.context_length} tokens, but the request "
                 f"needs {longest + wanted} ({longest} in the prompt, {wanted} to generate); "
                 "shorten the prompt or lower max_tokens",
            param=param, code="context_length_exceeded")
    return wanted


def row_seeds(seed: int | None, count: int) -> list[int]:
    """Per-row generator seeds: derived from the request's seed, else random."""
    if seed is None:
        return [secrets.randbits(63) for _ in range(count)]
    return [(seed * 1_000_003 + i) % 2**63 for i in range(count)]


def stop_strings(stop: str | list[str] | None) -> tuple[str, ...]:
    values = [stop] if isinstance(stop, str) else list(stop or [])
    return tuple(s for s in values if s)


def chat_prompt(served: ServedModel, messages: list[ChatMessage]) -> list[int]:
    """Token ids of the conversation in the model's chat template, ready for the reply."""
    turns = []
    for message in messages:
        content = message.content
        if isinstance(content, list):
            content = "\n".join(part.text for part in content)
        role = "system" if message.role == "developer" else message.role
        turns.append({"role": role, "content": content or ""})
    try:
        text = served.tokenizer.apply_chat_template(turns, add_generation_prompt=True,
                                                    tokenize=False)
    except Exception as exc:  # a template that rejects these roles, or a model without one
        raise ApiError(400, f"messages: the chat template failed: {exc}",
                       param="messages") from None
    return served.tokenizer(text, add_special_tokens=False).input_ids


def usage(prompt_tokens: int, results: list[RowResult]) -> dict[str, int]:
    completion = sum(len(r.tokens) for r in results)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion}


def chat_logprobs(served: ServedModel, scored: list[Scored]) -> dict[str, Any]:
    def entry(token: int, logprob: float) -> dict[str, Any]:
        return {"token": served.token_text(token), "logprob": logprob,
                "bytes": list(served.token_bytes(token))}

    return {"content": [
        {**entry(s.token, s.logprob), "top_logprobs": [entry(t, lp) for t, lp in s.top]}
        for s in scored
    ], "refusal": None}


def completion_logprobs(
    served: ServedModel, scored: list[Scored], offset: int = 0
) -> dict[str, Any]:
    """Legacy completions log-probs; text offsets count from ``offset`` in the choice's text."""
    tokens = [served.token_text(s.token) for s in scored]
    offsets = []
    for text in tokens:
        offsets.append(offset)
        offset += len(text)
    return {
        "tokens": tokens,
        "token_logprobs": [s.logprob for s in scored],
        "top_logprobs": [
            None if s.logprob is None else {served.token_text(t): lp for t, lp in s.top}
            for s in scored
        ],
        "text_offset": offsets,
    }


async def chat_completions(served: ServedModel, raw: bytes) -> dict[str, Any]:
    req: ChatRequest = parse_body(raw, ChatRequest)
    check_request(served, req)
    if req.top_logprobs is not None and not req.logprobs:
        raise ApiError(400, "top_logprobs: requires logprobs to be true", param="top_logprobs")
    prompt = chat_prompt(served, req.messages)
    n = req.n or 1
    requested = (req.max_completion_tokens if req.max_completion_tokens is not None
                 else req.max_tokens)
    sampling = Sampling(
        max_new_tokens=budget(served, [len(prompt)], requested, None, "messages"),
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        stop=stop_strings(req.stop),
        top_logprobs=(req.top_logprobs or 0) if req.logprobs else None,
    )
    results = await served.run([prompt] * n, row_seeds(req.seed, n), sampling)
    choices = [{
        "index": i,
        "message": {"role": "assistant", "content": r.text, "refusal": None},
        "logprobs": chat_logprobs(served, r.scored) if req.logprobs else None,
        "finish_reason": r.finish_reason,
    } for i, r in enumerate(results)]
    return {"id": f"chatcmpl-{secrets.token_hex(12)}", "object": "chat.completion",
            "created": int(time.time()), "model": served.model_id, "choices": choices,
            "usage": usage(len(prompt), results), "system_fingerprint": None}


def completion_prompts(served: ServedModel, prompt: Any) -> tuple[list[list[int]], list[str]]:
    """Token ids and echo text of each prompt (a string, strings, ids, or lists of ids)."""
    if isinstance(prompt, str):
        prompt = [prompt]
    if prompt and all(isinstance(t, int) for t in prompt):
        prompt = [prompt]
    ids, texts = [], []
    vocab = len(served.tokenizer)
    for item in prompt:
        if isinstance(item, str):
            ids.append(served.tokenizer(item).input_ids)
            texts.append(item)
        else:
            if any(t < 0 or t >= vocab for t in item):
                raise ApiError(400, f"prompt: token ids must lie in [0, {vocab})", param="prompt")
            ids.append(list(item))
            texts.append(served.tokenizer.decode(item))
    if not ids:
        raise ApiError(400, "prompt: give at least one prompt", param="prompt")
    return ids, texts


async def completions(served: ServedModel, raw: bytes) -> dict[str, Any]:
    req: CompletionRequest = parse_body(raw, CompletionRequest)
    check_request(served, req)
    prompts, texts = completion_prompts(served, req.prompt)
    n = req.n or 1
    if len(prompts) * n > MAX_ROWS_PER_REQUEST:
        raise ApiError(400, f"prompt: at most {MAX_ROWS_PER_REQUEST} prompts x n per request",
                       param="prompt")
    sampling = Sampling(
        max_new_tokens=budget(served, [len(p) for p in prompts], req.max_tokens,
                              DEFAULT_COMPLETION_TOKENS, "prompt"),
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        stop=stop_strings(req.stop),
        top_logprobs=req.logprobs,
        echo_logprobs=bool(req.echo) and req.logprobs is not None,
    )
    rows = [p for p in prompts for _ in range(n)]
    results = await served.run(rows, row_seeds(req.seed, len(rows)), sampling)
    choices = []
    for i, r in enumerate(results):
        echoed = texts[i // n] if req.echo else ""
        logprobs = None
        if req.logprobs is not None:
            logprobs = completion_logprobs(served, r.scored, len(echoed))
            if req.echo:
                scored_prompt = completion_logprobs(served, r.prompt_scored)
                logprobs = {key: scored_prompt[key] + logprobs[key] for key in logprobs}
        choices.append({"index": i, "text": echoed + r.text, "logprobs": logprobs,
                        "finish_reason": r.finish_reason})
    return {"id": f"cmpl-{secrets.token_hex(12)}", "object": "text_completion",
            "created": int(time.time()), "model": served.model_id, "choices": choices,
            "usage": usage(sum(len(p) for p in prompts), results), "system_fingerprint": None}


# --- the aiohttp application -------------------------------------------------------------------

def build_app(served: ServedModel, api_key: str | None = None) -> web.Application:
    """The aiohttp application: routes, OpenAI-shaped errors, optional bearer-token check."""

    @web.middleware
    async def openai_errors(request: web.Request, handler: Callable) -> web.StreamResponse:
        try:
            if api_key is not None:
                check_api_key(request, api_key)
            return await handler(request)
        except ApiError as exc:
            return exc.response()
        except web.HTTPException as exc:
            if exc.status == 404:
                return ApiError(404, f"unknown path {request.method} {request.path}",
                                code="not_found").response()
            return ApiError(exc.status, exc.reason).response()
        except Exception as exc:  # a bug: still answer in OpenAI's shape, which clients retry
            return ApiError(500, f"internal error: {type(exc).__name__}: {exc}",
                            kind="server_error").response()

    async def list_models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{
            "id": served.model_id, "object": "model", "created": served.created,
            "owned_by": "rlaif", "context_length": served.context_length,
        }]})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(served.batcher.snapshot())

    async def chat(request: web.Request) -> web.Response:
        return web.json_response(await chat_completions(served, await request.read()))

    async def complete(request: web.Request) -> web.Response:
        return web.json_response(await completions(served, await request.read()))

    app = web.Application(middlewares=[openai_errors], client_max_size=64 * 2**20)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/stats", stats)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", complete)
    return app


def check_api_key(request: web.Request, api_key: str) -> None:
    given = request.headers.get("Authorization", "")
    token = given[len("Bearer "):] if given.startswith("Bearer ") else ""
    if not hmac.compare_digest(token.encode(), api_key.encode()):
        raise ApiError(401, "incorrect or missing API key (send 'Authorization: Bearer KEY')",
                       code="invalid_api_key")


def base_url_for(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/v1"


async def serve_until_stopped(
    served: ServedModel, host: str, port: int, api_key: str | None,
    on_ready: Callable[[str], None], exit_with_parent: bool = False,
) -> None:
    """Listen until SIGINT/SIGTERM (or the parent process exits); call on_ready(base_url)."""
    runner = web.AppRunner(build_app(served, api_key), access_log=None, shutdown_timeout=2.0)
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
        await runner.cleanup()


async def watch_parent(stop: asyncio.Event) -> None:
    """Set ``stop`` once the process that started us is gone (we were re-parented)."""
    parent = os.getppid()
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    stop.set()


def run_server(
    model_dir: Path, model_id: str, *, host: str = "127.0.0.1", port: int = 8000,
    max_batch: int = 16, threads: int = 1, api_key: str | None = None,
    on_ready: Callable[[str], None] = print, exit_with_parent: bool = False,
) -> None:
    """Load the model, start the batcher and serve HTTP until stopped."""
    torch.set_num_threads(threads)
    model, tokenizer = load_model(model_dir)
    # The worker thread gets its own tokenizer: a Rust tokenizer is not safe to share
    # between threads that encode and decode at the same time.
    batcher = Batcher(model, copy.deepcopy(tokenizer), max_batch=max_batch)
    served = ServedModel(model, tokenizer, model_id, batcher)
    batcher.start()
    try:
        asyncio.run(serve_until_stopped(served, host, port, api_key, on_ready, exit_with_parent))
    finally:
        batcher.close()
