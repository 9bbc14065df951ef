"""The store package: one schema born in named migrations, old databases upgraded in place, the
re-exported surface, and the database thread (issue 14)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

import pytest

import datagen.store
from align.labeling.queue import load_items, load_settings
from align.labeling.votes import LabelBoard
from align.service.jobs import list_jobs
from datagen import store
from datagen.constitutional.loop import load_samples
from datagen.flan.render import sft_examples
from datagen.responses.sample import load_pairs
from datagen.self_instruct.generate import instance_rows
from datagen.store import schema, tables
from judges.constraints.prompts import ConstrainedPrompt

RELEASE_DB = Path(__file__).parent / "data" / "release-0.1.db"  # made by make_release_db.py
SQLITE_TYPES = {str: "TEXT", int: "INTEGER", float: "REAL", bool: "INTEGER"}


def declared_types(db: sqlite3.Connection, table: str) -> dict[str, str]:
    return {row[1]: row[2] for row in db.execute(f"PRAGMA table_info({table})")}


def test_public_surface_is_pinned():
    assert sorted(datagen.store.__all__) == sorted([
        "DBThread", "Database", "LEDGER_COLUMNS", "copy_database", "count_rows", "database_exists",
        "database_file", "database_problem", "database_target", "declared_table", "finish_run",
        "get_run", "hosted_add_job", "hosted_ingest", "hosted_job_requests", "hosted_jobs",
        "hosted_open_jobs", "hosted_update_job", "is_postgres", "job_cancel", "job_claim",
        "job_release", "job_renew", "job_update", "ledger_add_pending",
        "ledger_claim", "ledger_finish", "ledger_lookup", "ledger_release", "ledger_renew",
        "ledger_totals", "load_columns", "load_page", "load_rows", "max_column", "migrate",
        "new_worker_id", "open_db", "save_rows", "shared_target", "shown_target", "start_run",
        "sum_column", "table_columns", "table_names", "tables", "transaction", "worker_gone"])
    assert all(hasattr(datagen.store, name) for name in datagen.store.__all__)


def test_every_table_name_is_declared_once_by_one_migration():
    names = [v for k, v in vars(tables).items() if k.isupper() and k != "MIGRATIONS"]
    created = [t.name for m in schema.MIGRATIONS for t in m.creates]
    assert sorted(created) == sorted(names) and len(set(created)) == len(created)
    migration_names = [m.name for m in schema.MIGRATIONS]
    assert migration_names == sorted(set(migration_names))


def test_a_fresh_database_has_the_whole_typed_schema_before_the_first_row(tmp_path):
    store.open_db(tmp_path / "fresh.db").close()
    conn = sqlite3.connect(tmp_path / "fresh.db")
    for table in schema.current_tables().values():
        assert declared_types(conn, table.name) == {
            c.name: SQLITE_TYPES[c.type] for c in table.columns}, table.name
        assert conn.execute(f"SELECT count(*) FROM {table.name}").fetchone() == (0,)
    applied = [r[0] for r in conn.execute("SELECT name FROM _migrations ORDER BY name")]
    assert applied == [m.name for m in schema.MIGRATIONS]


def test_numbers_first_written_as_null_come_back_as_numbers(tmp_path):
    db = store.open_db(tmp_path / "t.db")
    store.save_rows(db, tables.JOBS, [{"id": "j", "exit_code": None, "finished_at": None,
                                       "cancel_requested": False}])
    store.save_rows(db, tables.JOBS, [{"id": "j", "exit_code": 3, "finished_at": 12.5,
                                       "cancel_requested": True}], replace=True)
    (job,) = store.load_rows(db, tables.JOBS)
    assert (job["exit_code"], job["finished_at"], job["cancel_requested"]) == (3, 12.5, 1)


def test_saving_outside_the_schema_is_refused(tmp_path):
    db = store.open_db(tmp_path / "t.db")
    with pytest.raises(ValueError, match="no table 'pairz'"):
        store.save_rows(db, "pairz", [{"id": "x"}])
    with pytest.raises(ValueError, match="table 'pairs' has no column 'humann'"):
        store.save_rows(db, tables.PAIRS, [{"id": "x", "humann": "a"}])
    with pytest.raises(ValueError, match="keyed by 'key'"):
        store.save_rows(db, tables.LABEL_SETTINGS, [{"key": "x"}], pk="id")
    assert store.count_rows(db, tables.PAIRS) == 0


def test_replace_overwrites_in_place_and_insert_keeps_the_first(tmp_path):
    db = store.open_db(tmp_path / "t.db")
    rows = [{"key": k, "value": "1"} for k in "abc"]
    assert store.save_rows(db, tables.LABEL_SETTINGS, rows) == 3
    assert store.save_rows(db, tables.LABEL_SETTINGS, [{"key": "a", "value": "2"}]) == 0
    store.save_rows(db, tables.LABEL_SETTINGS, [{"key": "b", "value": "3"}], replace=True)
    assert [(r["key"], r["value"]) for r in store.load_rows(db, tables.LABEL_SETTINGS)] == [
        ("a", "1"), ("b", "3"), ("c", "1")]


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_ddl_renders_for_both_dialects(dialect):
    (create, index) = schema.create_sql(schema.REQUESTS, dialect)
    assert '"key" TEXT PRIMARY KEY' in create and '"sample_index"' in create
    assert ("BIGINT NOT NULL DEFAULT 0" if dialect == "postgresql"
            else "INTEGER NOT NULL DEFAULT 0") in create
    assert index.startswith('CREATE INDEX IF NOT EXISTS "requests_status"')


# --- a database of the previous release ---------------------------------------------------------


@pytest.fixture
def upgraded(tmp_path):
    path = tmp_path / "release.db"
    shutil.copy(RELEASE_DB, path)
    conn = sqlite3.connect(path)
    before = {name: conn.execute(f"SELECT rowid, * FROM {name} ORDER BY rowid").fetchall()
              for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    return path, before


def test_previous_release_db_upgrades_in_place_and_keeps_every_row(upgraded):
    path, before = upgraded
    assert declared_types(sqlite3.connect(path), tables.JOBS)["exit_code"] == "TEXT"
    newer = {tables.HOSTED_BATCHES, tables.SERVICE_USERS, tables.SERVICE_TOKENS,
             tables.SERVICE_FILES, tables.SERVICE_AUDIT}  # born after the release: created empty
    assert set(before) == set(schema.current_tables()) - newer | {tables.MIGRATIONS}
    db = store.open_db(path)
    assert all(store.count_rows(db, name) == 0 for name in newer)
    for name, rows in before.items():
        if name == tables.MIGRATIONS:
            continue
        after = db.execute(f"SELECT rowid, * FROM {name} ORDER BY rowid").fetchall()
        assert len(after) == len(rows) > 0, name
        # same rows, same order; values equal (text numbers of untyped columns now numbers);
        # columns a later migration added come last and are null
        width = len(rows[0])
        assert [[str(v) for v in r[:width]] for r in after] == [
            [str(v) for v in r] for r in rows], name
        assert all(v is None for r in after for v in r[width:]), name
        assert declared_types(db.conn, name) == {
            c.name: SQLITE_TYPES[c.type] for c in schema.current_tables()[name].columns}
    job = list_jobs(db)[0]
    assert isinstance(job["exit_code"], int) and isinstance(job["finished_at"], float)
    db.close()
    assert store.migrate(store.open_db(path)) == []  # a second open changes nothing


def test_previous_release_db_reads_through_every_reader(upgraded):
    path, before = upgraded
    db = store.open_db(path)
    assert len(list(instance_rows(db))) == len(before[tables.SI_INSTANCES])
    assert len(list(sft_examples(db))) == len(before[tables.FLAN_EXAMPLES])
    (sample,) = load_samples(db)
    assert sample.status == "ok" and sample.rounds
    pairs = load_pairs(db)
    assert len(pairs) == 2 and {p["human"] for p in pairs} == {"a"}
    assert [p["constraints"] for p in pairs if "constraints" in p] == [[{"kind": "no_commas"}]]
    prompts = [ConstrainedPrompt.model_validate(r)
               for r in store.load_rows(db, tables.CONSTRAINED_PROMPTS)]
    assert len(prompts) == 2 and all(p.constraints for p in prompts)
    assert [s["status"] for s in store.load_rows(db, tables.PIPELINE_STAGES)] == ["done"]
    assert len(load_items(db)) == 3 and load_settings(db).min_gold == 1
    board = LabelBoard(db)
    assert board.progress()["votes"] == len(before[tables.LABEL_VOTES])
    assert len(store.load_rows(db, tables.LABEL_CONSENSUS)) == 2
    runs = store.load_rows(db, tables.RUNS)
    assert {r["kind"] for r in runs} >= {"self-instruct", "flan", "constitutional", "responses"}
    assert store.get_run(db, runs[0]["id"])["summary"]
    totals = store.ledger_totals(db)
    assert totals["ok"] == len(before[tables.REQUESTS]) and totals["pending"] == 0


def test_an_unknown_column_of_an_old_table_is_kept(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE pairs (id TEXT PRIMARY KEY, prompt TEXT, note_by_user TEXT)")
    conn.execute("INSERT INTO pairs VALUES ('p1', '\"hi\"', 'keep me')")
    conn.commit()
    conn.close()
    db = store.open_db(path)
    (row,) = store.load_rows(db, tables.PAIRS)
    assert row["note_by_user"] == "keep me" and row["human"] is None
    store.save_rows(db, tables.PAIRS, [{"id": "p2", "prompt": '"yo"'}])
    assert store.count_rows(db, tables.PAIRS) == 2


# --- the database thread -------------------------------------------------------------------------


def test_db_thread_has_its_own_connection_to_a_file_and_shares_memory(tmp_path):
    file_db = store.open_db(tmp_path / "t.db")
    memory_db = store.open_db(":memory:")

    async def go():
        on_file, in_memory = store.DBThread(file_db), store.DBThread(memory_db)
        try:
            other = await on_file.call(lambda db: db)
            same = await in_memory.call(lambda db: db)
            await on_file.call(store.save_rows, tables.LABEL_SETTINGS, [{"key": "k"}])
        finally:
            on_file.close()
            in_memory.close()
        return other, same

    other, same = asyncio.run(go())
    assert other is not file_db and other.location == file_db.location
    assert same is memory_db
    assert store.count_rows(file_db, tables.LABEL_SETTINGS) == 1
    assert store.count_rows(memory_db, tables.LABEL_SETTINGS) == 0  # still open
