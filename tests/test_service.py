"""`rlaif service` over real HTTP: a service process on loopback, jobs as CLI processes, the
scripted model server counting what it is asked, and the label queue behind the page. Every
request carries a token made with `rlaif service token create`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from align.cli import main
from align.labeling.agreement import fleiss_kappa, majority, mean_pairwise_cohen
from align.labeling.queue import LabelSettings, Vote, enqueue, read_items
from align.labeling.votes import LabelBoard
from datagen import store


def cli(*args) -> Result:
    """Run an rlaif command in this process (quick for commands that start no server)."""
    return CliRunner().invoke(main, [str(a) for a in args])


def rlaif_command(name: str) -> list[str]:
    """`python -m align.cli NAME`."""
    return [sys.executable, "-m", "align.cli", name]


USERS = {"admin": "admin", "op": "operator", "op2": "operator", "ann1": "annotator",
         "ann2": "annotator"}


def make_token(db: Path, name: str, role: str) -> str:
    """`rlaif service token create`: the token is the last line of its output."""
    result = cli("service", "token", "create", "--db", db, "--name", name, "--role", role)
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


class RunningService:
    """A `rlaif service` process on a free loopback port, with a token per user."""

    def __init__(self, proc: subprocess.Popen, url: str, log: Path,
                 tokens: dict[str, str]) -> None:
        self.proc = proc
        self.url = url
        self.log = log
        self.tokens = tokens

    def client(self, user: str | None = "op", **kwargs) -> httpx.Client:
        """A client sending the user's token (none for None)."""
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        return httpx.Client(base_url=self.url, timeout=30,
                            headers={**headers, **kwargs.pop("headers", {})}, **kwargs)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (job processes die with it, PR_SET_PDEATHSIG)."""
        self.proc.kill()
        self.proc.wait(10)


@contextmanager
def running_service(db: Path, *args: str, env: dict | None = None, workers: int = 2,
                    users: dict[str, str] = USERS) -> Iterator[RunningService]:
    """Start `rlaif service --port 0` on db (tokens made first), wait for its address line,
    stop it after."""
    tokens = {name: make_token(db, name, role) for name, role in users.items()}
    log = db.with_name(db.name + f".service-{time.monotonic_ns()}.log")
    with log.open("w") as err:
        proc = subprocess.Popen(
            [*rlaif_command("service"), "--db", str(db), "--port", "0", "--workers",
             str(workers), *args],
            stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, **(env or {})},
            start_new_session=True)
    try:
        url = wait_for(lambda: _address(log, proc), 60, "the service's address line")
        with httpx.Client(base_url=url, timeout=5) as client:
            wait_for(lambda: _answers(client), 30, "the service to answer")
        yield RunningService(proc, url, log, tokens)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _address(log: Path, proc: subprocess.Popen) -> str | None:
    text = log.read_text()
    if proc.poll() is not None:
        raise AssertionError(f"service exited {proc.returncode}: {text}")
    for line in text.splitlines():
        if line.startswith("service: http://"):
            return line.split()[1]
    return None


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/openapi.json").status_code in (200, 401)
    except httpx.TransportError:
        return False


def wait_for(check: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def write_batch(path: Path, count: int, prefix: str = "q") -> Path:
    with path.open("w") as fh:
        for i in range(count):
            fh.write(json.dumps({
                "custom_id": f"{prefix}-{i}", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "fake-model",
                         "messages": [{"role": "user", "content": f"{prefix}{i}"}]}}) + "\n")
    return path


def upload(client: httpx.Client, path: Path) -> str:
    """POST /v1/files with the file's bytes; the file id."""
    reply = client.post("/v1/files", params={"filename": path.name}, content=path.read_bytes())
    assert reply.status_code == 201, reply.text
    return reply.json()["id"]


def submit_batch(client: httpx.Client, src: Path, endpoint: str = "fake", **extra) -> dict:
    reply = client.post("/v1/jobs", json={"kind": "batch", "endpoint": endpoint, "options": {
        "input_file": upload(client, src), **extra}})
    assert reply.status_code == 201, reply.text
    return reply.json()


def fake_endpoint(fake_llm) -> tuple[str, str]:
    """The service option naming the scripted server as endpoint `fake`."""
    return "--endpoint", f"fake={fake_llm.base_url}"


def job_state(client: httpx.Client, job_id: str) -> dict:
    reply = client.get(f"/v1/jobs/{job_id}")
    assert reply.status_code == 200, reply.text
    return reply.json()


