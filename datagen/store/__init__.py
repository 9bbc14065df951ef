"""The project database: the only package that speaks SQL.

``db`` opens a database, runs write transactions and the named migrations, and gives async code
its database thread; ``schema`` declares every table (``tables`` names them); ``ledger`` is the
request ledger, ``queue`` which service process runs which job, ``hosted`` the hosted
Batch API jobs, ``runs`` the runs table and ``rows`` the
generic rows generators save. Callers use the names re-exported here:
``from datagen import store; db = store.open_db("rlaif.db")``.
"""

from datagen.store import tables
from datagen.store.copy import copy_database
from datagen.store.db import (
    Database,
    DBThread,
    database_exists,
    database_file,
    database_problem,
    database_target,
    is_postgres,
    migrate,
    open_db,
    shared_target,
    shown_target,
    table_columns,
    table_names,
    transaction,
)
from datagen.store.hosted import (
    hosted_add_job,
    hosted_ingest,
    hosted_job_requests,
    hosted_jobs,
    hosted_open_jobs,
    hosted_update_job,
)
from datagen.store.ledger import (
    LEDGER_COLUMNS,
    ledger_add_pending,
    ledger_claim,
    ledger_finish,
    ledger_lookup,
    ledger_release,
    ledger_renew,
    ledger_totals,
    new_worker_id,
    worker_gone,
)
from datagen.store.queue import job_cancel, job_claim, job_release, job_renew, job_update
from datagen.store.rows import (
    count_rows,
    declared_table,
    load_columns,
    load_page,
    load_rows,
    max_column,
    save_rows,
    sum_column,
)
from datagen.store.runs import finish_run, get_run, start_run

__all__ = [
    "DBThread", "Database", "LEDGER_COLUMNS", "copy_database", "count_rows", "database_exists",
    "database_file", "database_problem", "database_target", "declared_table", "finish_run",
    "get_run", "hosted_add_job", "hosted_ingest", "hosted_job_requests", "hosted_jobs",
    "hosted_open_jobs", "hosted_update_job", "is_postgres", "job_cancel", "job_claim",
    "job_release", "job_renew", "job_update", "ledger_add_pending", "ledger_claim",
    "ledger_finish", "ledger_lookup", "ledger_release", "ledger_renew", "ledger_totals",
    "load_columns", "load_page", "load_rows", "max_column", "migrate", "new_worker_id", "open_db",
    "save_rows", "shared_target", "shown_target", "start_run", "sum_column", "table_columns",
    "table_names", "tables", "transaction", "worker_gone",
]
