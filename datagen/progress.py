"""Live progress of a command's model requests, drawn with rich from the client's counters.

Every command that calls an endpoint takes ``--progress`` (with the endpoint options):
``auto`` draws a live bar on a terminal and nothing otherwise (the command's one summary line
is then all there is); ``bar`` draws it anyway; ``jsonl`` writes one JSON object a second to
stderr for machines; ``none`` draws nothing. The display polls the client's ``Stats`` a few
times a second, so generators and judges need no progress code of their own: done, failed and
from-the-ledger counts, the request rate, tokens and cost, and an ETA once the number of
requests scheduled so far is known (``Stats.scheduled``; a generator that schedules round by
round shows the ETA of what it has scheduled).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TextIO

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeRemainingColumn,
)

MODES = ("auto", "bar", "jsonl", "none")


def resolve_mode(mode: str | None, stream: TextIO) -> str:
    """``auto`` becomes ``bar`` on a terminal and ``none`` elsewhere."""
    mode = mode or "auto"
    if mode == "auto":
        return "bar" if stream.isatty() else "none"
    return mode


def counts(stats: Any, started: float) -> dict[str, Any]:
    """The numbers every display shows, from a client's ``Stats``."""
    done = stats.ok + stats.failed + stats.skipped
    total = getattr(stats, "scheduled", 0) or None
    elapsed = max(time.monotonic() - started, 1e-9)
    rate = stats.sent / elapsed if stats.sent else 0.0
    remaining = (total - done) if total else None
    eta = remaining / (done / elapsed) if remaining is not None and done else None
    return {"done": done, "total": total, "ok": stats.ok, "failed": stats.failed,
            "skipped": stats.skipped, "from_ledger": stats.from_ledger, "sent": stats.sent,
            "tokens": stats.prompt_tokens + stats.completion_tokens,
            "cost_usd": round(stats.cost_usd, 6), "rate": round(rate, 2),
            "eta_s": round(eta, 1) if eta is not None else None,
            "elapsed_s": round(elapsed, 1)}


class BarDisplay:
    """A rich progress bar on stderr."""

    def __init__(self, label: str, stream: TextIO) -> None:
        console = Console(file=stream, force_terminal=True)
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed, {task.fields[from_ledger]} from ledger"),
            TextColumn("{task.fields[tokens]:,} tok ${task.fields[cost_usd]:.4f}"),
            TextColumn("{task.fields[rate]:.1f} req/s"), TimeRemainingColumn(),
            console=console, transient=False)
        self.task = self.progress.add_task(label, total=None, **self._fields({}))
        self.progress.start()

    @staticmethod
    def _fields(now: dict[str, Any]) -> dict[str, Any]:
        return {k: now.get(k, 0) or 0 for k in
                ("failed", "from_ledger", "tokens", "cost_usd", "rate")}

    def show(self, now: dict[str, Any]) -> None:
        self.progress.update(self.task, completed=now["done"], total=now["total"],
                             **self._fields(now))

    def close(self, now: dict[str, Any]) -> None:
        self.show(now)
        self.progress.stop()


class JsonlDisplay:
    """One JSON object a second on stderr: ``{"event": "progress", ...}``, then ``done``."""

    def __init__(self, label: str, stream: TextIO) -> None:
        self.label, self.stream, self.last = label, stream, 0.0

    def show(self, now: dict[str, Any], event: str = "progress") -> None:
        if event == "progress" and time.monotonic() - self.last < 1.0:
            return
        self.last = time.monotonic()
        self.stream.write(json.dumps({"event": event, "command": self.label, **now}) + "\n")
        self.stream.flush()

    def close(self, now: dict[str, Any]) -> None:
        self.show(now, event="done")


@asynccontextmanager
async def track(client: Any, mode: str | None, label: str | None = None,
                stream: TextIO | None = None, interval: float = 0.2) -> AsyncIterator[None]:
    """Show the progress of ``client``'s requests while the block runs (see module doc)."""
    stream = stream or sys.stderr
    mode = resolve_mode(mode, stream)
    if mode == "none":
        yield
        return
    ctx = click.get_current_context(silent=True)
    label = label or (ctx.command_path if ctx is not None else "rlaif")
    display: BarDisplay | JsonlDisplay = (BarDisplay(label, stream) if mode == "bar" else
                                          JsonlDisplay(label, stream))
    started = time.monotonic()

    async def tick() -> None:
        while True:
            display.show(counts(client.stats, started))
            await asyncio.sleep(interval)

    ticker = asyncio.create_task(tick())
    try:
        yield
    finally:
        ticker.cancel()
        display.close(counts(client.stats, started))