def server_events(client: httpx.Client, path: str) -> list[tuple[str, dict]]:
    events, name = [], None
    with client.stream("GET", path) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    return events


# --- jobs -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_submit_watch_fetch_and_share_the_ledger_with_the_cli(fake_llm, tmp_path):
    fake_llm.responder = lambda path, body: {
        "text": "echo: " + body["messages"][-1]["content"], "delay": 0.05}
    src = write_batch(tmp_path / "in.jsonl", 12)
    db = tmp_path / "r.db"
    with running_service(db, *fake_endpoint(fake_llm)) as svc, svc.client() as client:
        job = submit_batch(client, src, concurrency=2)
        assert job["status"] == "queued" and job["argv"][:2] == ["rlaif", "batch"]
        events = server_events(client, f"/v1/jobs/{job['id']}/events")
        assert events[-1][0] == "end" and events[-1][1]["status"] == "succeeded"
        done = [data["counts"]["done"] for _, data in events]
        assert done == sorted(done) and done[-1] == 12 and len(events) >= 2
        state = job_state(client, job["id"])
        assert state["counts"] == {"total": 12, "done": 12, "failed": 0, "pending": 0,
                                   "requests_ok": None, "requests_failed": None}
        assert state["tokens"]["prompt"] == 12 and state["tokens"]["completion"] == 24
        assert state["started_at"] <= state["finished_at"] and state["exit_code"] == 0
        results = client.get(f"/v1/jobs/{job['id']}/results")
        assert results.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(x) for x in results.text.splitlines()]
        assert [x["custom_id"] for x in lines] == [f"q-{i}" for i in range(12)]
        assert lines[5]["response"]["body"]["choices"][0]["message"]["content"] == "echo: q5"
        listed = client.get("/v1/jobs").json()["jobs"]
        assert [j["id"] for j in listed] == [job["id"]]
    assert len(fake_llm.requests) == 12
    cli = subprocess.run([*rlaif_command("batch"), str(src), "-o", str(tmp_path / "cli.jsonl"),
                          "--db", str(db), "--base-url", fake_llm.base_url],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert "12 from the ledger" in cli.stderr and len(fake_llm.requests) == 12


def test_cancel_stops_a_running_job(fake_llm, tmp_path):
    fake_llm.responder = lambda path, body: {"text": "slow", "delay": 0.3}
    src = write_batch(tmp_path / "in.jsonl", 30)
    with running_service(tmp_path / "r.db", *fake_endpoint(fake_llm)) as svc, \
            svc.client() as client:
        job = submit_batch(client, src, concurrency=1)
        wait_for(lambda: job_state(client, job["id"])["counts"]["done"] >= 1, 60, "progress")
        cancelled = client.post(f"/v1/jobs/{job['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        wait_for(lambda: job_state(client, job["id"])["status"] == "cancelled", 30, "cancel")
        sent = len(fake_llm.requests)
        time.sleep(0.8)
        assert len(fake_llm.requests) == sent < 30
        assert client.get(f"/v1/jobs/{job['id']}/results").status_code == 409
        again = client.post(f"/v1/jobs/{job['id']}/cancel")
        assert again.status_code == 409 and "cancelled" in again.json()["detail"]
        assert client.get("/v1/jobs/job-nope").status_code == 404


@pytest.mark.slow
def test_sigkilled_service_resumes_its_job_without_paying_twice(fake_llm, tmp_path):
    fake_llm.responder = lambda path, body: {
        "text": "echo: " + body["messages"][-1]["content"], "delay": 0.08}
    src = write_batch(tmp_path / "in.jsonl", 40)
    db = tmp_path / "r.db"
    with running_service(db, *fake_endpoint(fake_llm)) as svc, svc.client() as client:
        job = submit_batch(client, src, concurrency=2)
        wait_for(lambda: job_state(client, job["id"])["counts"]["done"] >= 10, 60, "progress")
        svc.kill()
    sent_at_kill = len(fake_llm.requests)
    time.sleep(0.5)  # the job process went with the service: nothing more is sent
    assert len(fake_llm.requests) == sent_at_kill < 40
    ledger = store.open_db(db)
    answered = {r["body"] for r in store.load_rows(ledger, "requests", status="ok")}
    assert 10 <= len(answered) < 40
    assert store.load_rows(ledger, "jobs")[0]["status"] == "running"
    with running_service(db, *fake_endpoint(fake_llm)) as svc, svc.client() as client:
        wait_for(lambda: job_state(client, job["id"])["status"] == "succeeded", 90, "resume")
        state = job_state(client, job["id"])
        assert state["runs"] == 2 and state["counts"]["done"] == 40
        lines = client.get(f"/v1/jobs/{job['id']}/results").text.splitlines()
        assert len(lines) == 40 and all(json.loads(x)["error"] is None for x in lines)
    asked = Counter(json.dumps(r["body"], sort_keys=True, separators=(",", ":"))
                    for r in fake_llm.requests)
    assert len(asked) == 40
    assert all(asked[body] == 1 for body in answered)  # answered before the kill: never again
    assert len(fake_llm.requests) - 40 <= 2  # at most the two in flight at the kill


def test_bad_job_bodies_are_422_naming_what_is_wrong(tmp_path):
    src = write_batch(tmp_path / "in.jsonl", 2)
    broken = tmp_path / "broken.jsonl"
    broken.write_text(src.read_text() + "{not json\n")
    with running_service(tmp_path / "r.db", workers=0) as svc, svc.client() as client:
        good, bad = upload(client, src), upload(client, broken)
        cases = [
            ({"kind": "batch", "options": {"input_file": good, "bogus": 1}}, "bogus"),
            ({"kind": "batch", "options": {"input_file": good, "concurrency": "many"}},
             "concurrency"),
            ({"kind": "batch", "options": {"input_file": good, "concurrency": 0}},
             "concurrency"),
            ({"kind": "batch", "options": {"concurrency": 2}}, "input_file"),
            ({"kind": "batch", "options": {"input_file": good, "db": "other.db"}}, "db"),
            ({"kind": "batch", "options": {"input_file": bad}}, "input_file"),
            ({"kind": "label", "options": {"orders": "sideways"}}, "orders"),
            ({"kind": "label", "options": {"soft": "yes"}}, "soft"),
            ({"kind": "teleport", "options": {}}, "kind"),
            ({"kind": "batch", "options": {}, "extra": 1}, "extra"),
            ({"kind": "batch", "endpoint": "nowhere", "options": {"input_file": good}},
             "endpoint"),
            ({"kind": "batch", "options": {"input_file": good, "concurrency": 2,
                                           "--concurrency": 3}}, "--concurrency"),
        ]
        for body, name in cases:
            reply = client.post("/v1/jobs", json=body)
            assert reply.status_code == 422, (body, reply.text)
            detail = reply.json()["detail"][0]
            assert name in detail["loc"], (name, detail)
        assert f"inputs/{bad}:3" in client.post("/v1/jobs", json=cases[5][0]).text
        assert client.get("/v1/jobs").json() == {"jobs": [], "next_offset": None}


def test_endpoint_options_are_checked_at_start(tmp_path):
    for spec, says in (("bad", "NAME=URL"), ("x=ftp://h/v1", "http(s)"),
                       ("x=http://h/v1,key_env=RLAIF_NO_SUCH_VAR", "RLAIF_NO_SUCH_VAR"),
                       ("x=http://h/v1,colour=red", "colour")):
        result = cli("service", "--db", tmp_path / "x.db", "--port", "0", "--endpoint", spec)
        assert result.exit_code == 2 and says in result.output, (spec, result.output)


def test_token_commands_create_list_and_revoke(tmp_path):
    db = tmp_path / "t.db"
    token = make_token(db, "Ann\u200b ", "annotator")
    assert token.startswith("rlaif_") and len(token) > 40
    again = cli("service", "token", "create", "--db", db, "--name", "ANN", "--role", "admin")
    assert again.exit_code == 2 and "already a annotator" in again.output
    listed = cli("service", "token", "list", "--db", db)
    assert listed.exit_code == 0 and "\tann\tannotator\t" in listed.output
    assert token not in listed.output
    stored = json.dumps(store.load_rows(store.open_db(db), "service_tokens"))
    assert token not in stored  # only the hash is kept
    token_id = listed.output.split("\t")[0]
    assert cli("service", "token", "revoke", "--db", db, "--id", token_id).exit_code == 0
    assert "revoked" in cli("service", "token", "list", "--db", db).output
    missing = cli("service", "token", "revoke", "--db", db, "--id", token_id)
    assert missing.exit_code == 2 and "no live token" in missing.output


# --- the API against its own OpenAPI document -----------------------------------------------

@pytest.mark.slow
def test_api_conforms_to_its_openapi_document(tmp_path):
    """Every operation, with bodies and parameters drawn from /openapi.json (valid and
    invalid ones), sent with the token of each role, answers without a server error, with a
    documented status code, content type and response schema."""
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis import checks as st

    checks = [st.not_a_server_error, st.status_code_conformance, st.content_type_conformance,
              st.response_schema_conformance]
    with running_service(tmp_path / "r.db", workers=0) as svc:
        headers = {"Authorization": f"Bearer {svc.tokens['admin']}"}
        schema = schemathesis.openapi.from_url(svc.url + "/openapi.json", headers=headers)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 20
        for user in ("admin", "op", "ann1"):
            auth = {"Authorization": f"Bearer {svc.tokens[user]}"}
            for operation in operations:
                invalid = "requestBody" in operation.definition.raw or any(
                    p.location == "query" for p in operation.iter_parameters())
                modes = [GenerationMode.POSITIVE, *([GenerationMode.NEGATIVE] if invalid else [])]
                for mode in modes:
                    fuzz(operation, mode, svc.url, auth, checks)


def fuzz(operation, mode, url: str, auth: dict, checks: list) -> None:
    """A few schemathesis cases of one operation, sent with one token."""
    from hypothesis import HealthCheck, Phase, given, settings

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=2, deadline=None, derandomize=True, database=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    def conforms(case):
        case.call_and_validate(base_url=url, checks=checks, headers=auth)

    conforms()


# --- the label queue ------------------------------------------------------------------------------


def pair(i: int, **extra) -> dict:
    return {"id": f"p{i}", "prompt": f"question {i}", "response_a": f"first answer {i}",
            "response_b": f"second answer {i}", **extra}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_consensus_and_kappa_by_hand():
    assert majority(["a", "a", "b"]) == ("a", False)
    assert majority(["a", "b"]) == ("no consensus", True)  # a split is not a human tie
    assert majority(["fail", "fail", "a"]) == ("fail", False)
    # three raters, four units: a a a | a a b | b b b | tie b b
    units = [["a", "a", "a"], ["a", "a", "b"], ["b", "b", "b"], ["tie", "b", "b"]]
    # P_i = 1, 1/3, 1, 1/3 -> P = 2/3; p_a = 5/12, p_b = 6/12, p_tie = 1/12
    chance = (5 / 12) ** 2 + (6 / 12) ** 2 + (1 / 12) ** 2
    assert fleiss_kappa(units) == pytest.approx((2 / 3 - chance) / (1 - chance))
    raters = {"r1": {"u1": "a", "u2": "a", "u3": "b", "u4": "tie"},
              "r2": {"u1": "a", "u2": "a", "u3": "b", "u4": "b"},
              "r3": {"u1": "a", "u2": "b", "u3": "b", "u4": "b"}}
    # r1-r2: po 3/4, pe (2*2 + 1*2 + 0)/16 = 6/16 -> 0.6; r1-r3: po 2/4, pe (2*1+1*3)/16 = 5/16
    # -> 3/11; r2-r3: po 3/4, pe (2*1 + 2*3)/16 = 8/16 -> 0.5
    mean, used = mean_pairwise_cohen(raters)
    assert used == 3 and mean == pytest.approx((0.6 + 3 / 11 + 0.5) / 3)


def test_label_queue_strategies_and_export_for_judge_report(tmp_path):
    labels = write_jsonl(tmp_path / "labels.jsonl", [
        pair(0, preferred="a", p_a=0.95, consistent=True),
        pair(1, preferred="tie", p_a=0.52, consistent=True),
        pair(2, preferred="tie", p_a=0.8, consistent=False),
        pair(3, preferred="b", p_a=0.35, consistent=True),
        pair(4, preferred="a", p_a=0.7, consistent=True, panel=[
            {"judge": "pairwise", "preferred": "a"}, {"judge": "score", "preferred": "b"}]),
    ])
    gold = write_jsonl(tmp_path / "gold.jsonl", [pair(9, human="a")])
    db = tmp_path / "q.db"
    queue = cli("label-queue", "--db", db, "--from-labels", labels, "--sample", "2",
                "--strategy", "uncertain", "--gold", gold, "--annotators-per-pair", "2")
    assert queue.exit_code == 0, queue.output
    assert "2 pairs (uncertain) and 1 gold" in queue.output
    board = LabelBoard(store.open_db(db))
    assert [i.pair_id for i in board.regular()] == ["p1", "p3"]
    disagree = cli("label-queue", "--db", db, "--from-labels", labels, "--sample", "2",
                   "--strategy", "disagree")
    assert disagree.exit_code == 0, disagree.output
    board.sync()
    assert [i.pair_id for i in board.regular()] == ["p1", "p3", "p4", "p2"]  # both disagree
    for name in ("ann", "bob"):
        for item in board.regular()[:2]:
            board.record(Vote(item_id=item.id, annotator=name, choice="b"))
    out = tmp_path / "human.jsonl"
    export = cli("label-export", "--db", db, "-o", out, "--complete-only")
    assert export.exit_code == 0, export.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["id"], r["human"]) for r in rows] == [("p1", "b"), ("p3", "b")]
    from align.cli import main as rlaif

    report = CliRunner().invoke(rlaif, ["judge-report", str(out), "--json"])
    assert report.exit_code == 0, report.output
    human = json.loads(report.stdout)["human"]  # judge said tie (p1) and b (p3); humans b, b
    assert human["n"] == 2 and human["accuracy"] == 0.5
    bad = cli("label-queue", "--db", db, "--pairs", write_jsonl(tmp_path / "p.jsonl", [pair(1)]),
              "--strategy", "uncertain")
    assert bad.exit_code == 2 and "p_a" in bad.output


