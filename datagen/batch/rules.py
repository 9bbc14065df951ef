"""The hosted Batch API's rules for an input file, checked here so nothing is sent in vain.

Online, `rlaif batch` is lenient: a line without ``model`` takes ``--model``, ``url`` may omit
``/v1``, and one file may mix endpoints and models. OpenAI's hosted Batch API rejects all of
that, and a file it rejects wastes an upload and a wait. ``hosted_problems`` lists every line
the hosted API would refuse (each as ``FILE:LINE: what``), without stopping at the first: it
backs ``rlaif batch --check-hosted`` and the validation that ``--hosted`` runs before anything
is uploaded. The per-file limits (50,000 lines, 200 MB) are problems for a file meant for the
hosted API as it is; ``--hosted`` itself splits larger inputs into several batches.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datagen.endpoint.hosted_options import MAX_BYTES, MAX_LINES
from datagen.jsonl import numbered_lines

HOSTED_URLS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")
NEEDED_FIELD = {"/v1/chat/completions": "messages", "/v1/completions": "prompt",
                "/v1/embeddings": "input", "/v1/responses": "input"}


def hosted_problems(path: Path, text: str, *, file_limits: bool = True) -> list[str]:
    """Every reason the hosted Batch API would reject lines of this file, in line order."""
    problems: list[str] = []
    seen: dict[str, int] = {}
    first: dict[str, tuple[Any, int]] = {}
    count = 0
    for number, where, raw in numbered_lines(path, text):
        count += 1
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            problems.append(f"{where}: not valid JSON ({exc.msg})")
            continue
        if not isinstance(obj, dict):
            problems.append(f"{where}: expected a JSON object")
            continue
        problems += [f"{where}: {p}" for p in _line_problems(obj, number, seen, first)]
    if count == 0:
        problems.append(f"{path}: empty file, expected one JSON request per line")
    if file_limits and count > MAX_LINES:
        problems.append(f"{path}: {count:,} requests; a hosted batch file holds at most "
                        f"{MAX_LINES:,} (rlaif batch --hosted splits it)")
    size = len(text.encode())
    if file_limits and size > MAX_BYTES:
        problems.append(f"{path}: {size / 2**20:.0f} MB; a hosted batch file holds at most "
                        f"{MAX_BYTES // 2**20} MB (rlaif batch --hosted splits it)")
    return problems


def _line_problems(obj: dict[str, Any], number: int, seen: dict[str, int],
                   first: dict[str, tuple[Any, int]]) -> list[str]:
    out = []
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        out.append("missing custom_id (a non-empty string)")
    elif custom_id in seen:
        out.append(f"duplicate custom_id {custom_id!r} (first on line {seen[custom_id]})")
    else:
        seen[custom_id] = number
    if obj.get("method") != "POST":
        out.append(f"method must be \"POST\", got {obj.get('method')!r}")
    url = obj.get("url")
    if url not in HOSTED_URLS:
        out.append(f"url {url!r} is not one of {', '.join(HOSTED_URLS)}")
    body = obj.get("body")
    if not isinstance(body, dict):
        return [*out, "missing body (a JSON object)"]
    model = body.get("model")
    if not isinstance(model, str) or not model:
        out.append("body has no model (the hosted API needs it on every line)")
    if url in NEEDED_FIELD and NEEDED_FIELD[url] not in body:
        out.append(f"body has no {NEEDED_FIELD[url]!r} for {url}")
    if body.get("stream"):
        out.append("body.stream is not allowed in a batch")
    for name, value in (("url", url), ("model", model)):
        if value is None or not isinstance(value, str):
            continue
        if name not in first:
            first[name] = (value, number)
        elif first[name][0] != value:
            out.append(f"{name} {value!r} differs from line {first[name][1]}'s "
                       f"{first[name][0]!r} (one {name} per batch file)")
    return out
