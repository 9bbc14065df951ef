"""The request ledger: every model call, keyed by a hash of its canonical body.

A request is committed as ``pending`` before it is sent and completed (``ok`` or ``failed``, with
the response, usage and timing) after, so a rerun answers finished requests from the database
and never pays twice. Many workers (processes, machines) may share one ledger: a worker sends a
request only while it holds the request's lease (``worker_id``, ``lease_until``), which it takes
in ``ledger_claim``, keeps alive with ``ledger_renew`` and gives up when it finishes the request
or stops. A worker that dies stops renewing, so its leases expire and another worker sends those
requests again; a lease held by a process of this machine that has exited is free at once.
Completed (``ok``) rows are never claimed. The endpoint client (``datagen.endpoint.client``) is
the only writer.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from datagen.store import tables
from datagen.store.db import Database, transaction
from datagen.store.schema import current_tables

LEDGER_COLUMNS = tuple(current_tables()[tables.REQUESTS].column_names())
LOOKUP_CHUNK = 500


def _chunks(keys: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(keys), LOOKUP_CHUNK):
        yield keys[start : start + LOOKUP_CHUNK]


def ledger_lookup(db: Database, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Return the ledger rows for these request keys (missing keys are absent)."""
    found: dict[str, dict[str, Any]] = {}
    cols = ", ".join(f'"{c}"' for c in LEDGER_COLUMNS)
    for chunk in _chunks(list(keys)):
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


# --- leases ------------------------------------------------------------------------------------


def new_worker_id() -> str:
    """A worker id that names this machine and process: ``host/pid/nonce``."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


def worker_gone(worker: str | None) -> bool:
    """Whether a worker id names a process of this machine that has exited."""
    host, _, rest = (worker or "").partition("/")
    pid = rest.partition("/")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:  # a killed child its parent has not reaped yet is a zombie: gone too
        return stat.read_text().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def ledger_claim(
    db: Database, rows: Iterable[dict[str, Any]], worker: str, lease_s: float
) -> set[str]:
    """Take the lease of these requests for ``worker``: new requests are recorded as pending,
    unfinished ones are taken when nobody holds them, their lease expired or its holder is a
    process of this machine that has exited. Returns the keys the worker now holds; the others
    are completed or held by a live worker."""
    rows = list(rows)
    if not rows:
        return set()
    now = time.time()
    until = now + lease_s
    with transaction(db):
        db.executemany(
            "INSERT INTO requests (key, path, model, body, sample_index, status, created_at, "
            "updated_at, worker_id, lease_until) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            [(r["key"], r["path"], r.get("model"), r["body"], r.get("sample_index", 0), now, now,
              worker, until) for r in rows])
        keys = list(dict.fromkeys(r["key"] for r in rows))
        free = []
        for chunk in _chunks(keys):
            marks = ",".join("?" * len(chunk))
            for key, holder, lease in db.execute(
                    f"SELECT key, worker_id, lease_until FROM requests WHERE key IN ({marks}) "
                    "AND status <> 'ok'", chunk).fetchall():
                if lease is None or lease < now or holder == worker or worker_gone(holder):
                    free.append((worker, until, key, now, holder or worker))
        db.executemany(
            "UPDATE requests SET worker_id = ?, lease_until = ? WHERE key = ? AND status <> 'ok' "
            "AND (lease_until IS NULL OR lease_until < ? OR worker_id = ?)", free)
        held: set[str] = set()
        for chunk in _chunks(keys):
            marks = ",".join("?" * len(chunk))
            held.update(row[0] for row in db.execute(
                f"SELECT key FROM requests WHERE key IN ({marks}) AND worker_id = ? "
                "AND lease_until IS NOT NULL AND status <> 'ok'", [*chunk, worker]))
    return held


def ledger_renew(db: Database, worker: str, lease_s: float) -> int:
    """Extend every lease ``worker`` holds; returns how many."""
    with transaction(db):
        return db.executemany(
            "UPDATE requests SET lease_until = ? WHERE worker_id = ? AND lease_until IS NOT NULL",
            [(time.time() + lease_s, worker)])


def ledger_release(db: Database, worker: str) -> int:
    """Give up every lease ``worker`` still holds (requests it will not send after all)."""
    with transaction(db):
        return db.executemany(
            "UPDATE requests SET lease_until = NULL WHERE worker_id = ? "
            "AND lease_until IS NOT NULL", [(worker,)])


def ledger_finish(db: Database, rows: Iterable[dict[str, Any]]) -> None:
    """Complete requests with their outcome (status ok or failed, response, usage, timing) and
    end their lease; a request another worker completed first keeps its answer."""
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
            "updated_at = ?, lease_until = NULL WHERE key = ? AND status <> 'ok'",
            values,
        )


def ledger_totals(db: Database) -> dict[str, Any]:
    """Counts per status and summed tokens and cost over the whole ledger."""
    out: dict[str, Any] = {"pending": 0, "ok": 0, "failed": 0}
    for status, count in db.execute("SELECT status, count(*) FROM requests GROUP BY status"):
        out[status] = count
    row = db.execute(
        "SELECT CAST(coalesce(sum(prompt_tokens), 0) AS BIGINT), "
        "CAST(coalesce(sum(completion_tokens), 0) AS BIGINT), "
        "coalesce(sum(cost_usd), 0) FROM requests"
    ).fetchone()
    out.update(prompt_tokens=row[0], completion_tokens=row[1], cost_usd=row[2])
    return out
