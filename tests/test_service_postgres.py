"""`rlaif service` as several processes on one PostgreSQL database (issue 21, item 2): a real
throw-away PostgreSQL cluster (tests/postgres.py), two service processes sharing it and one
data directory, the scripted model server counting what it is asked. One process is SIGKILLed
while it runs jobs: the other takes them over, every job ends once, and no request answered
before the kill is sent again. The label queue is shared the same way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from test_service import (
    RunningService,
    _address,
    _answers,
    make_token,
    rlaif_command,
    upload,
    wait_for,
    write_batch,
)

from datagen import store
from datagen.store.tables import JOBS

JOBS_COUNT = 50
LINES = 2


@contextmanager
def service_process(url: str, data_dir: Path, log: Path, tokens: dict[str, str],
                    *args: str) -> Iterator[RunningService]:
    """One `rlaif service --db postgresql://...` process on a free loopback port."""
    with log.open("w") as err:
        proc = subprocess.Popen(
            [*rlaif_command("service"), "--db", url, "--data-dir", str(data_dir), "--port", "0",
             *args], stdout=subprocess.DEVNULL, stderr=err, env=dict(os.environ),
            start_new_session=True)
    try:
        address = wait_for(lambda: _address(log, proc), 60, "the service's address line")
        with httpx.Client(base_url=address, timeout=5) as client:
            wait_for(lambda: _answers(client), 30, "the service to answer")
        yield RunningService(proc, address, log, tokens)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def jobs_table(url: str) -> dict[str, dict]:
    db = store.open_db(url)
    try:
        return {row["id"]: row for row in store.load_rows(db, JOBS)}
    finally:
        db.close()


def canonical(body: dict) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


@pytest.mark.slow
def test_two_services_on_postgres_finish_every_job_once_after_one_is_killed(
        postgres, fake_llm, tmp_path):
    fake_llm.responder = lambda path, body: {
        "text": "echo: " + body["messages"][-1]["content"], "delay": 0.05}
    url = postgres.new_database()
    tokens = {"op": make_token(url, "op", "operator")}
    shared = tmp_path / "shared"
    args = ("--workers", "3", "--user-jobs", str(JOBS_COUNT),
            "--endpoint", f"fake={fake_llm.base_url}")
    with ExitStack() as stack:
        first = stack.enter_context(service_process(url, shared, tmp_path / "a.log", tokens,
                                                    *args))
        second = stack.enter_context(service_process(url, shared, tmp_path / "b.log", tokens,
                                                     *args))
        a, b = stack.enter_context(first.client()), stack.enter_context(second.client())
        submitted = []
        for i in range(JOBS_COUNT):
            client = a if i % 2 else b
            src = write_batch(tmp_path / f"in{i}.jsonl", LINES, prefix=f"j{i}-")
            reply = client.post("/v1/jobs", json={"kind": "batch", "endpoint": "fake",
                                                  "options": {"input_file": upload(client, src),
                                                              "concurrency": 2}})
            assert reply.status_code == 201, reply.text
            submitted.append(reply.json()["id"])
        # progress of a job submitted to A, watched through B: SSE reads the database
        watched = submitted[1]

        def first_running() -> list[dict]:
            rows = jobs_table(url).values()
            return [r for r in rows if r["status"] == "running"
                    and r["worker_id"].split("/")[1] == str(first.proc.pid)]

        wait_for(lambda: sum(r["status"] == "succeeded" for r in jobs_table(url).values()) >= 8
                 and first_running(), 60, "both services running jobs")
        first.kill()
        at_kill = jobs_table(url)
        ledger = store.open_db(url)
        answered = {r["body"] for r in store.load_rows(ledger, "requests", status="ok")}
        in_flight = store.count_rows(ledger, "requests", status="pending")
        taken_over = {r["id"] for r in at_kill.values() if r["status"] == "running"
                      and r["worker_id"].split("/")[1] == str(first.proc.pid)}
        assert taken_over and answered
        events = []
        with b.stream("GET", f"/v1/jobs/{watched}/events", timeout=90) as stream:
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    events.append(line[7:])
        assert events[-1] == "end"
        wait_for(lambda: all(r["status"] in ("succeeded", "failed", "cancelled")
                             for r in jobs_table(url).values()), 90, "every job to end")
        final = jobs_table(url)
        assert sorted(final) == sorted(submitted)
        assert all(r["status"] == "succeeded" and r["exit_code"] == 0 for r in final.values())
        assert all(r["worker_id"] is None and r["lease_until"] is None for r in final.values())
        for job_id, row in at_kill.items():  # ended before the kill: never run again
            if row["status"] == "succeeded":
                assert final[job_id]["runs"] == 1
                assert final[job_id]["finished_at"] == row["finished_at"]
        assert all(final[job_id]["runs"] == 2 for job_id in taken_over)
        for i, job_id in enumerate(submitted):  # results through the surviving process
            lines = [json.loads(x) for x in b.get(f"/v1/jobs/{job_id}/results").text.splitlines()]
            assert [x["custom_id"] for x in lines] == [f"j{i}--{k}" for k in range(LINES)]
            assert all(x["error"] is None for x in lines)
        assert store.count_rows(ledger, "requests", status="ok") == JOBS_COUNT * LINES
        ledger.close()
    asked = Counter(canonical(r["body"]) for r in fake_llm.requests)
    assert len(asked) == JOBS_COUNT * LINES
    assert all(asked[body] == 1 for body in answered)  # paid before the kill: never again
    assert sum(asked.values()) - JOBS_COUNT * LINES <= in_flight  # only those in flight


def test_votes_cast_through_two_services_land_in_one_queue(postgres, tmp_path):
    url = postgres.new_database()
    tokens = {name: make_token(url, name, role) for name, role in
              (("op", "operator"), ("ann1", "annotator"), ("ann2", "annotator"))}
    shared = tmp_path / "shared"
    with ExitStack() as stack:
        first = stack.enter_context(service_process(url, shared, tmp_path / "a.log", tokens,
                                                    "--workers", "0"))
        second = stack.enter_context(service_process(url, shared, tmp_path / "b.log", tokens,
                                                     "--workers", "0"))
        op = stack.enter_context(first.client("op"))
        pairs = [{"id": f"p{i}", "prompt": f"question {i}", "response_a": f"first {i}",
                  "response_b": f"second {i}"} for i in range(3)]
        reply = op.post("/label/api/items", json={"pairs": pairs, "annotators_per_pair": 2})
        assert reply.json() == {"added": 3}
        items = {}
        for name, service, choice in (("ann1", first, "a"), ("ann2", second, "b")):
            with service.client(name) as ann:
                while (item := ann.get("/label/api/next").json()["item"]) is not None:
                    vote = ann.post("/label/api/votes", json={"item_id": item["id"],
                                                              "choice": choice})
                    assert vote.status_code == 200, vote.text
                    items[item["prompt"]] = item["id"]
        rows = {r["id"]: r for r in map(json.loads, op.get("/label/api/export").text.splitlines())}
        assert set(rows) == {"p0", "p1", "p2"}
        for row in rows.values():  # both processes' votes, each counted once
            assert row["human_votes"] == {"a": 1, "b": 1}
            assert row["human_annotators"] == ["ann1", "ann2"]
        with second.client("ann1") as ann1:  # a re-vote on the other process replaces it
            assert ann1.post("/label/api/votes", json={"item_id": items["question 0"],
                                                       "choice": "b"}).status_code == 200
        rows = {r["id"]: r for r in map(json.loads, op.get("/label/api/export").text.splitlines())}
        assert rows["p0"]["human_votes"] == {"b": 2} and rows["p0"]["human"] == "b"
        with second.client("op") as op2:
            stats = op2.get("/label/api/stats").json()
            assert {a["name"]: a["votes"] for a in stats["annotators"]} == {"ann1": 3, "ann2": 3}


def _queued(db, count: int) -> None:
    store.save_rows(db, JOBS, [{"id": f"job-{i}", "kind": "batch", "status": "queued",
                                "runs": 0, "cancel_requested": False, "created_at": float(i)}
                               for i in range(count)], pk="id")


def test_job_leases_expire_and_are_taken_over(db_target):
    db = store.open_db(db_target)
    _queued(db, 1)
    job = store.job_claim(db, "host-a/1/x", 0.3)
    assert job["id"] == "job-0" and job["worker_id"] == "host-a/1/x"
    assert store.job_claim(db, "host-b/2/y", 0.3) is None  # held by a live lease
    assert store.job_renew(db, "host-a/1/x", 0.3) == {"job-0": False}
    assert store.job_claim(db, "host-a/1/x", 0.3) is None  # nor by its own holder
    time.sleep(0.35)
    assert store.job_claim(db, "host-b/2/y", 30)["id"] == "job-0"  # expired: taken over
    assert not store.job_update(db, "job-0", {"status": "succeeded"}, "host-a/1/x")
    assert store.job_cancel(db, "job-0")["status"] == "queued"  # held: marked, not ended
    assert store.job_renew(db, "host-b/2/y", 30) == {"job-0": True}  # the holder learns of it
    assert store.job_renew(db, "host-a/1/x", 30) == {}  # the old holder learns it lost it
    assert store.job_update(db, "job-0", {"status": "cancelled"}, "host-b/2/y")
    assert store.job_claim(db, "host-a/1/x", 30) is None  # finished jobs are never claimed
    db.close()


def test_concurrent_claims_on_postgres_take_distinct_jobs(postgres):
    url = postgres.new_database()
    db = store.open_db(url)
    _queued(db, 12)
    with ThreadPoolExecutor(4) as pool:
        def claim_all(worker: str) -> list[str]:
            own = store.open_db(url)
            taken = []
            while (job := store.job_claim(own, worker, 30)) is not None:
                taken.append(job["id"])
            own.close()
            return taken
        taken = list(pool.map(claim_all, [f"h/{i}/w" for i in range(4)]))
    flat = [job_id for part in taken for job_id in part]
    assert sorted(flat) == sorted(f"job-{i}" for i in range(12))  # each exactly once
    assert store.job_release(db, "h/0/w") == len(taken[0])
    db.close()
