"""Hosted Batch API jobs: which requests each batch file holds and how far each job got.

A job row is written, together with the mark on each of its ledger rows, before the job's
file is uploaded; its file and batch ids and the batch's status are stored as soon as they are
known; and its answers go into the ledger in the same commit that marks it ingested. That order
is what lets a killed ``--hosted`` run find every job again and pay for nothing twice
(``datagen.endpoint.hosted`` drives it).
"""

from __future__ import annotations

import time
from typing import Any

from datagen.store import tables
from datagen.store.db import Database, transaction
from datagen.store.ledger import LOOKUP_CHUNK, ledger_finish
from datagen.store.rows import load_rows
from datagen.store.schema import quote

JOB_FIELDS = (
    "input_file_id", "batch_id", "output_file_id", "error_file_id", "status", "request_counts",
)
_JOBS = quote(tables.HOSTED_BATCHES)


def hosted_add_job(db: Database, job: dict[str, Any], keys: list[str]) -> None:
    """Record a new hosted batch job and mark its ledger rows as belonging to it, at once."""
    now = time.time()
    with transaction(db):
        db.execute(
            f"INSERT INTO {_JOBS} (job, label, endpoint, path, model, line_count, status, "
            "ingested, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'new', 0, ?, ?)",
            [job["job"], job["label"], job["endpoint"], job["path"], job.get("model"),
             len(keys), now, now])
        db.executemany("UPDATE requests SET batch_job = ? WHERE key = ?",
                       [(job["job"], key) for key in keys])


def hosted_update_job(db: Database, job: str, fields: dict[str, Any]) -> None:
    """Store what became known about a job (file ids, batch id, status, request counts)."""
    unknown = set(fields) - set(JOB_FIELDS)
    if unknown:
        raise ValueError(f"not a hosted job field: {sorted(unknown)}")
    sets = ", ".join(f"{quote(name)} = ?" for name in fields)
    with transaction(db):
        db.execute(f"UPDATE {_JOBS} SET {sets}, updated_at = ? WHERE job = ?",
                   [*fields.values(), time.time(), job])


def hosted_jobs(db: Database, open_only: bool = False) -> list[dict[str, Any]]:
    """Every hosted job of this database (or only those not yet ingested), oldest first."""
    equals = {"ingested": 0} if open_only else {}
    return load_rows(db, tables.HOSTED_BATCHES, order_by="created_at, rowid", **equals)


def hosted_open_jobs(db: Database, keys: list[str]) -> list[dict[str, Any]]:
    """The jobs not yet ingested that hold any of these request keys, oldest first."""
    jobs: set[str] = set()
    for start in range(0, len(keys), LOOKUP_CHUNK):
        chunk = keys[start : start + LOOKUP_CHUNK]
        marks = ",".join("?" * len(chunk))
        jobs.update(row[0] for row in db.execute(
            f"SELECT DISTINCT batch_job FROM requests WHERE key IN ({marks}) "
            "AND batch_job IS NOT NULL", chunk).fetchall())
    return [row for row in hosted_jobs(db, open_only=True) if row["job"] in jobs]


def hosted_job_requests(db: Database, job: str) -> list[tuple[str, str, str]]:
    """(key, path, canonical body) of every ledger row a job holds, in the order added."""
    return [tuple(row) for row in db.execute(
        "SELECT key, path, body FROM requests WHERE batch_job = ? ORDER BY rowid", [job])]


def hosted_ingest(db: Database, job: str, fields: dict[str, Any], rows: list[dict[str, Any]]
                  ) -> None:
    """Write a finished job's answers into the ledger and mark it ingested, in one commit."""
    with transaction(db):
        ledger_finish(db, rows)
        hosted_update_job(db, job, fields)
        db.execute(f"UPDATE {_JOBS} SET ingested = 1 WHERE job = ?", [job])
