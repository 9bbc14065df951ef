"""`rlaif batch` end to end: a real process, a real loopback server, a real SQLite ledger."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from datagen import store
from datagen.store.tables import REQUESTS

RLAIF = [sys.executable, "-m", "align.cli"]


def write_batch(path: Path, count: int, prefix: str = "q", url: str = "/v1/chat/completions"):
    with path.open("w") as fh:
        for i in range(count):
            text = f"{prefix}{i}"
            body = ({"model": "fake-model", "messages": [{"role": "user", "content": text}]}
                    if "chat" in url else {"model": "fake-model", "prompt": text})
            fh.write(json.dumps({"custom_id": f"{prefix}-{i}", "method": "POST", "url": url,
                                 "body": body}) + "\n")
    return path


def rlaif(*args, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*RLAIF, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120, **kw)


def read_output(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_batch_writes_one_line_per_request_and_reruns_from_ledger(fake_llm, tmp_path):
    src = write_batch(tmp_path / "in.jsonl", 20)
    out, db = tmp_path / "out.jsonl", tmp_path / "r.db"
    first = rlaif("batch", src, "-o", out, "--db", db, "--base-url", fake_llm.base_url)
    assert first.returncode == 0, first.stderr
    lines = read_output(out)
    assert [x["custom_id"] for x in lines] == [f"q-{i}" for i in range(20)]
    assert lines[3]["response"]["body"]["choices"][0]["message"]["content"] == "echo: q3"
    assert all(x["error"] is None and x["response"]["status_code"] == 200 for x in lines)
    assert len(fake_llm.requests) == 20
    again = rlaif("batch", src, "-o", out, "--db", db, "--base-url", fake_llm.base_url)
    assert again.returncode == 0 and len(fake_llm.requests) == 20
    assert "20 from the ledger" in again.stderr
    assert read_output(out) == lines


def test_base_url_from_environment_and_completions_url(fake_llm, tmp_path):
    src = write_batch(tmp_path / "in.jsonl", 3, url="/v1/completions")
    out = tmp_path / "o.jsonl"
    done = rlaif("batch", src, "-o", out, "--db", tmp_path / "d.db",
                 env={"OPENAI_BASE_URL": fake_llm.base_url})
    assert done.returncode == 0, done.stderr
    assert fake_llm.requests[0]["path"] == "/v1/completions"
    assert read_output(out)[0]["response"]["body"]["choices"][0]["text"] == "echo: q0"


def test_identical_requests_are_sampled_separately(fake_llm, tmp_path):
    src = tmp_path / "in.jsonl"
    line = {"method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "fake-model", "messages": [{"role": "user", "content": "same"}]}}
    src.write_text("".join(json.dumps({"custom_id": f"s{i}", **line}) + "\n" for i in range(3)))
    out = tmp_path / "o.jsonl"
    assert rlaif("batch", src, "-o", out, "--db", tmp_path / "d.db",
                 "--base-url", fake_llm.base_url).returncode == 0
    assert len(fake_llm.requests) == 3
    assert len({x["id"] for x in read_output(out)}) == 3


def test_permanent_failures_exit_1_and_carry_their_error(fake_llm, tmp_path):
    fake_llm.responder = lambda path, body: (
        {"status": 400, "error": "context too long"}
        if body["messages"][0]["content"] == "q1" else {"text": "fine"})
    src = write_batch(tmp_path / "in.jsonl", 3)
    out, db = tmp_path / "o.jsonl", tmp_path / "d.db"
    done = rlaif("batch", src, "-o", out, "--db", db, "--base-url", fake_llm.base_url)
    assert done.returncode == 1
    lines = read_output(out)
    assert len(lines) == 3 and lines[0]["error"] is None
    # as the hosted API writes it: a response came back, so error is null and the upstream
    # error body is kept verbatim
    assert lines[1]["error"] is None and lines[1]["response"]["status_code"] == 400
    assert lines[1]["response"]["body"] == {
        "error": {"message": "context too long", "type": "test_error"}}
    assert lines[1]["response"]["request_id"].startswith("req-")
    failed = store.load_rows(store.open_db(db), REQUESTS, status="failed")
    assert len(failed) == 1 and failed[0]["attempts"] == 1


def test_errors_file_takes_the_lines_that_did_not_succeed(fake_llm, tmp_path):
    fake_llm.responder = lambda path, body: (
        {"status": 422, "error": "no such model"}
        if body["messages"][0]["content"] == "q2" else {"text": "fine"})
    src = write_batch(tmp_path / "in.jsonl", 4)
    out, err = tmp_path / "o.jsonl", tmp_path / "e.jsonl"
    done = rlaif("batch", src, "-o", out, "--errors", err, "--db", tmp_path / "d.db",
                 "--base-url", fake_llm.base_url)
    assert done.returncode == 1
    assert [x["custom_id"] for x in read_output(out)] == ["q-0", "q-1", "q-3"]
    (failed,) = read_output(err)
    assert failed["custom_id"] == "q-2" and failed["error"] is None
    assert failed["response"]["status_code"] == 422
    assert failed["response"]["body"]["error"]["message"] == "no such model"


BAD_INPUTS = {
    "not_json": ('{"custom_id": "a"\n', "not valid JSON"),
    "no_custom_id": (json.dumps({"url": "/v1/chat/completions", "body": {
        "model": "m", "messages": []}}) + "\n", "missing custom_id"),
    "no_body": (json.dumps({"custom_id": "a", "url": "/v1/chat/completions"}) + "\n",
                "missing body"),
    "bad_url": (json.dumps({"custom_id": "a", "url": "/v1/images/generations", "body": {
        "model": "m", "prompt": "x"}}) + "\n", "not supported"),
    "duplicate": ("".join(json.dumps({"custom_id": "a", "url": "/v1/chat/completions", "body": {
        "model": "m", "messages": []}}) + "\n" for _ in range(2)), "duplicate custom_id"),
    "empty": ("", "empty file"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_naming_file_and_line(fake_llm, tmp_path, case):
    text, expected = BAD_INPUTS[case]
    src = tmp_path / "bad.jsonl"
    src.write_text(text)
    out = tmp_path / "o.jsonl"
    done = rlaif("batch", src, "-o", out, "--db", tmp_path / "d.db",
                 "--base-url", fake_llm.base_url)
    assert done.returncode == 2
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert expected in message and str(src) in message
    if case not in ("empty",):
        assert f"{src}:" in message  # names the line
    assert not out.exists() and fake_llm.requests == []


def test_directory_and_binary_inputs_are_refused(fake_llm, tmp_path):
    binary = tmp_path / "b.jsonl"
    binary.write_bytes(b"\x00\x01\x02PK")
    for src, expected in ((tmp_path, "is a directory"), (binary, "binary")):
        done = rlaif("batch", src, "-o", tmp_path / "o.jsonl", "--db", tmp_path / "d.db",
                     "--base-url", fake_llm.base_url)
        assert done.returncode == 2 and expected in done.stderr
        assert "Traceback" not in done.stderr
    assert fake_llm.requests == []


def test_api_key_never_reaches_db_output_or_logs(fake_llm, tmp_path):
    secret = "sk-live-DO-NOT-LEAK-42"
    fake_llm.enqueue({"status": 401, "error": "invalid key"})
    src = write_batch(tmp_path / "in.jsonl", 4)
    out, db = tmp_path / "o.jsonl", tmp_path / "d.db"
    done = rlaif("batch", src, "-o", out, "--db", db, "--base-url", fake_llm.base_url,
                 "--api-key-env", "MY_KEY", env={"MY_KEY": secret})
    assert done.returncode == 1
    assert all(r["headers"]["Authorization"] == f"Bearer {secret}" for r in fake_llm.requests)
    assert secret not in done.stderr + done.stdout
    for path in tmp_path.iterdir():
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_sigkill_then_rerun_finishes_without_repeating_answered_requests(fake_llm, tmp_path):
    fake_llm.responder = lambda path, body: {"delay": 0.02, "text": "a " + body[
        "messages"][0]["content"]}
    total = 300
    src = write_batch(tmp_path / "in.jsonl", total)
    out, db = tmp_path / "o.jsonl", tmp_path / "d.db"
    args = [*RLAIF, "batch", str(src), "-o", str(out), "--db", str(db),
            "--base-url", fake_llm.base_url, "--concurrency", "8"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while len(fake_llm.requests) < total // 3 and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = time.time()
    first_run = list(fake_llm.requests)
    assert 0 < len(first_run) < total and not out.exists()
    done = rlaif("batch", src, "-o", out, "--db", db, "--base-url", fake_llm.base_url)
    assert done.returncode == 0, done.stderr
    lines = read_output(out)
    assert sorted(x["custom_id"] for x in lines) == sorted(f"q-{i}" for i in range(total))
    assert len({x["custom_id"] for x in lines}) == total
    second_run = fake_llm.requests[len(first_run):]
    resent = {r["body"]["messages"][0]["content"] for r in second_run}
    answered_early = {
        r["body"]["messages"][0]["content"] for r in first_run
        if r["answered_at"] is not None and r["answered_at"] < killed_at - 0.1
    }
    assert not (resent & answered_early), "an answered request was paid for twice"
    assert len(second_run) == total - len(first_run) + len(resent & {
        r["body"]["messages"][0]["content"] for r in first_run})


def test_two_processes_share_one_database(fake_llm, tmp_path):
    db = tmp_path / "shared.db"
    procs = []
    for name in ("a", "b"):
        src = write_batch(tmp_path / f"{name}.jsonl", 150, prefix=name)
        procs.append(subprocess.Popen(
            [*RLAIF, "batch", str(src), "-o", str(tmp_path / f"{name}.out"), "--db", str(db),
             "--base-url", fake_llm.base_url, "--concurrency", "16"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "locked" not in err
    database = store.open_db(db)
    assert store.count_rows(database, REQUESTS) == 300
    assert store.count_rows(database, REQUESTS, status="ok") == 300
    assert len(read_output(tmp_path / "a.out")) == len(read_output(tmp_path / "b.out")) == 150


def test_budget_cap_leaves_lines_for_a_rerun(fake_llm, tmp_path):
    fake_llm.responder = lambda path, body: {
        "text": "x", "usage": {"prompt_tokens": 1000, "completion_tokens": 0}}
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"fake-model": [1000.0, 0.0]}))  # $1 per request
    src = write_batch(tmp_path / "in.jsonl", 5)
    out, db = tmp_path / "o.jsonl", tmp_path / "d.db"
    common = ["--db", db, "--base-url", fake_llm.base_url, "--prices", prices,
              "--concurrency", "1"]
    done = rlaif("batch", src, "-o", out, *common, "--budget-usd", "2")
    assert done.returncode == 1
    lines = read_output(out)
    assert [x["error"] is None for x in lines] == [True, True, False, False, False]
    assert lines[4]["error"]["code"] == "budget_exhausted"
    done = rlaif("batch", src, "-o", out, *common)
    assert done.returncode == 0 and len(fake_llm.requests) == 5
