"""Opening the project database: connections, write transactions, migrations, a database thread.

A project database is a SQLite file (the default) or a PostgreSQL database named by a
``postgresql://`` URL (psycopg 3), with the same schema and the same named migrations. A SQLite
file is opened in WAL mode with a busy timeout, and every write starts with ``BEGIN IMMEDIATE``,
so several processes share one file without "database is locked" errors; PostgreSQL takes row
locks per statement and serialises migrations with an advisory lock, so processes on many
machines share one database. Opening a database applies the migrations of
``datagen.store.schema`` it has not seen, in order, recording each in ``_migrations``; a SQLite
table that an older release created on its first insert is rebuilt with the declared column
types, keeping its rows, their rowids and any column this release does not know. ``DBThread``
is the one way async code uses the database: every call runs on one worker thread with its own
connection, in turn. Each thread owns one connection, so no connection pool is kept: a pool
would only hand the same thread the same connection again.
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
from urllib.parse import urlsplit, urlunsplit

from datagen.errors import UserInputError
from datagen.store import tables
from datagen.store.schema import MIGRATIONS, Migration, Table, add_column_sql, create_sql, quote

BUSY_TIMEOUT_MS = 60_000
MEMORY = ":memory:"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
BEGIN = {"sqlite": "BEGIN IMMEDIATE", "postgresql": "BEGIN"}
MIGRATION_LOCK = 7_147_001  # the advisory lock PostgreSQL migrations hold


def is_postgres(target: str | Path) -> bool:
    """Whether a ``--db`` value names a PostgreSQL database rather than a SQLite file."""
    return isinstance(target, str) and target.startswith(POSTGRES_SCHEMES)


def database_exists(target: str | Path) -> bool:
    """Whether a database is there to read: a SQLite file that exists, or any PostgreSQL URL
    (a server that cannot be reached says so when opened)."""
    return is_postgres(target) or Path(target).is_file()


def database_target(text: str, label: str = "--db") -> Path | str:
    """A ``--db`` value as the store opens it: a ``postgresql://`` URL (a ``str``) or a SQLite
    file (a ``Path``). A URL may not carry a password: it would show in process lists, job
    records and logs, so it goes in ``$PGPASSWORD`` or ``~/.pgpass``, as libpq reads them."""
    if not is_postgres(text):
        return Path(text).expanduser()
    try:
        password = urlsplit(text).password
    except ValueError:
        raise UserInputError(f"{label}: not a valid postgresql:// URL") from None
    if password is not None:
        raise UserInputError(f"{label}: put the PostgreSQL password in $PGPASSWORD or ~/.pgpass, "
                             "not in the URL (it would show in process lists and logs)")
    return text


def shown_target(target: str | Path) -> str:
    """A database target as it may be printed: a URL's password is replaced by ``***``."""
    if not is_postgres(target):
        return str(target)
    parts = urlsplit(str(target))
    if parts.password is None:
        return str(target)
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class Database:
    """An open project database: a DB-API connection, its SQL dialect and where it lives.

    SQL is written with ``?`` placeholders and double-quoted identifiers, which both dialects
    accept once placeholders are translated. Example:
    ``db = open_db("rlaif.db"); db.execute("SELECT count(*) FROM runs").fetchone()``
    """

    def __init__(self, conn: Any, dialect: str, target: str) -> None:
        self.conn = conn
        self.dialect = dialect
        self._target = target
        self.location = shown_target(target)

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement and return its cursor."""
        if self.dialect == "postgresql":  # psycopg reads % in SQL only when given parameters
            return self.conn.execute(self._sql(sql), list(params) or None)
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run one statement per parameter row; returns the number of rows changed."""
        cursor = self.conn.cursor()
        cursor.executemany(self._sql(sql), rows)
        return cursor.rowcount

    @property
    def in_transaction(self) -> bool:
        if self.dialect == "postgresql":
            return self.conn.info.transaction_status != 0  # 0 is IDLE
        return self.conn.in_transaction

    def reopen(self) -> Database:
        """Another connection to the same database (the same one for an in-memory database,
        which cannot be opened twice)."""
        return self if self._target == MEMORY else open_db(self._target)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


