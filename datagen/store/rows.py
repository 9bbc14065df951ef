"""Rows of the generator tables: save records, load them back, count them.

Generators hand over pydantic records or dicts; lists and dicts are stored as JSON text and
booleans as 0/1. Every table is declared in ``datagen.store.schema``: saving into a table or a
column that is not declared is a programming error and raises ``ValueError`` naming it, instead
of growing the schema as a side effect of an insert. Saving is idempotent (a key already stored
is left as it is) unless ``replace=True``, which overwrites the stored row in place.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel

from datagen.store.db import Database, table_columns, transaction
from datagen.store.schema import Table, current_tables, quote


def declared_table(name: str) -> Table:
    """The schema of a table, or ValueError when no migration declares it."""
    found = current_tables().get(name)
    if found is None:
        raise ValueError(f"no table {name!r} in the schema (datagen/store/schema.py)")
    return found


def _as_dict(record: BaseModel | dict[str, Any]) -> dict[str, Any]:
    data = record.model_dump(mode="json") if isinstance(record, BaseModel) else dict(record)
    return {k: _stored(v) for k, v in data.items()}


def _stored(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return int(value) if isinstance(value, bool) else value


def _insert_sql(table: Table, columns: tuple[str, ...], replace: bool) -> str:
    unknown = set(columns) - set(table.column_names())
    if unknown:
        raise ValueError(f"table {table.name!r} has no column {sorted(unknown)[0]!r} "
                         "(declare it in datagen/store/schema.py)")
    names = ", ".join(quote(c) for c in columns)
    marks = ", ".join("?" for _ in columns)
    action = "DO NOTHING"
    if replace:
        updates = ", ".join(f"{quote(c)} = excluded.{quote(c)}"
                            for c in table.column_names() if c != table.key)
        action = f"DO UPDATE SET {updates}"
    return (f"INSERT INTO {quote(table.name)} ({names}) VALUES ({marks}) "
            f"ON CONFLICT ({quote(table.key)}) {action}")


def save_rows(
    db: Database,
    table: str,
    records: Iterable[BaseModel | dict[str, Any]],
    pk: str | None = None,
    replace: bool = False,
) -> int:
    """Insert records (pydantic models or dicts) keyed by the table's key column (``pk``, when
    given, must name it); existing keys are ignored (or overwritten with ``replace=True``).
    Returns the number of rows written."""
    spec = declared_table(table)
    if pk is not None and pk != spec.key:
        raise ValueError(f"table {table!r} is keyed by {spec.key!r}, not {pk!r}")
    rows = [_as_dict(r) for r in records]
    if not rows:
        return 0
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    written = 0
    with transaction(db):
        for columns, group in groups.items():
            written += db.executemany(_insert_sql(spec, columns, replace),
                                      [tuple(r[c] for c in columns) for r in group])
    return len(rows) if replace else written


def _where(equals: dict[str, Any]) -> str:
    return " AND ".join(f"{quote(col)} = ?" for col in equals)


def _exists(db: Database, table: str) -> bool:
    return table in current_tables() or bool(table_columns(db, table))


def _select_list(db: Database, table: str) -> str:
    """Every column but PostgreSQL's ``rowid`` (whose tables are always made from the schema)."""
    if db.dialect == "sqlite":
        return "*"
    declared = current_tables().get(table)
    columns = declared.column_names() if declared else table_columns(db, table)
    return ", ".join(quote(c) for c in columns)


def load_rows(
    db: Database, table: str, order_by: str | None = None, **equals: Any
) -> list[dict[str, Any]]:
    """Rows of ``table`` whose columns equal the given values (all rows without filters), in
    insertion order unless ``order_by`` (SQL) says otherwise."""
    if not _exists(db, table):
        return []
    where = f" WHERE {_where(equals)}" if equals else ""
    cursor = db.execute(f"SELECT {_select_list(db, table)} FROM {quote(table)}{where} "
                        f"ORDER BY {order_by or 'rowid'}", list(equals.values()))
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def load_page(db: Database, table: str, order_by: str, limit: int, offset: int = 0,
              **equals: Any) -> list[dict[str, Any]]:
    """One page of the rows of ``table`` matching the given column values, in ``order_by``
    (SQL) order."""
    if not _exists(db, table):
        return []
    where = f" WHERE {_where(equals)}" if equals else ""
    cursor = db.execute(f"SELECT * FROM {quote(table)}{where} ORDER BY {order_by} "
                        "LIMIT ? OFFSET ?", [*equals.values(), limit, offset])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def sum_column(db: Database, table: str, column: str, **equals: Any) -> float:
    """The sum of a numeric column over the rows matching the given column values."""
    if not _exists(db, table):
        return 0
    where = f" WHERE {_where(equals)}" if equals else ""
    return db.execute(f"SELECT COALESCE(SUM({quote(column)}), 0) FROM {quote(table)}{where}",
                      list(equals.values())).fetchone()[0]


def max_column(db: Database, table: str, column: str) -> Any:
    """The largest value of a column (None for an empty or missing table)."""
    if not _exists(db, table):
        return None
    return db.execute(f"SELECT MAX({quote(column)}) FROM {quote(table)}").fetchone()[0]


def count_rows(db: Database, table: str, **equals: Any) -> int:
    """Number of rows of ``table`` matching the given column values."""
    if not _exists(db, table):
        return 0
    where = f" WHERE {_where(equals)}" if equals else ""
    return db.execute(f"SELECT count(*) FROM {quote(table)}{where}",
                      list(equals.values())).fetchone()[0]


def load_columns(db: Database, table: str, columns: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Stream a few columns of every row (absent columns read as None), so wide columns
    such as the ledger's bodies are never loaded."""
    columns = list(columns)
    present = [c for c in columns if c in table_columns(db, table)]
    if not _exists(db, table):
        return
    select = ", ".join(quote(c) for c in present) or "rowid"
    cursor = db.execute(f"SELECT {select} FROM {quote(table)} ORDER BY rowid")
    for row in cursor:
        found = dict(zip(present, row, strict=False))
        yield {c: found.get(c) for c in columns}
