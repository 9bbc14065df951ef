"""The schema of the project database: every table, born in a named migration, in one place.

A table is declared once as columns with Python types (``str``, ``int``, ``float``, ``bool``;
lists and dicts are stored as JSON text in ``str`` columns, booleans as 0/1 integers), and
``create_sql`` renders it for a dialect through a small table of column types, so the SQLite
default and the PostgreSQL backend run the same migrations. The list ``MIGRATIONS`` is ordered
and append-only: a database records the names it has applied in ``_migrations`` and runs the rest
in order. Tables that an older release created on first insert (with column types guessed from
their first row) are rebuilt in place by the migration that declares them (``datagen.store.db``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from datagen.store import tables as t

SQL_TYPES: dict[str, dict[type, str]] = {
    "sqlite": {str: "TEXT", int: "INTEGER", float: "REAL", bool: "INTEGER"},
    "postgresql": {str: "TEXT", int: "BIGINT", float: "DOUBLE PRECISION", bool: "INTEGER"},
}


@dataclass(frozen=True)
class Column:
    """One column: its name, Python type, and whether it may hold null (and a default)."""

    name: str
    type: type
    not_null: bool = False
    default: Any = None


@dataclass(frozen=True)
class Table:
    """A table, keyed by one text column (``key``), with optional single-column indexes."""

    name: str
    columns: tuple[Column, ...]
    key: str = "id"
    indexes: tuple[str, ...] = ()

    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


@dataclass(frozen=True)
class Migration:
    """A named schema step: tables to create (an older release's table of the same name is
    rebuilt with these columns, keeping its rows), and columns to add to tables that an
    earlier migration created (``(table name, column)``; nullable, so no row is rewritten)."""

    name: str
    creates: tuple[Table, ...] = ()
    adds: tuple[tuple[str, Column], ...] = ()


def _cols(spec: str) -> tuple[Column, ...]:
    """Columns from ``"name:type name:type ..."`` (types: str int float bool), all nullable."""
    kinds = {"str": str, "int": int, "float": float, "bool": bool}
    return tuple(Column(name, kinds[kind]) for name, kind in
                 (item.split(":") for item in spec.split()))


REQUESTS = Table(t.REQUESTS, (
    Column("key", str, not_null=True), Column("path", str, not_null=True), Column("model", str),
    Column("body", str, not_null=True), Column("sample_index", int, not_null=True, default=0),
    Column("status", str, not_null=True), Column("status_code", int), Column("response", str),
    Column("error", str), Column("attempts", int, not_null=True, default=0),
    Column("prompt_tokens", int), Column("completion_tokens", int), Column("cost_usd", float),
    Column("latency_ms", float), Column("endpoint", str),
    Column("created_at", float, not_null=True), Column("updated_at", float, not_null=True),
), key="key", indexes=("status",))

RUNS = Table(t.RUNS, (
    Column("id", str, not_null=True), Column("kind", str, not_null=True),
    Column("args", str, not_null=True), Column("seed", int), Column("status", str, not_null=True),
    Column("summary", str), Column("started_at", float, not_null=True),
    Column("finished_at", float),
))

# Column order is the order an older release wrote them in (rows are read back as dicts in this
# order, and the service streams some tables as JSONL), so upgraded and fresh tables agree.
SI_INSTRUCTIONS = Table(t.SI_INSTRUCTIONS, _cols(
    "id:str run_id:str round:int prompt_index:int model:str params:str context_ids:str "
    "request_key:str parent:str item_index:int instruction:str rouge_l:float nearest:str "
    "status:str reason:str"))
SI_ROUNDS = Table(t.SI_ROUNDS, _cols(
    "id:str run_id:str round:int candidates:int kept:int"))
SI_TASKS = Table(t.SI_TASKS, _cols(
    "id:str run_id:str instruction_id:str is_classification:bool classify_answer:str "
    "classify_key:str classify_params:str classify_context_ids:str instance_key:str "
    "instances:int dropped:str drop_reason:str model:str parent:str"))
SI_INSTANCES = Table(t.SI_INSTANCES, _cols(
    "id:str run_id:str model:str params:str context_ids:str request_key:str parent:str "
    "instruction_id:str position:int input:str output:str"))
SI_FAILURES = Table(t.SI_FAILURES, _cols(
    "id:str run_id:str stage:str instruction_id:str request_key:str raw_text:str "
    "finish_reason:str error:str"))
FLAN_EXAMPLES = Table(t.FLAN_EXAMPLES, _cols(
    "messages:str task:str template_id:str source:str shots:int answer:str id:str run_id:str"))
CAI_SAMPLES = Table(t.CAI_SAMPLES, _cols(
    "id:str run_id:str prompt_id:str category:str prompt:str constitution:str "
    "constitution_hash:str model:str resolved_model:str params:str principle_ids:str "
    "initial:str initial_key:str rounds:str final:str status:str stopped_at:str error:str "
    "refusals:str degenerate:str judge_agrees:bool prompt_tokens:int completion_tokens:int"))
RESPONSES = Table(t.RESPONSES, _cols(
    "id:str prompt_id:str model:str sample_index:int temperature:float max_tokens:int text:str "
    "finish_reason:str status:str error:str request_key:str"))
PAIRS = Table(t.PAIRS, _cols(
    "id:str prompt_id:str prompt:str response_a:str response_b:str model_a:str model_b:str "
    "response_a_id:str response_b_id:str constraints:str human:str"))
CONSTRAINED_PROMPTS = Table(t.CONSTRAINED_PROMPTS, _cols(
    "id:str prompt_id:str base_prompt:str prompt:str constraints:str seed:int"))
PIPELINE_STAGES = Table(t.PIPELINE_STAGES, _cols(
    "id:str pipeline:str stage_key:str stage_index:int stage:str name:str argv:str "
    "pipeline_file:str status:str started_at:float pid:int returncode:int finished_at:float"))
JOBS = Table(t.JOBS, _cols(
    "id:str kind:str options:str command:str argv:str status:str exit_code:int error:str "
    "output:str job_dir:str pid:int runs:int cancel_requested:bool created_at:float "
    "started_at:float finished_at:float ledger_start:str ledger_end:str updated_at:float"))
LABEL_SETTINGS = Table(t.LABEL_SETTINGS, _cols("key:str value:str"), key="key")
LABEL_ITEMS = Table(t.LABEL_ITEMS, _cols(
    "id:str pair_id:str prompt:str responses:str gold:str required:int position:int "
    "source:str created_at:float"))
LABEL_VOTES = Table(t.LABEL_VOTES, _cols(
    "id:str item_id:str annotator:str choice:str ranking:str note:str gold:bool "
    "created_at:float"))
LABEL_CONSENSUS = Table(t.LABEL_CONSENSUS, _cols(
    "pair_id:str item_id:str i:int j:int consensus:str split:bool complete:bool human:str "
    "votes:str annotators:str"), key="pair_id")

# Hosted Batch API jobs (datagen.endpoint.hosted): one row per batch file, written before the
# upload so a killed run finds its file and batch again; the ledger learns which job and batch
# answered each request, how (online or batch) and the endpoint's request id.
HOSTED_BATCHES = Table(t.HOSTED_BATCHES, (
    Column("job", str, not_null=True), Column("label", str, not_null=True),
    Column("endpoint", str, not_null=True), Column("path", str, not_null=True),
    Column("model", str), Column("line_count", int, not_null=True),
    Column("input_file_id", str), Column("batch_id", str), Column("output_file_id", str),
    Column("error_file_id", str), Column("status", str, not_null=True),
    Column("request_counts", str), Column("ingested", bool, not_null=True, default=0),
    Column("created_at", float, not_null=True), Column("updated_at", float, not_null=True),
), key="job")
LEDGER_BATCH_COLUMNS = _cols("via:str batch_job:str batch_id:str request_id:str")
# The service's access control (users, roles, hashed tokens), uploads and audit, and the
# columns they brought to older tables (each job's owner and endpoint; the share of votes on a
# pair's top choice).
SERVICE_ADDS = (*((t.JOBS, c) for c in _cols("owner:str endpoint:str")),
                (t.LABEL_CONSENSUS, Column("agreement", float)))
SERVICE_USERS = Table(t.SERVICE_USERS, (
    Column("id", str, not_null=True), Column("name", str, not_null=True),
    Column("role", str, not_null=True), Column("created_at", float, not_null=True),
), indexes=("name",))
SERVICE_TOKENS = Table(t.SERVICE_TOKENS, (
    Column("hash", str, not_null=True), Column("id", str, not_null=True),
    Column("user_id", str, not_null=True), Column("kind", str, not_null=True),
    Column("created_at", float, not_null=True), Column("expires_at", float),
    Column("revoked_at", float),
), key="hash", indexes=("id", "user_id"))
SERVICE_FILES = Table(t.SERVICE_FILES, (
    Column("id", str, not_null=True), Column("owner", str, not_null=True),
    Column("filename", str, not_null=True), Column("bytes", int, not_null=True),
    Column("sha256", str, not_null=True), Column("path", str, not_null=True),
    Column("job_id", str), Column("created_at", float, not_null=True),
), indexes=("owner",))
SERVICE_AUDIT = Table(t.SERVICE_AUDIT, (
    Column("id", str, not_null=True), Column("at", float, not_null=True),
    Column("user_name", str), Column("role", str), Column("method", str, not_null=True),
    Column("path", str, not_null=True), Column("target", str),
    Column("status", int, not_null=True), Column("client", str),
), indexes=("at",))

MIGRATIONS: tuple[Migration, ...] = (
    Migration("0001_requests", (REQUESTS,)),
    Migration("0002_runs", (RUNS,)),
    Migration("0003_self_instruct", (SI_INSTRUCTIONS, SI_ROUNDS, SI_TASKS, SI_INSTANCES,
                                     SI_FAILURES)),
    Migration("0004_flan", (FLAN_EXAMPLES,)),
    Migration("0005_constitutional", (CAI_SAMPLES,)),
    Migration("0006_responses_and_pairs", (RESPONSES, PAIRS)),
    Migration("0007_constrained_prompts", (CONSTRAINED_PROMPTS,)),
    Migration("0008_pipeline_stages", (PIPELINE_STAGES,)),
    Migration("0009_jobs", (JOBS,)),
    Migration("0010_labels", (LABEL_SETTINGS, LABEL_ITEMS, LABEL_VOTES, LABEL_CONSENSUS)),
    Migration("0011_hosted_batches", (HOSTED_BATCHES,),
              adds=tuple((t.REQUESTS, column) for column in LEDGER_BATCH_COLUMNS)),
    Migration("0012_service_access", (SERVICE_USERS, SERVICE_TOKENS, SERVICE_FILES,
                                      SERVICE_AUDIT), adds=SERVICE_ADDS),
    # a request is sent by the worker holding its lease; a dead worker's lease expires
    Migration("0013_request_leases", adds=((t.REQUESTS, Column("worker_id", str)),
                                           (t.REQUESTS, Column("lease_until", float)))),
    # a service job is run by the service process holding its lease (datagen.store.queue)
    Migration("0014_job_leases", adds=((t.JOBS, Column("worker_id", str)),
                                       (t.JOBS, Column("lease_until", float)))),
)


def current_tables() -> dict[str, Table]:
    """Every table as the last migration leaves it, by name."""
    found: dict[str, Table] = {}
    for migration in MIGRATIONS:
        found.update((table.name, table) for table in migration.creates)
        for name, column in migration.adds:
            table = found[name]
            found[name] = Table(table.name, (*table.columns, column), table.key, table.indexes)
    return found


def quote(name: str) -> str:
    """An identifier in double quotes (both dialects accept them)."""
    return '"' + name.replace('"', '""') + '"'


def column_sql(column: Column, dialect: str, key: bool) -> str:
    """One column definition: name, type, and its constraints."""
    parts = [quote(column.name), SQL_TYPES[dialect][column.type]]
    if key:
        parts.append("PRIMARY KEY")
    if column.not_null and not key:
        parts.append("NOT NULL")
    if column.default is not None:
        parts.append(f"DEFAULT {column.default!r}")
    return " ".join(parts)


def create_sql(table: Table, dialect: str, name: str | None = None) -> list[str]:
    """The statements that create a table (under another name when given) and its indexes.
    On PostgreSQL every table gets a ``rowid`` identity column, the insertion order SQLite
    keeps implicitly (rows are read back in that order)."""
    name = name or table.name
    definitions = [column_sql(c, dialect, c.name == table.key) for c in table.columns]
    if dialect == "postgresql":
        definitions.append('"rowid" BIGINT GENERATED BY DEFAULT AS IDENTITY UNIQUE')
    columns = ",\n    ".join(definitions)
    statements = [f"CREATE TABLE {quote(name)} (\n    {columns}\n)"]
    statements += [f"CREATE INDEX IF NOT EXISTS {quote(f'{table.name}_{col}')} "
                   f"ON {quote(name)}({quote(col)})" for col in table.indexes]
    return statements


def add_column_sql(table: str, column: Column, dialect: str) -> str:
    """The statement that adds a column to a table."""
    return f"ALTER TABLE {quote(table)} ADD COLUMN {column_sql(column, dialect, key=False)}"