def open_db(target: str | Path) -> Database:
    """Open (creating if needed) a project database and apply pending migrations: a SQLite
    file path, ``:memory:``, or a ``postgresql://`` URL."""
    db = _connect_postgres(str(target)) if is_postgres(target) else _connect_sqlite(target)
    migrate(db)
    return db


def _connect_sqlite(path: str | Path) -> Database:
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False,
                           isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if str(path) != MEMORY:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return Database(conn, "sqlite", str(path))


def _connect_postgres(url: str) -> Database:
    import psycopg  # only PostgreSQL users pay for the import

    try:
        conn = psycopg.connect(url, autocommit=True, application_name="rlaif")
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise UserInputError(f"{shown_target(url)}: cannot open the database: {reason}") from None
    return Database(conn, "postgresql", url)


@contextmanager
def transaction(db: Database) -> Iterator[None]:
    """Run the block as one write transaction, taking SQLite's write lock up front (a block
    inside another transaction joins it)."""
    if db.in_transaction:
        yield
        return
    db.execute(BEGIN[db.dialect])
    try:
        yield
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    else:
        if db.in_transaction:
            db.execute("COMMIT")


def shared_target(db: Database) -> str | None:
    """What another process opens to reach the same database: the SQLite file or the
    PostgreSQL URL (None for an in-memory database, which no other process can reach)."""
    return None if db.location == MEMORY else db._target


def database_file(db: Database) -> str | None:
    """The file behind a SQLite database, or None (in memory, or PostgreSQL)."""
    return None if db.location == MEMORY or db.dialect != "sqlite" else db.location


# --- migrations ----------------------------------------------------------------------------------


def migrate(db: Database, migrations: Sequence[Migration] = MIGRATIONS) -> list[str]:
    """Apply the migrations this database has not seen, in order; returns their names."""
    with transaction(db):
        if db.dialect == "postgresql":
            db.execute("SELECT pg_advisory_xact_lock(?)", [MIGRATION_LOCK])
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
                    db.execute(add_column_sql(name, column, db.dialect))
            db.execute(f"INSERT INTO {quote(tables.MIGRATIONS)} VALUES (?, ?)",
                       [migration.name, time.time()])
            applied.append(migration.name)
    return applied


def _create_or_rebuild(db: Database, table: Table) -> None:
    old = table_columns(db, table.name)
    if not old or db.dialect != "sqlite":  # only SQLite files have tables made on first insert
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
    """Names of the tables in the database, oldest first."""
    if db.dialect == "postgresql":
        sql = ("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
               "WHERE c.relkind = 'r' AND n.nspname = current_schema() ORDER BY c.oid")
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid"
    return [row[0] for row in db.execute(sql)]


def table_columns(db: Database, table: str) -> list[str]:
    """Column names of a table (empty when it does not exist); PostgreSQL's ``rowid`` column,
    which only keeps the row order, is left out."""
    if db.dialect == "postgresql":
        return [row[0] for row in db.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            "current_schema() AND table_name = ? AND column_name <> 'rowid' "
            "ORDER BY ordinal_position", [table])]
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

    Given a path or URL it opens its own connection on first use; given an open database it
    opens a second connection to the same database (so its commits never end the caller's
    transactions); an in-memory database is shared, as it cannot be opened twice.
    Example: ``rows = await DBThread(path).call(store.load_rows, JOBS)``
    """

    def __init__(self, target: str | Path | Database) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db")
        self._target = target
        self._db: Database | None = None

    def _open(self) -> Database:
        if isinstance(self._target, Database):
            return self._target.reopen()
        return open_db(self._target)

    def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._db is None:
            self._db = self._open()
        return fn(self._db, *args, **kwargs)

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(db, *args, **kwargs)`` on the database thread and return its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(self._run, fn, *args, **kwargs))

    def close(self) -> None:
        """Close the connection this thread opened (once its queued calls are done)."""
        self._executor.submit(self._close).result()
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        if self._db is not None and self._db is not self._target:
            self._db.close()
        self._db = None
