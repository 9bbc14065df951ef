"""`rlaif service` as a trust boundary, against the real service on loopback: every attack of
issue 15 (shared/reference/security.md) replayed and refused, the role of every route checked
against a table, annotators kept honest, limits enforced, and state changes audited."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path

import httpx
import pytest
from fake_openai import FakeOpenAI
from test_service import (
    cli,
    job_state,
    make_token,
    running_service,
    upload,
    wait_for,
    write_batch,
    write_jsonl,
)

from align.service.workspace import JobOptionError, Workspace

CANARY = "canary-9f1c2e7d-secret-value"
MEMORY_BOUND_KB = 1_500_000  # the service process stays well under 1.5 GB resident


def pair(i: int, **extra) -> dict:
    return {"id": f"p{i}", "prompt": f"question {i}", "response_a": f"first {i}",
            "response_b": f"second {i}", **extra}


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def raw_request(url: str, data: bytes) -> bytes:
    """Send bytes as they are (no Host header, say) and return the reply's first line."""
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        return sock.recv(4096).split(b"\r\n")[0]


def test_every_attack_is_refused(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched\n")
    src = write_batch(tmp_path / "in.jsonl", 2)
    pipeline = tmp_path / "evil.yaml"
    with FakeOpenAI() as canary:
        args = ("--header-timeout-s", "1", "--endpoint", f"fake={canary.base_url}", "--endpoint",
                f"lim={canary.base_url},models=m1|m2", "--max-upload-mb", "1",
                "--user-quota-mb", "1.5")
        pipeline.write_text("stages:\n  - stage: service\n    options: {host: 0.0.0.0}\n")
        with running_service(tmp_path / "r.db", *args, workers=1,
                             env={"RLAIF_CANARY": CANARY}) as svc, \
                svc.client("op") as op, svc.client("op2") as other:
            replies: list[httpx.Response] = []

            def send(client: httpx.Client, method: str, path: str, **kw) -> httpx.Response:
                reply = client.request(method, path, **kw)
                replies.append(reply)
                assert op.get("/v1/jobs").status_code == 200  # still answering
                return reply

            def job(options: dict, kind: str = "batch", **extra) -> httpx.Response:
                return send(op, "POST", "/v1/jobs", json={"kind": kind, "options": options,
                                                         **extra})

            mine = upload(op, src)
            theirs = upload(other, src)
            # write any file, read any file or the environment
            for output in (str(victim), "/etc/passwd", "/proc/self/environ", "../../x.jsonl",
                           "inputs/../../../x.jsonl"):
                reply = job({"output": output, "limit": 1}, kind="constrained")
                assert reply.status_code == 422 and "output" in reply.json()["detail"][0]["loc"]
            for source in ("/dev/zero", "/proc/self/environ", str(src), "/tmp", theirs,
                           "file-0000000000000000"):
                reply = job({"input_file": source})
                assert reply.status_code == 422, (source, reply.text)
                assert "input_file" in reply.json()["detail"][0]["loc"]
            # forward a secret anywhere
            for options in ({"base_url": canary.base_url, "api_key_env": "RLAIF_CANARY"},
                            {"api_key_env": "RLAIF_CANARY"}, {"base-url": canary.base_url}):
                assert job({"input_file": mine, **options}).status_code == 422
            assert job({"input_file": mine}, endpoint="http://127.0.0.1:9/v1").status_code == 422
            reply = job({"input_file": mine, "model": "m3"}, endpoint="lim")
            assert reply.status_code == 422 and "model" in reply.json()["detail"][0]["loc"]
            label = job({"input_path": mine, "judge_base_url": canary.base_url}, kind="label")
            assert label.status_code == 422
            # start anything through a pipeline
            evil = upload(op, pipeline)
            reply = job({"pipeline_file": evil}, kind="pipeline")
            assert reply.status_code == 422 and "cannot be a stage" in reply.text
            for stage in ("serve", "demo", "run x.yaml", "label-export"):
                pipeline.write_text(f"stages:\n  - stage: {stage}\n")
                assert job({"pipeline_file": upload(op, pipeline)},
                           kind="pipeline").status_code == 422, stage
            pipeline.write_text(f"stages:\n  - stage: generate constrained\n"
                                f"    options: {{output: {victim}, limit: 1}}\n")
            reply = job({"pipeline_file": upload(op, pipeline)}, kind="pipeline")
            assert reply.status_code == 422 and "outside the job's workspace" in reply.text
            assert job({"pipeline_file": evil, "output": str(tmp_path)},
                       kind="pipeline").status_code == 422
            # huge bodies: declared, chunked, uploads, quota
            huge = b'{"kind": "batch", "options": {"x": "' + b"a" * (9 << 20) + b'"}}'
            assert send(op, "POST", "/v1/jobs", content=huge,
                        headers={"Content-Type": "application/json"}).status_code == 413
            assert send(op, "POST", "/v1/jobs", content=iter([huge[:1 << 20]] * 9),
                        headers={"Content-Type": "application/json"}).status_code == 413
            files_dir = tmp_path / "r.db.data" / "files"
            before = sorted(files_dir.iterdir())
            assert send(op, "POST", "/v1/files", content=b"x" * (1 << 20) + b"x"
                        ).status_code == 413
            assert send(op, "POST", "/v1/files",
                        content=iter([b"x" * (1 << 19)] * 3)).status_code == 413  # chunked
            assert send(op, "POST", "/v1/files", content=b"y" * (900 << 10)).status_code == 201
            quota = send(op, "POST", "/v1/files", content=b"z" * (700 << 10))
            assert quota.status_code == 413 and "quota" in quota.text
            assert len(sorted(files_dir.iterdir())) == len(before) + 1  # nothing half-kept
            # DNS rebinding, cross-site requests, keys in URLs
            assert send(op, "POST", "/v1/jobs", json={"kind": "batch"},
                        headers={"Host": f"evil.example:{svc.url.rsplit(':', 1)[1]}"}
                        ).status_code == 421
            assert raw_request(svc.url, b"GET /v1/jobs HTTP/1.0\r\n\r\n").split()[1] == b"400"
            assert send(op, "POST", "/v1/jobs", json={"kind": "batch"},
                        headers={"Origin": "http://evil.example"}).status_code == 403
            with svc.client(None) as anonymous:
                key = svc.tokens["op"]
                assert send(anonymous, "GET", "/v1/jobs", params={"key": key}).status_code == 401
                assert send(anonymous, "GET", "/v1/jobs",
                            headers={"X-API-Key": key}).status_code == 401
                login = send(anonymous, "POST", "/label/api/login", json={"token": key},
                             headers={"Origin": svc.url})
                assert login.status_code == 200
                cookie = login.headers["set-cookie"]
                assert "HttpOnly" in cookie and "SameSite=strict" in cookie and key not in cookie
                assert "Secure" not in cookie  # plain http on loopback
                assert send(anonymous, "GET", "/v1/jobs").status_code == 200  # by the cookie
                no_origin = send(anonymous, "POST", "/v1/jobs", json={"kind": "batch"})
                assert no_origin.status_code == 403  # a cookie alone never changes state
            with svc.client(None) as proxied:  # the page came over TLS (a proxy in front)
                login = proxied.post("/label/api/login", json={"token": key},
                                     headers={"Origin": "https://127.0.0.1"})
                assert "Secure" in login.headers["set-cookie"]
            # slow and idle connections are closed
            host, port = svc.url.split("//")[1].split(":")
            with socket.create_connection((host, int(port)), timeout=10) as slow, \
                    socket.create_connection((host, int(port)), timeout=10) as idle:
                slow.sendall(b"GET /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                assert slow.recv(100) == b"" and idle.recv(100) == b""  # closed by the server
            # the bulk listing carries no options
            listed = op.get("/v1/jobs").json()["jobs"]
            assert all("options" not in j and "argv" not in j for j in listed)
            rss = rss_kb(svc.proc.pid)
        assert victim.read_text() == "untouched\n"
        assert not (tmp_path / "x.jsonl").exists()
        assert canary.requests == []  # the listener never heard from the service
        assert all(CANARY not in r.text for r in replies)
        assert rss < MEMORY_BOUND_KB
        assert CANARY not in svc.log.read_text()


def test_a_workspace_refuses_links_out_devices_and_fifos(tmp_path):
    root = tmp_path / "job"
    (root / "inputs").mkdir(parents=True)
    (root / "inputs" / "ok.jsonl").write_text("{}\n")
    (root / "out").symlink_to("/etc/passwd")
    (root / "zero").symlink_to("/dev/zero")
    os.mkfifo(root / "fifo")
    (root / "sub").mkdir()
    space = Workspace(root, {})
    assert space.path("x", "inputs/ok.jsonl", output=False) == (root / "inputs/ok.jsonl").resolve()
    for name, output in (("out", True), ("zero", False), ("fifo", False), ("sub", False),
                         ("fifo", True), ("missing.jsonl", False)):
        with pytest.raises(JobOptionError) as caught:
            space.path("input_file", name, output=output)
        assert caught.value.name == "input_file"


# --- who may do what ---------------------------------------------------------------------------

ALL = {"admin", "op", "ann1"}
STAFF = {"admin", "op"}
# (method, path template, body): the users that get past authorization; None: no token needed
ROUTES = [
    ("POST", "/v1/files", b"{}\n", STAFF),
    ("GET", "/v1/files", None, STAFF),
    ("GET", "/v1/files/{file}", None, STAFF),
    ("GET", "/v1/files/{file}/content", None, STAFF),
    ("GET", "/v1/endpoints", None, STAFF),
    ("POST", "/v1/jobs", {"kind": "constrained", "options": {"limit": 1}}, STAFF),
    ("GET", "/v1/jobs", None, STAFF),
    ("GET", "/v1/jobs/{job}", None, STAFF),
    ("POST", "/v1/jobs/{job}/cancel", None, STAFF),
    ("GET", "/v1/jobs/{job}/results", None, STAFF),
    ("GET", "/v1/jobs/{job}/events", None, STAFF),
    ("GET", "/label", None, ALL),
    ("GET", "/label/login", None, None),
    ("POST", "/label/api/login", {"token": "{ann1}"}, None),
    ("POST", "/label/api/logout", None, ALL),
    ("GET", "/label/api/me", None, ALL),
    ("GET", "/label/label.js", None, None),
    ("GET", "/label/instructions", None, ALL),
    ("GET", "/label/stats", None, STAFF),
    ("GET", "/label/api/instructions", None, ALL),
    ("PUT", "/label/api/instructions", {"text": "Be careful."}, {"admin"}),
    ("GET", "/label/api/next", None, {"admin", "ann1"}),
    ("POST", "/label/api/votes", {"item_id": "nope", "choice": "a"}, {"admin", "ann1"}),
    ("POST", "/label/api/items", {"pairs": [pair(1)]}, STAFF),
    ("GET", "/label/api/stats", None, STAFF),
    ("GET", "/label/api/export", None, STAFF),
    ("POST", "/v1/users", {"name": "newcomer", "role": "annotator"}, {"admin"}),
    ("GET", "/v1/users/tokens", None, {"admin"}),
    ("POST", "/v1/users/{user}/revoke", None, {"admin"}),
    ("GET", "/openapi.json", None, ALL),
    ("GET", "/docs", None, ALL),
    ("GET", "/docs/oauth2-redirect", None, ALL),
    ("GET", "/redoc", None, ALL),
]


def test_every_route_answers_each_role_as_the_table_says(tmp_path):
    with running_service(tmp_path / "m.db", workers=0) as svc:
        with svc.client("admin") as admin:
            paths = admin.get("/openapi.json").json()["paths"]
            documented = {(m.upper(), p) for p, ops in paths.items() for m in ops}
            documented |= {("GET", "/openapi.json"), ("GET", "/docs"),
                           ("GET", "/docs/oauth2-redirect"), ("GET", "/redoc")}
            table = {(m, p.replace("{file}", "{file_id}").replace("{job}", "{job_id}")
                      .replace("{user}", "{name}")) for m, p, _, _ in ROUTES}
            assert table == documented  # a new route must be added to the table
        ids = {"user": "op2"}
        with svc.client("op") as op:
            ids["file"] = upload(op, write_jsonl(tmp_path / "f.jsonl", [pair(0)]))
            ids["job"] = op.post("/v1/jobs", json={"kind": "constrained",
                                                   "options": {"limit": 1}}).json()["id"]
        with svc.client("admin") as admin:
            assert admin.post("/label/api/items", json={"pairs": [pair(0)]}).status_code == 200
        clients = {user: svc.client(user, headers={"Origin": svc.url})
                   for user in ("admin", "op", "ann1", None)}
        for method, template, body, allowed in ROUTES:
            path = template.format(**ids)
            if body == {"token": "{ann1}"}:
                body = {"token": svc.tokens["ann1"]}
            kwargs = ({"content": body} if isinstance(body, bytes)
                      else {"json": body} if body is not None else {})
            for user, client in clients.items():
                status = client.request(method, path, **kwargs).status_code
                client.cookies.clear()  # a login sets a session cookie
                if allowed is None:
                    assert status not in (401, 403), (method, path, user, status)
                elif user is None:
                    assert status == 401, (method, path, status)
                elif user in allowed:
                    assert status not in (401, 403), (method, path, user, status)
                else:
                    assert status == 403, (method, path, user, status)
        for client in clients.values():
            client.close()


def test_an_admin_manages_users_over_the_api(tmp_path):
    with running_service(tmp_path / "u.db", workers=0) as svc, svc.client("admin") as admin:
        made = admin.post("/v1/users", json={"name": "Bob\u200b", "role": "annotator"})
        assert made.status_code == 201 and made.json()["name"] == "bob"
        token = made.json()["token"]
        with svc.client(None, headers={"Authorization": f"Bearer {token}"}) as bob:
            assert bob.get("/label/api/me").json() == {"name": "bob", "role": "annotator"}
            clash = admin.post("/v1/users", json={"name": "BOB", "role": "operator"})
            assert clash.status_code == 422 and "already a annotator" in clash.text
            listed = admin.get("/v1/users/tokens").json()["tokens"]
            assert {"bob", "admin"} <= {t["name"] for t in listed}
            assert token not in json.dumps(listed)
            assert admin.post("/v1/users/bob/revoke").json() == {"revoked": 1}
            deadline = time.monotonic() + 5  # a token's user is re-read every 2 s at most
            while bob.get("/label/api/me").status_code != 401:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert admin.post("/v1/users/bob/revoke").status_code == 404


def test_an_operator_sees_only_their_own_jobs_and_files(tmp_path):
    with running_service(tmp_path / "o.db", workers=0) as svc, svc.client("op") as op, \
            svc.client("op2") as other, svc.client("admin") as admin:
        body = b"".join(json.dumps(pair(i)).encode() + b"\n" for i in range(3))
        form = op.post("/v1/files", data={"purpose": "batch"},
                       files={"file": ("../../pairs.jsonl", body, "application/jsonl")})
        assert form.status_code == 201, form.text  # a multipart form, as OpenAI's Files API
        assert form.json()["filename"] == "pairs.jsonl"
        assert form.json()["bytes"] == len(body)
        assert form.json()["sha256"] == hashlib.sha256(body).hexdigest()
        assert op.get(f"/v1/files/{form.json()['id']}/content").content == body
        no_file = (b'--b0\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
                   b"--b0--\r\n")
        assert op.post("/v1/files", content=no_file, headers={
            "Content-Type": "multipart/form-data; boundary=b0"}).status_code == 400
        malformed = b"--b0\r\n[]--b0--\r\n"  # schemathesis found this one: a 500 before
        assert op.post("/v1/files", content=malformed, headers={
            "Content-Type": "multipart/form-data; boundary=b0"}).status_code == 400
        file_id = upload(op, write_jsonl(tmp_path / "f.jsonl", [pair(0)]))
        job_id = op.post("/v1/jobs", json={"kind": "constrained",
                                           "options": {"limit": 1}}).json()["id"]
        for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/results",
                     f"/v1/files/{file_id}", f"/v1/files/{file_id}/content"):
            assert other.get(path).status_code == 404
            assert admin.get(path).status_code in (200, 409)
        assert other.post(f"/v1/jobs/{job_id}/cancel").status_code == 404
        assert other.get("/v1/jobs").json()["jobs"] == []
        assert [j["id"] for j in admin.get("/v1/jobs").json()["jobs"]] == [job_id]
        assert other.get("/v1/files").json()["files"] == []
        content = op.get(f"/v1/files/{file_id}/content").content
        assert op.get(f"/v1/files/{file_id}").json()["sha256"] == hashlib.sha256(
            content).hexdigest()


# --- honest labelling --------------------------------------------------------------------------


def test_annotators_vote_only_as_themselves_and_never_see_gold(tmp_path):
    db = tmp_path / "l.db"
    users = {"admin": "admin", "op": "operator", "ann1": "annotator", "Ann2": "annotator"}
    with running_service(db, workers=0, users=users) as svc, svc.client("admin") as admin, \
            svc.client("ann1") as ann1, svc.client("Ann2") as ann2, svc.client("op") as op:
        assert op.post("/label/api/items", json={"gold": [pair(9, human="a")]}
                       ).status_code == 403  # only the admin adds gold
        assert op.get("/v1/endpoints").json() == {"endpoints": [
            {"name": "default", "models": None, "embedded": True}]}
        added = admin.post("/label/api/items", json={
            "pairs": [pair(0), pair(1)], "gold": [pair(9, human="a")],
            "annotators_per_pair": 2})
        assert added.json() == {"added": 3}
        seen = ann1.get("/label/api/next").json()
        assert set(seen["item"]) == {"id", "prompt", "responses"}
        assert set(seen["progress"]) == {"items", "complete", "votes", "mine"}
        served = {seen["item"]["id"]}
        for name in ("p0", "p1", "p9"):  # ids cannot be recomputed from pair ids
            for kind in ("item", "gold"):
                guess = hashlib.sha256(f"{kind}\n{name}".encode()).hexdigest()[:16]
                assert guess not in served
        for path in ("/label/api/stats", "/label/api/export", "/label/stats"):
            assert ann1.get(path).status_code == 403
        assert ann1.put("/label/api/instructions", json={"text": "x"}).status_code == 403
        # vote as someone else: the body may not name an annotator
        impostor = ann2.post("/label/api/votes", json={
            "item_id": seen["item"]["id"], "annotator": "ann1", "choice": "b"})
        assert impostor.status_code == 422
        # name variants are one person: a second token for "ann2 \u200b" is the same user
        variant = make_token(db, "ANN2 \u200b", "annotator")
        with svc.client(None, headers={"Authorization": f"Bearer {variant}"}) as same:
            assert same.get("/label/api/me").json() == {"name": "ann2", "role": "annotator"}
            answered = {}
            while (item := ann1.get("/label/api/next").json()["item"]) is not None:
                assert ann1.post("/label/api/votes", json={"item_id": item["id"],
                                                           "choice": "a"}).status_code == 200
                answered[item["prompt"]] = item["id"]
            for prompt, item_id in answered.items():
                choice = "a" if prompt == "question 9" else "b"  # a split on p0 and p1
                assert ann2.post("/label/api/votes", json={"item_id": item_id,
                                                           "choice": "tie"}).status_code == 200
                assert same.post("/label/api/votes", json={"item_id": item_id,
                                                           "choice": choice}).status_code == 200
            assert same.get("/label/api/next").json()["item"] is None  # ann2 is done
        rows = {r["id"]: r for r in map(json.loads, op.get("/label/api/export").text.splitlines())}
        assert set(rows) == {"p0", "p1"}  # gold is never exported
        for row in rows.values():
            assert row["human_votes"] == {"a": 1, "b": 1}  # ann2 counted once, not twice
            assert row["human_annotators"] == ["ann1", "ann2"]
            assert row["human"] is None and row["human_consensus"] == "no consensus"
            assert row["human_agreement"] == 0.5
        # a re-vote replaces one's own vote only
        assert ann1.post("/label/api/votes", json={"item_id": answered["question 0"],
                                                   "choice": "b"}).status_code == 200
        rows = {r["id"]: r for r in map(json.loads, op.get("/label/api/export").text.splitlines())}
        assert rows["p0"]["human_votes"] == {"b": 2} and rows["p0"]["human"] == "b"
        assert rows["p1"]["human_votes"] == {"a": 1, "b": 1}
        stats = op.get("/label/api/stats").json()
        assert {a["name"] for a in stats["annotators"]} == {"ann1", "ann2"}
    export = tmp_path / "human.jsonl"
    assert cli("label-export", "--db", db, "-o", export).exit_code == 0
    report = cli("judge-report", export, "--json")
    assert report.exit_code == 0, report.output
    counts = json.loads(report.stdout)["counts"]
    assert (counts["pairs"], counts["b"], counts["tie"], counts["error"]) == (2, 1, 0, 1)


def test_human_labels_of_a_pairs_queue_work_in_judge_report(tmp_path):
    db = tmp_path / "q.db"
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [pair(0), pair(1), pair(2)])
    assert cli("label-queue", "--db", db, "--pairs", pairs,
               "--annotators-per-pair", "1").exit_code == 0
    with running_service(db, workers=0, users={"ann": "annotator"}) as svc, \
            svc.client("ann") as ann:
        for choice in ("a", "b", "tie"):
            item = ann.get("/label/api/next").json()["item"]
            assert ann.post("/label/api/votes", json={"item_id": item["id"],
                                                      "choice": choice}).status_code == 200
    out = tmp_path / "human.jsonl"
    assert cli("label-export", "--db", db, "-o", out).exit_code == 0
    report = cli("judge-report", out, "--json")
    assert report.exit_code == 0, report.output
    counts = json.loads(report.stdout)["counts"]
    assert (counts["pairs"], counts["a"], counts["b"], counts["tie"]) == (3, 1, 1, 1)


