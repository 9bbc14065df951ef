"""`rlaif db copy`: move a whole project database between SQLite and PostgreSQL (parse, call,
print)."""

from __future__ import annotations

import click

from datagen import store
from datagen.errors import UserInputError


@click.command("copy")
@click.option("--from", "source", required=True, metavar="PATH|URL",
              help="Database to read: a SQLite file or a postgresql:// URL.")
@click.option("--to", "target", required=True, metavar="PATH|URL",
              help="Database to write (created or extended; rows it already has are kept).")
def copy(source: str, target: str) -> None:
    """Copy every table of one project database into another (SQLite <-> PostgreSQL).

    Rows are written in their stored order; keys the target already holds are left as they
    are, so running the copy again finishes an interrupted one and adds nothing twice. Both
    databases are first brought to the current schema (an older SQLite file is upgraded).
    """
    source, target = (store.database_target(source, "--from"),
                      store.database_target(target, "--to"))
    if not store.database_exists(source):
        raise UserInputError(f"--from {source}: no such database")
    if str(source) == str(target):
        raise UserInputError("--from and --to name the same database")
    counts = store.copy_database(store.open_db(source), store.open_db(target))
    for name, (read, new) in counts.items():
        if read:
            click.echo(f"{name}: {read} rows, {new} new")
    total = sum(read for read, _ in counts.values())
    added = sum(new for _, new in counts.values())
    click.echo(f"copied {total} rows ({added} new) from {store.shown_target(source)} to "
               f"{store.shown_target(target)}", err=True)
