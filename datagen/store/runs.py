"""Runs: one row per generator run (its arguments, seed, status and summary counts).

A run's id is derived from its arguments by the generator, so the same command restarts the
same run; ``start_run`` marks it running again and ``finish_run`` records how it ended.
"""

from __future__ import annotations

import json
import time
from typing import Any

from datagen.store.db import Database, transaction
from datagen.store.rows import load_rows
from datagen.store.tables import RUNS


def start_run(db: Database, run_id: str, kind: str, args: dict, seed: int | None) -> None:
    """Record the start of a run (or restart it: same id, same arguments)."""
    with transaction(db):
        db.execute(
            "INSERT INTO runs (id, kind, args, seed, status, started_at) VALUES (?, ?, ?, ?, "
            "'running', ?) ON CONFLICT(id) DO UPDATE SET status = 'running'",
            [run_id, kind, json.dumps(args, sort_keys=True, default=str), seed, time.time()],
        )


def finish_run(db: Database, run_id: str, status: str, summary: dict) -> None:
    """Record the end of a run with its summary counts."""
    with transaction(db):
        db.execute(
            "UPDATE runs SET status = ?, summary = ?, finished_at = ? WHERE id = ?",
            [status, json.dumps(summary, sort_keys=True, default=str), time.time(), run_id],
        )


def get_run(db: Database, run_id: str) -> dict[str, Any] | None:
    """One run row, with args and summary decoded, or None."""
    rows = load_rows(db, RUNS, id=run_id)
    if not rows:
        return None
    row = rows[0]
    row["args"] = json.loads(row["args"])
    row["summary"] = json.loads(row["summary"]) if row["summary"] else None
    return row