# --- limits and the audit ----------------------------------------------------------------------


def test_limits_on_jobs_and_pagination_and_the_audit(tmp_path, fake_llm):
    fake_llm.responder = lambda path, body: {"text": "slow", "delay": 2.0}
    db = tmp_path / "a.db"
    with running_service(db, "--user-jobs", "2", "--job-timeout-s", "3", "--endpoint",
                         f"fake={fake_llm.base_url}", workers=1) as svc, \
            svc.client("op") as op, svc.client("ann1") as ann:
        src = upload(op, write_batch(tmp_path / "in.jsonl", 6))
        slow = op.post("/v1/jobs", json={"kind": "batch", "endpoint": "fake",
                                         "options": {"input_file": src, "concurrency": 1}})
        assert slow.status_code == 201
        assert op.post("/v1/jobs", json={"kind": "constrained",
                                         "options": {"limit": 1}}).status_code == 201
        third = op.post("/v1/jobs", json={"kind": "constrained", "options": {"limit": 1}})
        assert third.status_code == 429
        page = op.get("/v1/jobs", params={"limit": 1}).json()
        assert len(page["jobs"]) == 1 and page["next_offset"] == 1
        assert op.get("/v1/jobs", params={"limit": 1, "offset": 1}).json()["next_offset"] is None
        assert ann.post("/v1/jobs", json={"kind": "constrained"}).status_code == 403
        wait_for(lambda: job_state(op, slow.json()["id"])["status"] == "failed", 60, "timeout")
        assert "time limit of 3 s" in job_state(op, slow.json()["id"])["error"]
        assert op.get("/v1/jobs").status_code == 200  # the service lives on
    audit = cli("service", "audit", "--db", db)
    assert audit.exit_code == 0
    lines = [line.split("\t") for line in audit.output.splitlines()]
    assert ["op", "operator", "POST /v1/jobs", slow.json()["id"], "201"] in [
        line[1:] for line in lines]
    assert any(line[1:3] == ["op", "operator"] and line[-1] == "429" for line in lines)
    assert any(line[1] == "ann1" and line[-1] == "403" for line in lines)
    assert all(svc.tokens["op"] not in line for line in audit.output.splitlines())


def test_a_job_over_its_memory_limit_fails_and_the_service_lives(tmp_path):
    with running_service(tmp_path / "mem.db", "--job-memory-mb", "100", workers=1) as svc, \
            svc.client("op") as op:
        pairs = upload(op, write_jsonl(tmp_path / "p.jsonl", [pair(0)]))
        job = op.post("/v1/jobs", json={"kind": "label", "options": {"input_path": pairs}})
        assert job.status_code == 201, job.text
        job_id = job.json()["id"]
        wait_for(lambda: job_state(op, job_id)["status"] == "failed", 60, "the job to fail")
        state = job_state(op, job_id)
        assert state["exit_code"] != 0 and "memory limit of 100 MiB" in state["error"]
        assert op.get("/v1/jobs").status_code == 200
