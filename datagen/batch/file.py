"""`rlaif batch`: run an OpenAI Batch API input file online or through the hosted Batch API.

Input and output use the Batch API file formats, so a file prepared for OpenAI's hosted batch
service runs unchanged against vLLM, Ollama, llama.cpp or `rlaif serve`, and the output can be
read by the same code. The output is faithful to the hosted format in both modes:
``request_id`` is the endpoint's ``x-request-id`` (or null), an upstream error body is kept
verbatim in ``response.body``, and ``error`` is set only when no response came back; failed
lines go to a separate file when one is named, as the hosted API writes them. The whole file
is validated before anything is sent (with ``--hosted``, against the hosted API's rules).
Every request goes through the ledger: answered requests are never sent again, so a run killed
at any moment and started again with the same arguments finishes the job, and the output file
is written once, atomically, with exactly one line per ``custom_id``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from datagen.batch.rules import NEEDED_FIELD, hosted_problems
from datagen.endpoint.client import SUPPORTED_PATHS, LLMClient, Request
from datagen.endpoint.completion import Completion
from datagen.endpoint.keys import normalise_path, request_key
from datagen.errors import UserInputError
from datagen.jsonl import note_unique, read_objects, read_utf8, write_jsonl


class BatchLine(BaseModel):
    """One validated input line."""

    line_no: int
    custom_id: str
    path: str
    body: dict[str, Any]
    sample_index: int = 0
    key: str = ""


class BatchSummary(BaseModel):
    """What a batch run did, for the closing line and the exit code."""

    total: int
    ok: int
    failed: int
    skipped: int
    from_ledger: int
    sent: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    seconds: float


def read_batch_file(
    path: str | Path, default_model: str | None = None, require_model: bool = True,
    hosted: bool = False,
) -> list[BatchLine]:
    """Parse and validate a Batch API input file; raise UserInputError naming file and line.

    A body without ``model`` gets ``default_model``; with neither, the line is an error
    unless ``require_model`` is false (the model is filled in later by ``fill_model``).
    With ``hosted`` the file must follow the hosted API's rules (``rules.hosted_problems``)
    except its per-file size limits: larger inputs are split into several batches."""
    path = Path(path)
    text = read_utf8(path, expected="a JSONL file", reject_binary=True)
    if hosted:
        problems = hosted_problems(path, text, file_limits=False)
        if problems:
            more = f" ({len(problems)} problems; --check-hosted lists them)" \
                if len(problems) > 1 else ""
            raise UserInputError(problems[0] + more)
    lines: list[BatchLine] = []
    seen_ids: dict[str, int] = {}
    for line_no, where, obj in read_objects(
        path, text, empty_message=f"{path}: empty file, expected one JSON request per line"
    ):
        line = _parse_line(line_no, where, obj, default_model, require_model)
        note_unique(seen_ids, line.custom_id, line_no, where, what="custom_id")
        lines.append(line)
    _assign_keys(lines)
    return lines


def _parse_line(
    line_no: int, where: str, obj: dict[str, Any], default_model: str | None,
    require_model: bool,
) -> BatchLine:
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise UserInputError(f"{where}: missing custom_id (a non-empty string)")
    method = obj.get("method", "POST")
    if method != "POST":
        raise UserInputError(f"{where}: method {method!r} is not supported (only POST)")
    url = obj.get("url")
    if not isinstance(url, str) or normalise_path(url) not in SUPPORTED_PATHS:
        raise UserInputError(
            f"{where}: url {url!r} is not supported (use one of "
            f"{', '.join('/v1' + p for p in SUPPORTED_PATHS)})")
    body = obj.get("body")
    if not isinstance(body, dict):
        raise UserInputError(f"{where}: missing body (a JSON object)")
    if "model" not in body:
        if default_model:
            body = {"model": default_model, **body}
        elif require_model:
            raise UserInputError(f"{where}: body has no model and no --model was given")
    needed = NEEDED_FIELD["/v1" + normalise_path(url)]
    if needed not in body:
        raise UserInputError(f"{where}: body has no {needed!r} for {url}")
    if body.get("stream"):
        raise UserInputError(f"{where}: body.stream is not supported in batch files")
    return BatchLine(line_no=line_no, custom_id=custom_id, path=normalise_path(url), body=body)


def fill_model(lines: list[BatchLine], model: str) -> None:
    """Give every body without a model this one (the endpoint's), and key the lines again."""
    for line in lines:
        if "model" not in line.body:
            line.body = {"model": model, **line.body}
    _assign_keys(lines)


def _assign_keys(lines: list[BatchLine]) -> None:
    """Key each line; identical requests get successive sample indices, so each is sent."""
    occurrences: dict[str, int] = {}
    for line in lines:
        base = request_key(line.path, line.body, 0)
        line.sample_index = occurrences.get(base, 0)
        occurrences[base] = line.sample_index + 1
        line.key = base if line.sample_index == 0 else request_key(
            line.path, line.body, line.sample_index)


async def run_batch(
    client: LLMClient,
    lines: list[BatchLine],
    progress: Callable[[LLMClient, int], None] | None = None,
) -> list[Completion]:
    """Answer every line: from the ledger when it completed before, otherwise by sending it."""
    requests = [Request(line.path, line.body, line.sample_index) for line in lines]
    ticker = asyncio.create_task(_tick(client, len(lines), progress)) if progress else None
    try:
        return await client.call_many(requests)
    finally:
        if ticker:
            ticker.cancel()
            progress(client, len(lines))


async def _tick(client: LLMClient, total: int, progress: Callable[[LLMClient, int], None]) -> None:
    while True:
        progress(client, total)
        await asyncio.sleep(0.5)


def output_line(line: BatchLine, result: Completion) -> dict[str, Any]:
    """One Batch API output line for an input line and its outcome, as the hosted API writes
    it: a response whenever the endpoint answered (its error body verbatim), else an error."""
    out: dict[str, Any] = {"id": f"batch_req_{result.key[:24]}", "custom_id": line.custom_id}
    if result.status_code:
        out["response"] = {"status_code": result.status_code, "request_id": result.request_id,
                           "body": result.body if result.ok else result.error_body}
        out["error"] = None
        return out
    code = result.error_code or (
        "budget_exhausted" if result.status == "skipped" else "request_failed")
    out["response"] = None
    out["error"] = {"code": code, "message": result.error}
    return out


def write_output(path: str | Path, lines: list[BatchLine], results: list[Completion],
                 errors: str | Path | None = None) -> None:
    """Write the output file atomically (a temporary file renamed over the target). With
    ``errors``, lines that did not succeed go there instead, as the hosted API splits them."""
    pairs = list(zip(lines, results, strict=True))
    if errors is None:
        write_jsonl(path, (output_line(line, result) for line, result in pairs))
        return
    write_jsonl(errors, (output_line(line, r) for line, r in pairs if not r.ok))
    write_jsonl(path, (output_line(line, r) for line, r in pairs if r.ok))


def summarise(results: list[Completion], client: LLMClient, started: float) -> BatchSummary:
    """Counts, tokens and cost of a finished run."""
    stats = client.stats
    return BatchSummary(
        total=len(results),
        ok=sum(r.ok for r in results),
        failed=sum(r.status == "failed" for r in results),
        skipped=sum(r.status == "skipped" for r in results),
        from_ledger=stats.from_ledger,
        sent=stats.sent,
        prompt_tokens=stats.prompt_tokens,
        completion_tokens=stats.completion_tokens,
        cost_usd=stats.cost_usd,
        seconds=time.monotonic() - started,
    )
