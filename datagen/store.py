"""The project database: the only module that speaks SQL.

One SQLite file holds the request ledger (every model call, keyed by a hash of its canonical
body, so a rerun never pays twice), the runs that made data, and the rows generators save.
The file is opened in WAL mode with a busy timeout, and every write starts with
``BEGIN IMMEDIATE`` so that several processes can share one database without
"database is locked" errors. Schema changes are named migrations applied once, in order,
and recorded in the ``_migrations`` table.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils
from pydantic import BaseModel

BUSY_TIMEOUT_MS = 60_000


def _create_requests(db: sqlite_utils.Database) -> None:
    db.execute(
        """
        CREATE TABLE IF NOT EXISTS requests (
            key TEXT PRIMARY KEY,
            path TEXT NOT NULL,
            model TEXT,
            body TEXT NOT NULL,
            sample_index INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL,
            status_code INTEGER,
            response TEXT,
            error TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            cost_usd REAL,
            latency_ms REAL,
            endpoint TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX IF NOT EXISTS requests_status ON requests(status)")


def _create_runs(db: sqlite_utils.Database) -> None:
    db.execute(
        """
        CREATE TABLE IF NOT EXISTS runs (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            args TEXT NOT NULL,
            seed INTEGER,
            status TEXT NOT NULL,
            summary TEXT,
            started_at REAL NOT NULL,
            finished_at REAL
        )
        """
    )


MIGRATIONS: list[tuple[str, Callable[[sqlite_utils.Database], None]]] = [
    ("0001_requests", _create_requests),
    ("0002_runs", _create_runs),
]


def open_db(path: str | Path) -> sqlite_utils.Database:
    """Open (creating if needed) a project database and apply pending migrations."""
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if str(path) != ":memory:":
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    db = sqlite_utils.Database(conn)
    _migrate(db)
    return db


def _migrate(db: sqlite_utils.Database) -> None:
    with transaction(db):
        db.execute(
            "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL)")
        done = {row[0] for row in db.execute("SELECT name FROM _migrations").fetchall()}
        for name, apply in MIGRATIONS:
            if name not in done:
                apply(db)
                db.execute("INSERT INTO _migrations VALUES (?, ?)", [name, time.time()])


def database_file(db: sqlite_utils.Database) -> str | None:
    """The file behind a database connection, or None for an in-memory database."""
    for _, name, filename in db.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return filename or None
    return None


@contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[None]:
    """Run the block as one write transaction, taking the write lock up front."""
    conn = db.conn
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise
    else:
        if conn.in_transaction:
            conn.commit()


# --- the request ledger -------------------------------------------------------------------

LEDGER_COLUMNS = (
    "key", "path", "model", "body", "sample_index", "status", "status_code", "response",
    "error", "attempts", "prompt_tokens", "completion_tokens", "cost_usd", "latency_ms",
    "endpoint", "created_at", "updated_at",
)


def ledger_lookup(db: sqlite_utils.Database, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Return the ledger rows for these request keys (missing keys are absent)."""
    keys = list(keys)
    found: dict[str, dict[str, Any]] = {}
    cols = ", ".join(LEDGER_COLUMNS)
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        marks = ",".join("?" * len(chunk))
        cursor = db.execute(f"SELECT {cols} FROM requests WHERE key IN ({marks})", chunk)
        for row in cursor.fetchall():
            found[row[0]] = dict(zip(LEDGER_COLUMNS, row, strict=True))
    return found


def ledger_add_pending(db: sqlite_utils.Database, rows: Iterable[dict[str, Any]]) -> None:
    """Record requests as pending before they are sent; existing rows are left as they are."""
    now = time.time()
    values = [
        (r["key"], r["path"], r.get("model"), r["body"], r.get("sample_index", 0), now, now)
        for r in rows
    ]
    if not values:
        return
    with transaction(db):
        db.conn.executemany(
            "INSERT OR IGNORE INTO requests "
            "(key, path, model, body, sample_index, status, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
            values,
        )


def ledger_finish(db: sqlite_utils.Database, rows: Iterable[dict[str, Any]]) -> None:
    """Complete requests with their outcome (status ok or failed, response, usage, timing)."""
    now = time.time()
    values = [
        (
            r["status"], r.get("status_code"), r.get("response"), r.get("error"),
            r.get("attempts", 0), r.get("prompt_tokens"), r.get("completion_tokens"),
            r.get("cost_usd"), r.get("latency_ms"), r.get("endpoint"), now, r["key"],
        )
        for r in rows
    ]
    if not values:
        return
    with transaction(db):
        db.conn.executemany(
            "UPDATE requests SET status = ?, status_code = ?, response = ?, error = ?, "
            "attempts = ?, prompt_tokens = ?, completion_tokens = ?, cost_usd = ?, "
            "latency_ms = ?, endpoint = ?, updated_at = ? WHERE key = ?",
            values,
        )


def ledger_totals(db: sqlite_utils.Database) -> dict[str, Any]:
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


# --- runs -----------------------------------------------------------------------------------


def start_run(
    db: sqlite_utils.Database, run_id: str, kind: str, args: dict, seed: int | None
) -> None:
    """Record the start of a run (or restart it: same id, same arguments)."""
    with transaction(db):
        db.execute(
            "INSERT INTO runs (id, kind, args, seed, status, started_at) VALUES (?, ?, ?, ?, "
            "'running', ?) ON CONFLICT(id) DO UPDATE SET status = 'running'",
            [run_id, kind, json.dumps(args, sort_keys=True, default=str), seed, time.time()],
        )


def finish_run(db: sqlite_utils.Database, run_id: str, status: str, summary: dict) -> None:
    """Record the end of a run with its summary counts."""
    with transaction(db):
        db.execute(
            "UPDATE runs SET status = ?, summary = ?, finished_at = ? WHERE id = ?",
            [status, json.dumps(summary, sort_keys=True, default=str), time.time(), run_id],
        )


def get_run(db: sqlite_utils.Database, run_id: str) -> dict[str, Any] | None:
    """One run row, with args and summary decoded, or None."""
    rows = list(db["runs"].rows_where("id = ?", [run_id]))
    if not rows:
        return None
    row = rows[0]
    row["args"] = json.loads(row["args"])
    row["summary"] = json.loads(row["summary"]) if row["summary"] else None
    return row


# --- generic rows for generators ---------------------------------------------------------------


def _as_dict(record: BaseModel | dict[str, Any]) -> dict[str, Any]:
    data = record.model_dump(mode="json") if isinstance(record, BaseModel) else dict(record)
    return {
        k: json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v
        for k, v in data.items()
    }


def save_rows(
    db: sqlite_utils.Database,
    table: str,
    records: Iterable[BaseModel | dict[str, Any]],
    pk: str = "id",
    replace: bool = False,
) -> int:
    """Insert records (pydantic models or dicts) keyed by ``pk``; existing keys are ignored
    (or replaced with ``replace=True``). Lists and dicts are stored as JSON text. Returns the
    number of rows written."""
    rows = [_as_dict(r) for r in records]
    if not rows:
        return 0
    with transaction(db):
        before = db[table].count if db[table].exists() else 0
        db[table].insert_all(rows, pk=pk, ignore=not replace, replace=replace, alter=True)
        after = db[table].count
    return len(rows) if replace else after - before


def load_rows(
    db: sqlite_utils.Database, table: str, order_by: str | None = None, **equals: Any
) -> list[dict[str, Any]]:
    """Rows of ``table`` whose columns equal the given values (all rows without filters)."""
    if not db[table].exists():
        return []
    where = " AND ".join(f"[{col}] = ?" for col in equals) or None
    return list(
        db[table].rows_where(where, list(equals.values()) or None, order_by=order_by or "rowid")
    )


def count_rows(db: sqlite_utils.Database, table: str, **equals: Any) -> int:
    """Number of rows of ``table`` matching the given column values."""
    if not db[table].exists():
        return 0
    where = " AND ".join(f"[{col}] = ?" for col in equals) or None
    return db[table].count_where(where, list(equals.values()) or None)


def load_columns(
    db: sqlite_utils.Database, table: str, columns: Iterable[str]
) -> Iterator[dict[str, Any]]:
    """Stream a few columns of every row (absent columns read as None), so wide columns
    such as the ledger's bodies are never loaded."""
    columns = list(columns)
    if not db[table].exists():
        return
    present = [c for c in columns if c in db[table].columns_dict]
    select = ", ".join(f"[{c}]" for c in present) or "rowid"
    for row in db[table].rows_where(select=select):
        yield {c: row.get(c) for c in columns}


def table_names(db: sqlite_utils.Database) -> list[str]:
    """Names of the tables in the database."""
    return db.table_names()


def table_columns(db: sqlite_utils.Database, table: str) -> list[str]:
    """Column names of a table (empty when it does not exist)."""
    return list(db[table].columns_dict) if db[table].exists() else []
