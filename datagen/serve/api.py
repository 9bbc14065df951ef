"""The OpenAI request side of ``rlaif serve``: bodies, validation, prompts and token budgets.

Everything here is CPU work on untrusted input (JSON decoding, pydantic validation, chat
templating, tokenization), so the server runs it on a worker thread, never on the event loop:
a large body then delays only itself. ``prepare`` turns a raw body into a ``Prepared`` request
(the rows' token ids and seeds, one ``Sampling``, what the reply must contain) or raises an
``ApiError`` with OpenAI's error shape. The request's cost, rows x (prompt + new tokens), is
checked against ``Limits.max_request_tokens`` here, before any decoding starts.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from datagen.serve.jobs import Sampling

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

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status)


# --- request bodies ----------------------------------------------------------------------------

class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class ContentPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None


class StreamOptions(_Body):
    include_usage: bool | None = None


class _GenerationRequest(_Body):
    model: str
    max_tokens: int | None = Field(default=None, ge=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int | None = Field(default=None, ge=1, le=MAX_ROWS_PER_REQUEST)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None


class ChatRequest(_GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)


class CompletionRequest(_GenerationRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool | None = None
    logprobs: int | None = Field(default=None, ge=0, le=20)


@dataclass
class Prepared:
    """A validated request, ready to decode: one prompt and seed per row."""

    kind: Literal["chat", "completion"]
    prompts: list[list[int]]  # one per row (prompt x n)
    seeds: list[int]
    sampling: Sampling
    n: int
    prompt_tokens: int  # for usage: each distinct prompt counted once
    logprobs: bool
    stream: bool
    include_usage: bool
    echo_texts: list[str] | None = None  # completions with echo: each prompt's text

    @property
    def weight(self) -> int:
        """Tokens this request may hold in flight: rows x (prompt + new tokens)."""
        return sum(len(p) + self.sampling.max_new_tokens for p in self.prompts)


@dataclass(frozen=True)
class ModelInfo:
    """What request preparation needs to know about the served model."""

    model_id: str
    context_length: int
    tokenizer: Any


# --- preparation -------------------------------------------------------------------------------

def parse_body(raw: bytes, schema: type[_Body]) -> Any:
    """Decode and validate a JSON request body, or raise a 400 ApiError."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
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


def check_model(info: ModelInfo, req: _GenerationRequest) -> None:
    if req.model not in (info.model_id, DEFAULT_MODEL_ALIAS):
        raise ApiError(400, f"model {req.model!r} is not served here; this server serves "
                            f"{info.model_id!r}", param="model", code="model_not_found")


