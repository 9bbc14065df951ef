"""Copying a whole project database to another one: SQLite to PostgreSQL and back.

``rlaif db copy --from A --to B`` moves a run between machines and backends: every table of the
schema is read in its stored order and written to the target in that order, keys the target
already holds are left as they are (so a copy interrupted half-way is finished by running it
again, and copying twice adds nothing). Both databases are migrated to the current schema first;
columns an old SQLite file carries beyond the schema, and tables of the user's own, stay behind.
"""

from __future__ import annotations

from datagen.store.db import Database, transaction
from datagen.store.schema import current_tables, quote

BATCH = 2000


def copy_database(source: Database, target: Database) -> dict[str, tuple[int, int]]:
    """Copy every table of ``source`` into ``target``; returns {table: (rows read, rows new)}.
    Each table is copied in one transaction of the target."""
    counts = {}
    for name, table in current_tables().items():
        columns = ", ".join(quote(c) for c in table.column_names())
        marks = ", ".join("?" for _ in table.columns)
        insert = (f"INSERT INTO {quote(name)} ({columns}) VALUES ({marks}) "
                  f"ON CONFLICT ({quote(table.key)}) DO NOTHING")
        cursor = source.execute(f"SELECT {columns} FROM {quote(name)} ORDER BY rowid")
        read = written = 0
        with transaction(target):
            while rows := cursor.fetchmany(BATCH):
                read += len(rows)
                written += target.executemany(insert, rows)
        counts[name] = (read, written)
    return counts