def test_gold_flagging_kway_expansion_and_pairs_table_human(tmp_path):
    db = store.open_db(tmp_path / "b.db")
    store.save_rows(db, "pairs", [pair(0)], pk="id")
    items = read_items(write_jsonl(tmp_path / "p.jsonl", [
        pair(0), {"id": "r", "prompt": "rank", "responses": ["x", "y", "z"]}]), required=2)
    gold = read_items(write_jsonl(tmp_path / "g.jsonl",
                                  [pair(10 + i, human="a") for i in range(3)]), gold=True)
    enqueue(db, [*items, *gold], LabelSettings(min_gold=2, gold_every=1))
    board = LabelBoard(db)
    seen = {"good": [], "careless": [], "third": []}
    for name in seen:
        while (item := board.next_item(name)) is not None:
            seen[name].append(item.pair_id)
            if item.gold:
                choice = "a" if name != "careless" else "b"
                board.record(Vote(item_id=item.id, annotator=name, choice=choice))
            elif len(item.responses) == 2:
                board.record(Vote(item_id=item.id, annotator=name,
                                  choice="a" if name != "careless" else "b"))
            else:
                ranking = [2, 0, 1] if name != "careless" else [0, 1, 2]
                board.record(Vote(item_id=item.id, annotator=name, choice="rank",
                                  ranking=ranking))
    assert seen["good"][0] == "p10" and seen["good"][1] in ("p0", "r")  # gold mixed in
    assert board.flagged() == {"careless"}
    stats = board.stats()
    assert [a["name"] for a in stats["annotators"] if a["flagged"]] == ["careless"]
    export = {r["id"]: r for r in board.export()}
    assert export["p0"]["human"] == "a" and export["p0"]["human_annotators"] == ["good", "third"]
    # ranking z > x > y: x-y a, x-z b, y-z b
    assert [export[f"r:{p}"]["human"] for p in ("0-1", "0-2", "1-2")] == ["a", "b", "b"]
    assert store.load_rows(db, "pairs", id="p0")[0]["human"] == "a"
    assert stats["fleiss_kappa"] == 1.0
    with pytest.raises(ValueError):
        board.record(Vote(item_id=items[1].id, annotator="x", choice="a"))


def test_jobs_take_the_cli_names_and_a_typo_gets_the_closest_one(tmp_path):
    # issue 17: the batch input is the CLI's INPUT.jsonl argument, so `input` names it too
    src = write_batch(tmp_path / "in.jsonl", 2)
    with running_service(tmp_path / "r.db", workers=0) as svc, svc.client() as client:
        good = upload(client, src)
        reply = client.post("/v1/jobs", json={"kind": "batch", "options": {"input": good}})
        assert reply.status_code == 201, reply.text
        typo = client.post("/v1/jobs", json={"kind": "batch", "options": {
            "input": good, "concurency": 2}})
        assert typo.status_code == 422
        detail = typo.json()["detail"][0]
        assert "concurency" in detail["loc"] and "did you mean concurrency?" in detail["msg"]