def new_tokens(info: ModelInfo, prompts: list[list[int]], requested: int | None,
               default: int | None, max_request_tokens: int, param: str) -> int:
    """New tokens per row: the request's max, checked against the model's context and the
    per-request token budget (an unset max is capped to fit both)."""
    longest = max(len(p) for p in prompts)
    if min(len(p) for p in prompts) == 0:
        raise ApiError(400, f"{param}: the prompt is empty", param=param)
    room = info.context_length - longest
    if requested is None:
        fair = (max_request_tokens - sum(len(p) for p in prompts)) // len(prompts)
        wanted = max(min(default or room, room, fair), 0)
    else:
        wanted = requested
    cost = sum(len(p) + wanted for p in prompts)
    if cost > max_request_tokens:
        raise ApiError(
            400, f"this request needs {cost} tokens (rows x (prompt + max_tokens) = "
                 f"{len(prompts)} x ({longest} + {wanted}) at most), above this server's limit "
                 f"of {max_request_tokens} per request; lower n or max_tokens",
            param="max_tokens" if requested is not None else param,
            code="request_too_large")
    if wanted > room or room <= 0:
        raise ApiError(
            400, f"this model's context is {info.context_length} tokens, but the request "
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


def chat_prompt(tokenizer: Any, messages: list[ChatMessage]) -> list[int]:
    """Token ids of the conversation in the model's chat template, ready for the reply."""
    turns = []
    for message in messages:
        content = message.content
        if isinstance(content, list):
            content = "\n".join(part.text for part in content)
        role = "system" if message.role == "developer" else message.role
        turns.append({"role": role, "content": content or ""})
    try:
        text = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
    except Exception as exc:  # a template that rejects these roles, or a model without one
        raise ApiError(400, f"messages: the chat template failed: {exc}",
                       param="messages") from None
    return tokenizer(text, add_special_tokens=False).input_ids


def stream_flags(req: _GenerationRequest) -> tuple[bool, bool]:
    """(stream, include_usage); stream_options without stream is an error, as at OpenAI."""
    if req.stream_options is not None and not req.stream:
        raise ApiError(400, "stream_options: only allowed when stream is true",
                       param="stream_options")
    usage = bool(req.stream_options and req.stream_options.include_usage)
    return bool(req.stream), usage


def prepare_chat(info: ModelInfo, raw: bytes, max_request_tokens: int) -> Prepared:
    """Validate and tokenize a /v1/chat/completions body."""
    req: ChatRequest = parse_body(raw, ChatRequest)
    check_model(info, req)
    if req.top_logprobs is not None and not req.logprobs:
        raise ApiError(400, "top_logprobs: requires logprobs to be true", param="top_logprobs")
    stream, include_usage = stream_flags(req)
    prompt = chat_prompt(info.tokenizer, req.messages)
    n = req.n or 1
    requested = (req.max_completion_tokens if req.max_completion_tokens is not None
                 else req.max_tokens)
    rows = [prompt] * n
    sampling = Sampling(
        max_new_tokens=new_tokens(info, rows, requested, None, max_request_tokens, "messages"),
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        stop=stop_strings(req.stop),
        top_logprobs=(req.top_logprobs or 0) if req.logprobs else None,
        seeded=req.seed is not None,
    )
    return Prepared("chat", rows, row_seeds(req.seed, n), sampling, n, len(prompt),
                    bool(req.logprobs), stream, include_usage)


def completion_prompts(info: ModelInfo, prompt: Any) -> tuple[list[list[int]], list[str]]:
    """Token ids and echo text of each prompt (a string, strings, ids, or lists of ids)."""
    if isinstance(prompt, str):
        prompt = [prompt]
    if prompt and all(isinstance(t, int) for t in prompt):
        prompt = [prompt]
    ids, texts = [], []
    tokenizer = info.tokenizer
    vocab = len(tokenizer)
    for item in prompt:
        if isinstance(item, str):
            ids.append(tokenizer(item).input_ids)
            texts.append(item)
        else:
            if any(t < 0 or t >= vocab for t in item):
                raise ApiError(400, f"prompt: token ids must lie in [0, {vocab})", param="prompt")
            ids.append(list(item))
            texts.append(tokenizer.decode(item))
    if not ids:
        raise ApiError(400, "prompt: give at least one prompt", param="prompt")
    return ids, texts


def prepare_completion(info: ModelInfo, raw: bytes, max_request_tokens: int) -> Prepared:
    """Validate and tokenize a /v1/completions body."""
    req: CompletionRequest = parse_body(raw, CompletionRequest)
    check_model(info, req)
    stream, include_usage = stream_flags(req)
    prompts, texts = completion_prompts(info, req.prompt)
    n = req.n or 1
    if len(prompts) * n > MAX_ROWS_PER_REQUEST:
        raise ApiError(400, f"prompt: at most {MAX_ROWS_PER_REQUEST} prompts x n per request",
                       param="prompt")
    rows = [p for p in prompts for _ in range(n)]
    sampling = Sampling(
        max_new_tokens=new_tokens(info, rows, req.max_tokens, DEFAULT_COMPLETION_TOKENS,
                                  max_request_tokens, "prompt"),
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        stop=stop_strings(req.stop),
        top_logprobs=req.logprobs,
        echo_logprobs=bool(req.echo) and req.logprobs is not None,
        seeded=req.seed is not None,
    )
    return Prepared("completion", rows, row_seeds(req.seed, len(rows)), sampling, n,
                    sum(len(p) for p in prompts), req.logprobs is not None, stream,
                    include_usage, echo_texts=texts if req.echo else None)
