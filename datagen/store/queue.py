"""The service's job queue: which service process runs which job, through leases in the db.

`rlaif service` may run as several processes (on several machines) on one database. A process
takes a job with ``job_claim``: the oldest unfinished job that nobody holds, whose holder's lease
expired, or whose holder is a process of this machine that has exited. On PostgreSQL the
candidates are read ``FOR UPDATE SKIP LOCKED``, so two processes claiming at once never take the
same job and never wait for each other; on SQLite the write transaction (``BEGIN IMMEDIATE``)
serialises claims. The holder renews its leases while its jobs run (``job_renew``, which also
tells it which of them someone asked to cancel, and which it lost to another worker after a
stall longer than the lease), writes a job's progress only while it holds
the job (``job_update``), and gives its jobs back when it stops (``job_release``). A process
that dies stops renewing: its jobs are taken over once their leases expire, and the job's
requests are not paid twice because the request ledger has leases of its own.
"""

from __future__ import annotations

import time
from typing import Any

from datagen.store.db import Database, transaction
from datagen.store.ledger import worker_gone
from datagen.store.rows import declared_table, load_rows
from datagen.store.schema import quote
from datagen.store.tables import JOBS

CLAIM_WINDOW = 64  # unfinished jobs looked at (and locked) per claim
UNFINISHED = "status IN ('queued', 'running')"


def _job(db: Database, job_id: str) -> dict[str, Any] | None:
    rows = load_rows(db, JOBS, id=job_id)
    return rows[0] if rows else None


def _for_update(db: Database) -> str:
    return " FOR UPDATE SKIP LOCKED" if db.dialect == "postgresql" else ""


def job_claim(db: Database, worker: str, lease_s: float) -> dict[str, Any] | None:
    """Take the oldest unfinished job that is free (no live lease) for ``worker``, with a lease
    of ``lease_s`` seconds; returns the job row, or None when there is none to take. A worker
    never takes back a job it holds (one of its own tasks runs it)."""
    now = time.time()
    with transaction(db):
        rows = db.execute(
            f"SELECT id, worker_id, lease_until FROM {quote(JOBS)} WHERE {UNFINISHED} "
            f"ORDER BY created_at, rowid LIMIT {CLAIM_WINDOW}{_for_update(db)}").fetchall()
        for job_id, holder, lease in rows:
            if holder != worker and (lease is None or lease < now or worker_gone(holder)):
                db.execute(f"UPDATE {quote(JOBS)} SET worker_id = ?, lease_until = ? "
                           "WHERE id = ?", [worker, now + lease_s, job_id])
                return _job(db, job_id)
    return None


def job_renew(db: Database, worker: str, lease_s: float) -> dict[str, bool]:
    """Extend the leases of the jobs ``worker`` holds; returns each held job's id and whether
    someone asked to cancel it (a job missing here was taken over by another worker)."""
    with transaction(db):
        db.execute(f"UPDATE {quote(JOBS)} SET lease_until = ? WHERE worker_id = ? "
                   f"AND lease_until IS NOT NULL AND {UNFINISHED}",
                   [time.time() + lease_s, worker])
        return {row[0]: bool(row[1]) for row in db.execute(
            f"SELECT id, cancel_requested FROM {quote(JOBS)} WHERE worker_id = ? "
            f"AND lease_until IS NOT NULL AND {UNFINISHED}", [worker])}


def job_update(db: Database, job_id: str, fields: dict[str, Any],
               worker: str | None = None) -> bool:
    """Set some columns of a job (and ``updated_at``); with ``worker``, only while that worker
    holds the job. Returns whether the job was changed."""
    known = set(declared_table(JOBS).column_names())
    unknown = sorted(set(fields) - known)
    if unknown:
        raise KeyError(f"{JOBS} has no column {', '.join(unknown)}")
    values = {**fields, "updated_at": time.time()}
    sets = ", ".join(f"{quote(name)} = ?" for name in values)
    params = [int(v) if isinstance(v, bool) else v for v in values.values()]
    where = "id = ?" + (" AND worker_id = ? AND lease_until IS NOT NULL" if worker else "")
    with transaction(db):
        cursor = db.execute(f"UPDATE {quote(JOBS)} SET {sets} WHERE {where}",
                            [*params, job_id, *([worker] if worker else [])])
        return cursor.rowcount > 0


def job_cancel(db: Database, job_id: str) -> dict[str, Any] | None:
    """Ask for a job to be cancelled: a queued job nobody holds is cancelled at once, one that
    is held or running is marked and its holder stops it. Returns the job row after."""
    now = time.time()
    with transaction(db):
        lock = " FOR UPDATE" if db.dialect == "postgresql" else ""
        row = db.execute(f"SELECT status, worker_id, lease_until FROM {quote(JOBS)} "
                         f"WHERE id = ?{lock}", [job_id]).fetchone()
        if row is None or row[0] not in ("queued", "running"):
            return _job(db, job_id)
        status, holder, lease = row
        free = lease is None or lease < now or worker_gone(holder)
        if status == "queued" and free:
            job_update(db, job_id, {"status": "cancelled", "cancel_requested": True,
                                    "finished_at": now, "worker_id": None,
                                    "lease_until": None})
        else:
            job_update(db, job_id, {"cancel_requested": True})
        return _job(db, job_id)


def job_release(db: Database, worker: str) -> int:
    """Give back every unfinished job ``worker`` holds, queued again for any process (a
    service that stops); returns how many."""
    with transaction(db):
        return db.execute(
            f"UPDATE {quote(JOBS)} SET status = 'queued', pid = NULL, worker_id = NULL, "
            f"lease_until = NULL, updated_at = ? WHERE worker_id = ? AND {UNFINISHED}",
            [time.time(), worker]).rowcount
