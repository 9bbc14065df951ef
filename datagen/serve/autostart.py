"""Finding or starting the embedded model server for commands given no endpoint.

``datagen.connect.endpoint_url`` calls ``embedded_endpoint()`` when neither ``--base-url`` nor
``$OPENAI_BASE_URL`` is set. A long-running ``rlaif serve`` on loopback without an API key
records itself in the user cache (``servers/<model>.json``: pid, port, URL, model id); if that
record names a live process whose ``/v1/models`` answers with the right model, it is reused.
Otherwise a private server is started in a subprocess on a free 127.0.0.1 port for the
command's lifetime and stopped when the command ends (it also exits by itself if the command
dies without cleaning up). Either way one line on stderr says which endpoint is used.
This module never imports torch: the model runs only in the server process.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import aiohttp

from datagen.endpoint.client import ClientConfig, LLMClient, run_async
from datagen.errors import UserInputError
from datagen.jsonl import atomic_write
from datagen.processes import die_with_parent
from datagen.serve.default_model import cache_root, chosen_backend, served_model_id

READY_TIMEOUT_S = 600.0  # the first start converts the default model (about 15-30 s)
PROBE_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 15.0


@contextmanager
def embedded_endpoint(model: str = "default") -> Iterator[tuple[str, str]]:
    """Yield (base_url, model_id) of a running embedded server, starting one if needed."""
    running = find_running(model)
    if running is not None:
        print(f"rlaif: no --base-url given; using the embedded model {running[1]} already "
              f"running at {running[0]}", file=sys.stderr)
        yield running
        return
    with started_server(model) as (url, model_id):
        print(f"rlaif: no --base-url given; started the embedded model {model_id} at {url}",
              file=sys.stderr)
        yield url, model_id


def record_path(model: str) -> Path:
    """The record file of a server for this --model value ("default" or a directory)."""
    key = "default" if model == "default" else hashlib.sha256(
        str(Path(model).expanduser().resolve()).encode()).hexdigest()[:16]
    return cache_root() / "servers" / f"{key}.json"


def write_record(model: str, base_url: str, model_id: str) -> Path:
    """Record this process as the server of ``model`` (atomically)."""
    path = record_path(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"pid": os.getpid(), "port": urlsplit(base_url).port, "base_url": base_url,
            "model": model_id}
    with atomic_write(path) as handle:
        json.dump(data, handle)
    return path


def remove_record(model: str) -> None:
    """Remove the record of ``model`` if it still names this process."""
    path = record_path(model)
    if (read_record(path) or {}).get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def read_record(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def find_running(model: str) -> tuple[str, str] | None:
    """(base_url, model_id) of a recorded server that is alive and answering, else None."""
    record = read_record(record_path(model))
    if record is None or not pid_alive(record.get("pid")):
        return None
    url, model_id = record.get("base_url"), record.get("model")
    if not isinstance(url, str) or model_id != served_model_id(model):
        return None
    try:
        served = run_async(list_models(url))
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError):
        return None
    return (url, model_id) if model_id in served else None


def pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


async def list_models(base_url: str) -> list[str]:
    config = ClientConfig(base_url=base_url, timeout=PROBE_TIMEOUT_S, max_retries=0)
    async with LLMClient(config) as client:
        return await client.list_models()


@contextmanager
def started_server(model: str) -> Iterator[tuple[str, str]]:
    """Run ``python -m datagen.serve.cli`` on a free loopback port until the block ends."""
    command = [sys.executable, "-m", "datagen.serve.cli", "--model", model, "--port", "0",
               "--backend", chosen_backend(), "--no-record", "--exit-with-parent"]
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=log, text=True, preexec_fn=die_with_parent())
        try:
            url = wait_for_url(proc, log)
            yield url, served_model_id(model)
        finally:
            stop_process(proc)


def wait_for_url(proc: subprocess.Popen, log: IO[str]) -> str:
    """The base URL the server prints once it listens; UserInputError if it never does."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(READY_TIMEOUT_S)
    url = lines[0].strip() if lines else ""
    if url.startswith("http://"):
        return url
    stop_process(proc)
    log.seek(0)
    tail = [line.strip() for line in log.read().splitlines() if line.strip()]
    why = tail[-1] if tail else f"no answer within {READY_TIMEOUT_S:.0f} s"
    raise UserInputError(f"the embedded model server did not start: {why}")


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
