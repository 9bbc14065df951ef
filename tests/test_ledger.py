"""The request ledger on both backends, SQLite and a real PostgreSQL 15 (issue 21): migrations
from an empty database, leases (a live worker's answer is awaited, an expired or dead worker's
request is sent again once, completed requests never), concurrent processes sending each request
once, exactly-once under SIGKILL, and `rlaif db copy` in both directions."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from align.cli import main
from datagen import store
from datagen.endpoint.client import CHAT_PATH, ClientConfig, LLMClient, run_async
from datagen.endpoint.keys import canonical_json, request_key
from datagen.store import schema, tables

RLAIF = [sys.executable, "-m", "align.cli"]
RELEASE_DB = Path(__file__).parent / "data" / "release-0.1.db"
BODY = {"model": "fake-model", "messages": [{"role": "user", "content": "hello"}]}
REMOTE = "elsewhere/1/remote"  # a worker on another machine: only its lease's expiry frees it


def pending(body: dict) -> dict:
    return {"key": request_key(CHAT_PATH, body), "path": CHAT_PATH, "model": body["model"],
            "body": canonical_json(body)}


def ask(fake, target: str, body: dict = BODY, **config):
    async def go():
        async with LLMClient(ClientConfig(base_url=fake.base_url, max_retries=0, **config),
                             store.open_db(target)) as client:
            return await client.call(CHAT_PATH, body)
    return run_async(go())


def write_batch(path: Path, count: int) -> Path:
    path.write_text("".join(json.dumps({
        "custom_id": f"q-{i}", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "fake-model", "messages": [{"role": "user", "content": f"q{i}"}]}})
        + "\n" for i in range(count)))
    return path


def contents(fake) -> list[str]:
    return [r["body"]["messages"][0]["content"] for r in fake.requests]


# --- schema ----------------------------------------------------------------------------------


def test_migrations_from_empty_make_the_whole_schema_once_even_when_opened_at_once(db_target):
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            store.open_db(db_target).close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    db = store.open_db(db_target)
    for table in schema.current_tables().values():
        assert store.table_columns(db, table.name) == table.column_names(), table.name
    applied = [r["name"] for r in store.load_rows(db, tables.MIGRATIONS, order_by="name")]
    assert applied == [m.name for m in schema.MIGRATIONS]
    assert store.migrate(db) == []


def test_a_ledger_of_the_previous_version_upgrades_in_place(db_target, fake_llm):
    # the version before leases: no worker_id/lease_until, and a request left pending
    db = store.open_db(db_target)
    (last,) = [m for m in schema.MIGRATIONS if m.name == "0013_request_leases"]
    with store.transaction(db):
        for _, column in last.adds:
            db.execute(f'ALTER TABLE requests DROP COLUMN "{column.name}"')
        db.execute("DELETE FROM _migrations WHERE name = ?", [last.name])
    store.ledger_add_pending(db, [pending(BODY)])
    db.close()
    db = store.open_db(db_target)
    assert store.table_columns(db, tables.REQUESTS)[-2:] == ["worker_id", "lease_until"]
    assert store.ledger_lookup(db, [pending(BODY)["key"]])[pending(BODY)["key"]]["status"] == (
        "pending")
    assert ask(fake_llm, db_target).ok and len(fake_llm.requests) == 1  # sent again, once
    assert ask(fake_llm, db_target).from_ledger and len(fake_llm.requests) == 1


def test_rows_read_back_the_same_on_both_backends(db_target):
    db = store.open_db(db_target)
    votes = [{"id": f"v{i}", "item_id": "it", "annotator": name, "choice": "a",
              "ranking": [2, 0, 1] if i else None, "gold": bool(i), "created_at": 1.5 + i}
             for i, name in enumerate(["zed", "amy", "bob"])]
    assert store.save_rows(db, tables.LABEL_VOTES, votes) == 3
    assert store.save_rows(db, tables.LABEL_VOTES, votes) == 0
    store.save_rows(db, tables.LABEL_VOTES, [votes[0] | {"choice": "b"}], replace=True)
    rows = store.load_rows(db, tables.LABEL_VOTES)
    assert [(r["annotator"], r["choice"], r["gold"], r["ranking"], r["created_at"])
            for r in rows] == [("zed", "b", 0, None, 1.5), ("amy", "a", 1, "[2, 0, 1]", 2.5),
                               ("bob", "a", 1, "[2, 0, 1]", 3.5)]
    assert store.count_rows(db, tables.LABEL_VOTES, choice="a") == 2
    store.start_run(db, "r1", "test", {"n": 1}, 7)
    store.finish_run(db, "r1", "done", {"rows": 3})
    assert store.get_run(db, "r1")["summary"] == {"rows": 3}


# --- leases ----------------------------------------------------------------------------------


def test_a_live_workers_lease_is_awaited_and_its_answer_used(db_target, fake_llm):
    db = store.open_db(db_target)
    key = pending(BODY)["key"]
    assert store.ledger_claim(db, [pending(BODY)], REMOTE, 30) == {key}

    def other_worker_finishes() -> None:
        time.sleep(0.6)
        answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "theirs"},
                               "finish_reason": "stop"}]}
        store.ledger_finish(store.open_db(db_target), [
            {"key": key, "status": "ok", "status_code": 200, "response": json.dumps(answer)}])

    threading.Thread(target=other_worker_finishes).start()
    result = ask(fake_llm, db_target)
    assert result.ok and result.from_ledger and result.text == "theirs"
    assert fake_llm.requests == []


def test_an_expired_lease_is_sent_again_once_and_then_never(db_target, fake_llm):
    db = store.open_db(db_target)
    store.ledger_claim(db, [pending(BODY)], REMOTE, 0.5)
    started = time.monotonic()
    result = ask(fake_llm, db_target, lease_s=5)
    assert result.ok and not result.from_ledger and time.monotonic() - started >= 0.4
    assert contents(fake_llm) == ["hello"]
    row = store.ledger_lookup(db, [result.key])[result.key]
    assert row["status"] == "ok" and row["lease_until"] is None and row["worker_id"] != REMOTE
    assert store.ledger_claim(db, [pending(BODY)], REMOTE, 30) == set()  # completed: never
    assert ask(fake_llm, db_target).from_ledger and len(fake_llm.requests) == 1


def test_a_lease_of_an_exited_process_of_this_machine_is_free_at_once(db_target, fake_llm):
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    dead = f"{socket.gethostname()}/{child.stdout.strip()}/gone"
    assert store.worker_gone(dead) and not store.worker_gone(store.new_worker_id())
    store.ledger_claim(store.open_db(db_target), [pending(BODY)], dead, 600)
    started = time.monotonic()
    assert ask(fake_llm, db_target).ok and time.monotonic() - started < 5
    assert len(fake_llm.requests) == 1


# --- many processes ----------------------------------------------------------------------------


@pytest.mark.slow
def test_concurrent_processes_send_each_request_once(db_target, fake_llm, tmp_path):
    fake_llm.responder = lambda path, body: {"delay": 0.02,
                                             "text": "a " + body["messages"][0]["content"]}
    src = write_batch(tmp_path / "in.jsonl", 90)
    store.open_db(db_target).close()
    procs = [subprocess.Popen([*RLAIF, "batch", str(src), "-o", str(tmp_path / f"{n}.out"),
                               "--db", db_target, "--base-url", fake_llm.base_url,
                               "--concurrency", "8"], stderr=subprocess.PIPE, text=True)
             for n in range(3)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "locked" not in err
    assert sorted(contents(fake_llm)) == sorted(f"q{i}" for i in range(90))  # each once
    for n in range(3):
        lines = [json.loads(x) for x in (tmp_path / f"{n}.out").read_text().splitlines()]
        assert [x["response"]["body"]["choices"][0]["message"]["content"] for x in lines] == [
            f"a q{i}" for i in range(90)]


@pytest.mark.slow
def test_sigkill_then_rerun_pays_nothing_twice(db_target, fake_llm, tmp_path):
    fake_llm.responder = lambda path, body: {"delay": 0.05,
                                             "text": "a " + body["messages"][0]["content"]}
    total = 80
    src = write_batch(tmp_path / "in.jsonl", total)
    out = tmp_path / "o.jsonl"
    args = [*RLAIF, "batch", str(src), "-o", str(out), "--db", db_target,
            "--base-url", fake_llm.base_url, "--concurrency", "4"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while len(fake_llm.requests) < total // 3 and time.time() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = time.time()
    first_run = list(fake_llm.requests)
    answered = {r["body"]["messages"][0]["content"] for r in first_run
                if r["answered_at"] is not None and r["answered_at"] < killed_at - 0.1}
    assert 0 < len(first_run) < total and answered
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    second_run = [r["body"]["messages"][0]["content"] for r in fake_llm.requests[len(first_run):]]
    resent = set(second_run) & {r["body"]["messages"][0]["content"] for r in first_run}
    assert not resent & answered, "an answered request was paid for twice"
    # the rerun sends what was never sent, and again only what was in flight at the kill
    assert len(second_run) == len(set(second_run)) == total - len(first_run) + len(resent)
    assert sorted(json.loads(x)["custom_id"] for x in out.read_text().splitlines()) == sorted(
        f"q-{i}" for i in range(total))
    totals = store.ledger_totals(store.open_db(db_target))
    assert totals["ok"] == total and totals["pending"] == 0


# --- moving a run ------------------------------------------------------------------------------


def dump(target: str) -> dict[str, list[dict]]:
    db = store.open_db(target)
    return {name: store.load_rows(db, name) for name in schema.current_tables()}


@pytest.mark.slow
def test_db_copy_moves_a_run_to_postgresql_and_back(postgres, tmp_path):
    source = tmp_path / "release.db"
    source.write_bytes(RELEASE_DB.read_bytes())
    url = postgres.new_database()
    first = CliRunner().invoke(main, ["db", "copy", "--from", str(source), "--to", url])
    assert first.exit_code == 0, first.output
    assert "pairs: 2 rows, 2 new" in first.output
    original = dump(str(source))
    assert dump(url) == original and sum(map(len, original.values())) > 50
    again = CliRunner().invoke(main, ["db", "copy", "--from", str(source), "--to", url])
    assert "(0 new)" in again.stderr
    back = tmp_path / "back.db"
    assert CliRunner().invoke(main, ["db", "copy", "--from", url, "--to", str(back)]).exit_code == 0
    assert dump(str(back)) == original
    exported = CliRunner().invoke(main, ["export", "pairs", "--db", url,
                                         "-o", str(tmp_path / "pairs.jsonl")])
    assert exported.exit_code == 0, exported.output
    assert len((tmp_path / "pairs.jsonl").read_text().splitlines()) == 2


def test_db_urls_with_a_password_or_no_server_are_refused_in_one_line(tmp_path):
    secret = "hunter2-SECRET"
    source = tmp_path / "release.db"
    source.write_bytes(RELEASE_DB.read_bytes())
    result = CliRunner().invoke(main, ["db", "copy", "--from", str(source), "--to",
                                       f"postgresql://me:{secret}@127.0.0.1:1/x"])
    assert result.exit_code == 2 and secret not in result.output
    assert "PGPASSWORD" in result.output
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = CliRunner().invoke(main, ["db", "copy", "--from", str(source), "--to",
                                       f"postgresql://me@127.0.0.1:{port}/x"])
    assert result.exit_code == 2 and "cannot open the database" in result.output
    assert "Traceback" not in result.output
    # a command that keeps its data in a SQLite file refuses a URL in one line
    result = CliRunner().invoke(main, ["report", "--db", f"postgresql://me@127.0.0.1:{port}/x",
                                       "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 2 and "keeps its data in a SQLite file" in result.output


def test_asyncio_is_not_blocked_by_a_waiting_lease(db_target, fake_llm):
    # while one request waits for another worker's lease, others are sent and answered
    db = store.open_db(db_target)
    store.ledger_claim(db, [pending(BODY)], REMOTE, 1.0)
    other = {"model": "fake-model", "messages": [{"role": "user", "content": "other"}]}

    async def go():
        async with LLMClient(ClientConfig(base_url=fake_llm.base_url, max_retries=0),
                             store.open_db(db_target)) as client:
            waiting = asyncio.create_task(client.call(CHAT_PATH, BODY))
            quick = await client.call(CHAT_PATH, other)
            return quick, waiting.done(), await waiting

    quick, done_early, slow = run_async(go())
    assert quick.ok and not done_early and slow.ok
    assert contents(fake_llm) == ["other", "hello"]


@pytest.mark.parametrize("target", ["postgresql://u:pw@h/db", "rlaif.db"])
def test_shown_targets_hide_passwords(target):
    assert "pw" not in store.shown_target(target)
