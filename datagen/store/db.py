"""Opening the project database: connections, write transactions, migrations, a database thread.

One SQLite file holds the request ledger, the runs that made data and the rows generators save.
The file is opened in WAL mode with a busy timeout, and every write starts with
``BEGIN IMMEDIATE`` so that several processes can share one database without "database is
locked" errors. Opening a database applies the named migrations of ``datagen.store.schema`` it
has not seen, in order, recording each in ``_migrations``; a table that an older release created
on its first insert is rebuilt with the declared column types, keeping its rows, their rowids
and any column this release does not know. ``DBThread`` is the one way async code uses the
database: every call runs on one worker thread with its own connection, in turn.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from datagen.store import tables
from datagen.store.schema import (
    MIGRATIONS,
    Migration,
    Table,
    column_sql,
    create_sql,
    quote,
)

BUSY_TIMEOUT_MS = 60_000
MEMORY = ":memory:"


class Database:
    """An open project database: a DB-API connection, its SQL dialect and where it lives.

    SQL is written with ``?`` placeholders and double-quoted identifiers. Example:
    ``db = open_db("rlaif.db"); db.execute("SELECT count(*) FROM runs").fetchone()``
    """

    def __init__(self, conn: Any, dialect: str, location: str) -> None:
        self.conn = conn
        self.dialect = dialect
        self.location = location

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement and return its cursor."""
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run one statement per parameter row; returns the number of rows changed."""
        return self.conn.executemany(sql, rows).rowcount

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


def open_db(path: str | Path) -> Database:
    """Open (creating if needed) a project database and apply pending migrations."""
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False,
                           isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if str(path) != MEMORY:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    db = Database(conn, "sqlite", str(path))
    migrate(db)
    return db


@contextmanager
def transaction(db: Database) -> Iterator[None]:
    """Run the block as one write transaction, taking the write lock up front (a block inside
    another transaction joins it)."""
    if db.in_transaction:
        yield
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if db.in_transaction:
            db.conn.rollback()
        raise
    else:
        if db.in_transaction:
            db.conn.commit()


def database_file(db: Database) -> str | None:
    """The file behind a database connection, or None for an in-memory database."""
    return None if db.location == MEMORY else db.location


# --- migrations ----------------------------------------------------------------------------------


def migrate(db: Database, migrations: Sequence[Migration] = MIGRATIONS) -> list[str]:
    """Apply the migrations this database has not seen, in order; returns their names."""
    with transaction(db):
        db.execute(f"CREATE TABLE IF NOT EXISTS {quote(tables.MIGRATIONS)} "
                   "(name TEXT PRIMARY KEY, applied_at REAL)")
        done = {row[0] for row in db.execute(f"SELECT name FROM {quote(tables.MIGRATIONS)}")}
        applied = []
        for migration in migrations:
            if migration.name in done:
                continue
            for table in migration.creates:
                _create_or_rebuild(db, table)
            for name, column in migration.adds:
                if column.name not in table_columns(db, name):
                    db.execute(f"ALTER TABLE {quote(name)} ADD COLUMN "
                               f"{column_sql(column, db.dialect, key=False)}")
            db.execute(f"INSERT INTO {quote(tables.MIGRATIONS)} VALUES (?, ?)",
                       [migration.name, time.time()])
            applied.append(migration.name)
    return applied


def _create_or_rebuild(db: Database, table: Table) -> None:
    old = table_columns(db, table.name)
    if not old:
        for statement in create_sql(table, db.dialect):
            db.execute(statement)
        return
    # An older release made this table on its first insert: copy it into the declared shape
    # (SQLite converts numbers stored as text in the old untyped columns), keeping the rowids
    # (row order) and any column this release does not declare.
    declared = table.column_names()
    extra = [c for c in old if c not in declared]
    staging = f"_rebuild_{table.name}"
    statements = create_sql(table, db.dialect, name=staging)
    db.execute(statements[0])
    for column in extra:
        db.execute(f"ALTER TABLE {quote(staging)} ADD COLUMN {quote(column)}")
    kept = [c for c in [*declared, *extra] if c in old]
    names = ", ".join(quote(c) for c in kept)
    db.execute(f"INSERT INTO {quote(staging)} (rowid, {names}) "
               f"SELECT rowid, {names} FROM {quote(table.name)} ORDER BY rowid")
    db.execute(f"DROP TABLE {quote(table.name)}")
    db.execute(f"ALTER TABLE {quote(staging)} RENAME TO {quote(table.name)}")
    for statement in statements[1:]:
        db.execute(statement.replace(quote(staging), quote(table.name)))


# --- introspection -------------------------------------------------------------------------------


def table_names(db: Database) -> list[str]:
    """Names of the tables in the database."""
    return [row[0] for row in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid")]


def table_columns(db: Database, table: str) -> list[str]:
    """Column names of a table (empty when it does not exist)."""
    return [row[1] for row in db.execute(f"PRAGMA table_info({quote(table)})")]


# --- checking a database file before a command uses it ------------------------------------------

def database_problem(path: Path, lock_wait_s: float) -> str | None:
    """What stops a command from using the database file at ``path``, in a few words, or None.

    Nothing is created or changed: a missing file is fine (commands create it), and so is an
    empty one. Checked: a directory, not SQLite, unreadable, locked by another process for
    longer than ``lock_wait_s`` seconds, or migrated by a newer rlaif (unknown migrations)."""
    if not path.exists():
        return None
    if path.is_dir():
        return "is a directory, not a database"
    # Only SQLite opens the file: closing any other descriptor of it would drop the POSIX
    # locks of this process's open connections (the service checks jobs' --db in-process).
    try:
        conn = sqlite3.connect(str(path), timeout=lock_wait_s)
    except sqlite3.Error as exc:
        return f"cannot open: {exc}"
    try:
        return _schema_problem(conn)
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return (f"locked by another process for over {lock_wait_s:g} s (let it finish, "
                    "or stop it)")
        return f"cannot use: {exc}"
    except sqlite3.DatabaseError:
        return "not an SQLite database (rlaif's project database is one SQLite file)"
    finally:
        conn.close()


def _schema_problem(conn: sqlite3.Connection) -> str | None:
    conn.execute("BEGIN IMMEDIATE")  # the write lock every command needs, taken and given back
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables.MIGRATIONS not in names:
            return None
        applied = {r[0] for r in conn.execute(f"SELECT name FROM {quote(tables.MIGRATIONS)}")}
    finally:
        conn.rollback()
    unknown = sorted(applied - {migration.name for migration in MIGRATIONS})
    if unknown:
        return (f"made by a newer rlaif (unknown migrations: {', '.join(unknown)}); upgrade "
                "rlaif to use it")
    return None


# --- one thread per connection -------------------------------------------------------------------


class DBThread:
    """A database connection used by async code from one worker thread: every call runs there
    in turn, so writes never interleave inside the process and the event loop never blocks.

    Given a path it opens its own connection on first use; given an open file database it opens
    a second connection to the same file (so its commits never end the caller's transactions);
    an in-memory database is shared, as it cannot be opened twice.
    Example: ``rows = await DBThread(path).call(store.load_rows, JOBS)``
    """

    def __init__(self, target: str | Path | Database) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db")
        shared = isinstance(target, Database) and database_file(target) is None
        self._db: Database | None = target if shared else None
        self._location = target.location if isinstance(target, Database) else str(target)
        self._own = not shared

    def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._db is None:
            self._db = open_db(self._location)
        return fn(self._db, *args, **kwargs)

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(db, *args, **kwargs)`` on the database thread and return its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(self._run, fn, *args, **kwargs))

    def close(self) -> None:
        """Close the connection this thread opened (once its queued calls are done)."""
        if self._own:
            self._executor.submit(self._close).result()
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
