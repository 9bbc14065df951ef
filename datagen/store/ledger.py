"""The request ledger: every model call, keyed by a hash of its canonical body.

A request is committed as ``pending`` before it is sent and completed (``ok`` or ``failed``, with
the response, usage and timing) after, so a rerun answers finished requests from the database
and never pays twice. The endpoint client (``datagen.endpoint.client``) is the only writer.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from datagen.store import tables
from datagen.store.db import Database, transaction
from datagen.store.schema import current_tables

LEDGER_COLUMNS = tuple(current_tables()[tables.REQUESTS].column_names())
LOOKUP_CHUNK = 500


def ledger_lookup(db: Database, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Return the ledger rows for these request keys (missing keys are absent)."""
    keys = list(keys)
    found: dict[str, dict[str, Any]] = {}
    cols = ", ".join(f'"{c}"' for c in LEDGER_COLUMNS)
    for start in range(0, len(keys), LOOKUP_CHUNK):
        chunk = keys[start : start + LOOKUP_CHUNK]
        marks = ",".join("?" * len(chunk))
        cursor = db.execute(f"SELECT {cols} FROM requests WHERE key IN ({marks})", chunk)
        for row in cursor.fetchall():
            found[row[0]] = dict(zip(LEDGER_COLUMNS, row, strict=True))
    return found


def ledger_add_pending(db: Database, rows: Iterable[dict[str, Any]]) -> None:
    """Record requests as pending before they are sent; existing rows are left as they are."""
    now = time.time()
    values = [
        (r["key"], r["path"], r.get("model"), r["body"], r.get("sample_index", 0), now, now)
        for r in rows
    ]
    if not values:
        return
    with transaction(db):
        db.executemany(
            "INSERT INTO requests "
            "(key, path, model, body, sample_index, status, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, 'pending', ?, ?) ON CONFLICT DO NOTHING",
            values,
        )


def ledger_finish(db: Database, rows: Iterable[dict[str, Any]]) -> None:
    """Complete requests with their outcome (status ok or failed, response, usage, timing)."""
    now = time.time()
    values = [
        (
            r["status"], r.get("status_code"), r.get("response"), r.get("error"),
            r.get("attempts", 0), r.get("prompt_tokens"), r.get("completion_tokens"),
            r.get("cost_usd"), r.get("latency_ms"), r.get("endpoint"), r.get("via", "online"),
            r.get("batch_id"), r.get("request_id"), now, r["key"],
        )
        for r in rows
    ]
    if not values:
        return
    with transaction(db):
        db.executemany(
            "UPDATE requests SET status = ?, status_code = ?, response = ?, error = ?, "
            "attempts = ?, prompt_tokens = ?, completion_tokens = ?, cost_usd = ?, "
            "latency_ms = ?, endpoint = ?, via = ?, batch_id = ?, request_id = ?, "
            "updated_at = ? WHERE key = ?",
            values,
        )


def ledger_totals(db: Database) -> dict[str, Any]:
    """Counts per status and summed tokens and cost over the whole ledger."""
    out: dict[str, Any] = {"pending": 0, "ok": 0, "failed": 0}
    for status, count in db.execute("SELECT status, count(*) FROM requests GROUP BY status"):
        out[status] = count
    row = db.execute(
        "SELECT coalesce(sum(prompt_tokens),0), coalesce(sum(completion_tokens),0), "
        "coalesce(sum(cost_usd),0) FROM requests"
    ).fetchone()
    out.update(prompt_tokens=row[0], completion_tokens=row[1], cost_usd=row[2])
    return out
