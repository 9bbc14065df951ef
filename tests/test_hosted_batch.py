"""`rlaif batch --hosted` against a loopback fake of the Files and Batches endpoints: the whole
flow, crashes at every step, expiry, cancel, splitting, budget, and --check-hosted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from fake_batch_api import FakeBatchAPI

from align.cli import main
from datagen import store
from datagen.store import tables

RLAIF = [sys.executable, "-m", "align.cli"]


def write_batch(path: Path, count: int, model: str = "fake-model", **body_extra) -> Path:
    with path.open("w") as fh:
        for i in range(count):
            body = {"model": model, "messages": [{"role": "user", "content": f"q{i}"}],
                    **body_extra}
            fh.write(json.dumps({"custom_id": f"c{i}", "method": "POST",
                                 "url": "/v1/chat/completions", "body": body}) + "\n")
    return path


def hosted_args(fake: FakeBatchAPI, src: Path, tmp: Path, *extra) -> list[str]:
    return ["batch", str(src), "-o", str(tmp / "out.jsonl"), "--db", str(tmp / "h.db"),
            "--hosted", "--base-url", fake.base_url, "--poll-interval", "0.05",
            *map(str, extra)]


def rlaif(args: list, **env) -> SimpleNamespace:
    """Run an ``rlaif`` command in this process (the fake counts what it is sent)."""
    result = CliRunner().invoke(main, [str(a) for a in args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout,
                           stderr=result.stderr)


def rlaif_process(args: list, **kw) -> subprocess.Popen:
    """Start an ``rlaif`` command as a process of its own (to be killed)."""
    return subprocess.Popen([*RLAIF, *map(str, args)], **kw)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def fake():
    with FakeBatchAPI() as server:
        yield server


def test_whole_flow_writes_faithful_output_and_ledger_rows(fake, tmp_path):
    fake.lines_per_poll = 2
    fake.responder = lambda path, body: (
        {"status": 400, "error": "context too long", "code": "context_length_exceeded"}
        if body["messages"][0]["content"] == "q3" else {"text": "a " + body["messages"][0][
            "content"], "usage": {"prompt_tokens": 100, "completion_tokens": 50}})
    src = write_batch(tmp_path / "in.jsonl", 6, model="gpt-4o-mini")
    secret = "sk-hosted-DO-NOT-LEAK-7"
    done = rlaif(hosted_args(fake, src, tmp_path, "--errors", tmp_path / "err.jsonl"),
                 OPENAI_API_KEY=secret)
    assert done.returncode == 1, done.stderr  # one line failed upstream
    assert fake.authorizations == {f"Bearer {secret}"} and secret not in done.stderr
    for path in tmp_path.iterdir():
        assert secret.encode() not in path.read_bytes(), path
    assert fake.uploads == 1 and fake.creates == 1 and len(fake.executed) == 6
    out, err = read_jsonl(tmp_path / "out.jsonl"), read_jsonl(tmp_path / "err.jsonl")
    assert [x["custom_id"] for x in out] == ["c0", "c1", "c2", "c4", "c5"]
    assert out[0]["response"]["body"]["choices"][0]["message"]["content"] == "a q0"
    assert out[0]["response"]["request_id"].startswith("req_") and out[0]["error"] is None
    assert [x["custom_id"] for x in err] == ["c3"] and err[0]["error"] is None
    assert err[0]["response"]["status_code"] == 400
    assert err[0]["response"]["body"]["error"]["code"] == "context_length_exceeded"
    db = store.open_db(tmp_path / "h.db")
    rows = store.load_rows(db, tables.REQUESTS, status="ok")
    assert len(rows) == 5 and {r["via"] for r in rows} == {"batch"}
    assert {r["batch_id"] for r in rows} == {"batch_1"}
    # gpt-4o-mini at batch prices: half of 0.15 and 0.60 dollars per million tokens
    assert rows[0]["cost_usd"] == pytest.approx((100 * 0.075 + 50 * 0.30) / 1e6)
    assert "at batch prices" in done.stderr
    (job,) = store.hosted_jobs(db)
    assert job["batch_id"] == "batch_1" and job["status"] == "completed" and job["ingested"]
    assert json.loads(job["request_counts"]) == {"total": 6, "completed": 5, "failed": 1}
    metadata = fake.batches["batch_1"]["batch"].metadata
    assert "rlaif batch" in metadata["rlaif_run"] and metadata["rlaif_job"] == job["job"]
    listed = rlaif(["batch", "--hosted", "--list", "--db", tmp_path / "h.db"])
    assert listed.returncode == 0 and "batch_1\tcompleted\t6 requests" in listed.stdout
    # a rerun sends only the failed line, in a new batch
    again = rlaif(hosted_args(fake, src, tmp_path))
    assert again.returncode == 1 and fake.creates == 2 and len(fake.executed) == 7
    (failed,) = store.load_rows(db, tables.REQUESTS, status="failed")
    assert fake.executed[-1] == failed["key"] and failed["batch_id"] == "batch_2"


@pytest.mark.parametrize("moment", ["upload", "create", "poll", "download"])
def test_sigkill_at_any_moment_then_rerun_pays_nothing_twice(fake, tmp_path, moment):
    fake.lines_per_poll = 3
    src = write_batch(tmp_path / "in.jsonl", 9)
    fake.hold(moment)
    proc = rlaif_process(hosted_args(fake, src, tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    assert fake.reached[moment].wait(60), f"never reached {moment}"
    if moment == "poll":  # let a few polls through first, then kill mid-batch
        fake.release()
        deadline = time.time() + 30
        while len(fake.executed) < 3 and time.time() < deadline:
            time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    fake.release()
    time.sleep(0.2)  # the held request finishes at the server after the client died
    assert not (tmp_path / "out.jsonl").exists()
    done = rlaif(hosted_args(fake, src, tmp_path))
    assert done.returncode == 0, done.stderr
    assert fake.uploads == 1 and fake.creates == 1
    assert len(fake.executed) == 9 == len(set(fake.executed))  # each line paid for once
    out = read_jsonl(tmp_path / "out.jsonl")
    assert [x["custom_id"] for x in out] == [f"c{i}" for i in range(9)]
    assert all(x["response"]["status_code"] == 200 for x in out)


def test_expired_batch_keeps_its_answers_and_a_rerun_submits_the_rest(fake, tmp_path):
    fake.lines_per_poll = 2
    fake.expire_after = 5
    src = write_batch(tmp_path / "in.jsonl", 8)
    done = rlaif(hosted_args(fake, src, tmp_path))
    assert done.returncode == 1 and "expired" in done.stderr
    out = read_jsonl(tmp_path / "out.jsonl")
    assert [x["error"] is None for x in out] == [True] * 5 + [False] * 3
    assert out[6]["response"] is None and out[6]["error"]["code"] == "batch_expired"
    fake.expire_after = None
    done = rlaif(hosted_args(fake, src, tmp_path))
    assert done.returncode == 0, done.stderr
    assert fake.creates == 2 and len(fake.executed) == 8 == len(set(fake.executed))
    assert fake.batches["batch_2"]["batch"].request_counts.total == 3
    out = read_jsonl(tmp_path / "out.jsonl")
    assert all(x["error"] is None for x in out)
    assert [x["response"]["body"]["choices"][0]["message"]["content"] for x in out] == [
        f"echo: q{i}" for i in range(8)]


def test_cancel_keeps_partial_output_and_a_rerun_finishes(fake, tmp_path):
    fake.lines_per_poll = 2
    src = write_batch(tmp_path / "in.jsonl", 10)
    fake.hold("poll")
    proc = rlaif_process(hosted_args(fake, src, tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert fake.reached["poll"].wait(60)
    fake.release()
    deadline = time.time() + 30
    while len(fake.executed) < 4 and time.time() < deadline:
        time.sleep(0.005)
    fake.hold("poll")  # the batch stands still while the cancelling command starts
    cancel = rlaif(["batch", src, "--hosted", "--cancel", "--db", tmp_path / "h.db",
                    "--base-url", fake.base_url])
    assert cancel.returncode == 0, cancel.stderr
    assert "batch_1\tcancelling" in cancel.stdout
    fake.release()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "cancelled" in err
    answered = len(fake.executed)
    assert 4 <= answered < 10
    out = read_jsonl(tmp_path / "out.jsonl")
    assert sum(x["error"] is None for x in out) == answered
    assert {x["error"]["code"] for x in out if x["error"]} == {"batch_cancelled"}
    done = rlaif(hosted_args(fake, src, tmp_path))
    assert done.returncode == 0 and fake.creates == 2
    assert len(fake.executed) == 10 == len(set(fake.executed))


def test_failed_polls_are_retried(fake, tmp_path):
    fake.fail_polls = {2, 3, 5}
    src = write_batch(tmp_path / "in.jsonl", 4)
    done = rlaif(hosted_args(fake, src, tmp_path))
    assert done.returncode == 0, done.stderr
    # polls 1, 4 and 6 move the batch (validating, in_progress, finalizing); 2, 3, 5 fail
    assert fake.polls == 6 and fake.creates == 1 and len(fake.executed) == 4


@pytest.mark.slow
def test_a_120000_line_file_is_split_into_hosted_sized_batches(fake, tmp_path):
    src = tmp_path / "big.jsonl"
    with src.open("w") as fh:
        for i in range(120_000):
            fh.write(f'{{"custom_id":"{i}","method":"POST","url":"/v1/completions",'
                     f'"body":{{"model":"m","prompt":"{i}","max_tokens":1}}}}\n')
    # a process of its own: the client and the fake then use both cores
    done = subprocess.run([*RLAIF, *hosted_args(fake, src, tmp_path)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "split into 3 batches" in done.stderr
    sizes = sorted(len(b["lines"]) for b in fake.batches.values())
    assert sizes == [20_000, 50_000, 50_000] and fake.creates == 3
    assert len(fake.executed) == 120_000 == len(set(fake.executed))
    out = read_jsonl(tmp_path / "out.jsonl")
    assert len(out) == 120_000 and out[-1]["custom_id"] == "119999"
    assert out[-1]["response"]["body"]["choices"][0]["text"] == "echo: 119999"


def test_budget_counts_batch_prices(fake, tmp_path):
    from datagen.endpoint.limits import estimate_split

    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"fake-model": [2000.0, 2000.0, 1000.0, 1000.0]}))
    src = write_batch(tmp_path / "in.jsonl", 5, max_tokens=10)
    body = json.loads(src.read_text().splitlines()[0])["body"]
    per_line = sum(estimate_split(body)) * 1000 / 1e6  # the estimate at the batch price
    budget = per_line * 3.5  # three lines fit at batch prices, one at online prices
    done = rlaif(hosted_args(fake, src, tmp_path, "--prices", prices,
                             "--budget-usd", f"{budget:.6f}"))
    assert done.returncode == 1
    out = read_jsonl(tmp_path / "out.jsonl")
    assert [x["error"] is None for x in out] == [True, True, True, False, False]
    assert out[4]["error"]["code"] == "budget_exhausted" and len(fake.executed) == 3
    db = store.open_db(tmp_path / "h.db")
    costs = [r["cost_usd"] for r in store.load_rows(db, tables.REQUESTS, status="ok")]
    # the fake reports 1 prompt and 2 completion tokens: batch price $1000 per million each
    assert costs == [pytest.approx(3 * 1000 / 1e6)] * 3
    assert "$0.0090 at batch prices" in done.stderr
    done = rlaif(hosted_args(fake, src, tmp_path, "--prices", prices))
    assert done.returncode == 0 and len(fake.executed) == 5 and fake.creates == 2


def test_hosted_and_a_ray_cluster_are_refused_together(fake, tmp_path):
    src = write_batch(tmp_path / "in.jsonl", 1)
    done = rlaif([*hosted_args(fake, src, tmp_path), "--executor", "ray"])
    assert done.returncode == 2 and "--hosted and --executor ray" in done.stderr
    assert fake.uploads == 0


def test_hosted_refuses_a_file_the_api_would_reject_before_uploading(fake, tmp_path):
    src = write_batch(tmp_path / "in.jsonl", 3)
    lines = src.read_text().splitlines()
    other = json.loads(lines[2])
    other["body"]["model"] = "other-model"
    src.write_text("\n".join([*lines[:2], json.dumps(other)]) + "\n")
    done = rlaif(hosted_args(fake, src, tmp_path))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{src}:3: model 'other-model' differs from line 1" in done.stderr
    assert fake.uploads == 0 and not (tmp_path / "out.jsonl").exists()


CHECK_CORPUS = {
    "no_model": ({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                  "body": {"messages": []}}, "body has no model"),
    "no_v1": ({"custom_id": "a", "method": "POST", "url": "/chat/completions",
               "body": {"model": "m", "messages": []}}, "url '/chat/completions' is not one"),
    "get": ({"custom_id": "a", "method": "GET", "url": "/v1/chat/completions",
             "body": {"model": "m", "messages": []}}, "method must be \"POST\""),
    "no_custom_id": ({"method": "POST", "url": "/v1/chat/completions",
                      "body": {"model": "m", "messages": []}}, "missing custom_id"),
    "no_messages": ({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                     "body": {"model": "m"}}, "body has no 'messages'"),
    "stream": ({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "m", "messages": [], "stream": True}}, "stream"),
}


def test_check_hosted_lists_every_rejected_line(tmp_path, fake):
    good = {"custom_id": "ok", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": []}}
    src = tmp_path / "corpus.jsonl"
    rows = [json.dumps(good)] + [json.dumps(bad) for bad, _ in CHECK_CORPUS.values()]
    rows += ["{not json", json.dumps(good),
             json.dumps({**good, "custom_id": "x", "url": "/v1/completions",
                         "body": {"model": "m2", "prompt": "p"}})]
    src.write_text("\n".join(rows) + "\n")
    done = rlaif(["batch", "--check-hosted", src])
    assert done.returncode == 1
    found = done.stdout.splitlines()
    for number, (_, message) in enumerate(CHECK_CORPUS.values(), start=2):
        assert any(f.startswith(f"{src}:{number}: ") and message in f for f in found), message
    assert any(f.startswith(f"{src}:8: not valid JSON") for f in found)
    assert any(f.startswith(f"{src}:9: duplicate custom_id 'ok' (first on line 1)")
               for f in found)
    assert any(f"{src}:10: url '/v1/completions' differs from line 1" in f for f in found)
    assert any(f"{src}:10: model 'm2' differs from line 1" in f for f in found)
    assert not any(f.startswith(f"{src}:1:") for f in found)
    clean = tmp_path / "clean.jsonl"
    clean.write_text(json.dumps(good) + "\n")
    assert rlaif(["batch", "--check-hosted", clean]).returncode == 0
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps({**good, "custom_id": str(i)}) + "\n"
                           for i in range(50_001)))
    done = rlaif(["batch", "--check-hosted", big])
    assert done.returncode == 1 and "50,001 requests" in done.stdout
    assert fake.uploads == 0 and fake.polls == 0


def test_a_generator_and_the_judge_run_their_rounds_as_hosted_batches(fake, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Name thing {i}."}) + "\n"
                               for i in range(3)))
    fake.responder = lambda path, body: {
        "text": body["model"] + " on " + body["messages"][-1]["content"]}
    db = tmp_path / "g.db"
    common = ["--db", db, "--hosted", "--base-url", fake.base_url, "--poll-interval", "0.05"]
    done = rlaif(["generate", "responses", "--prompts", prompts, "--model", "m1,m2",
                  *common])
    assert done.returncode == 0, done.stderr
    assert "waiting for batch" in done.stderr
    # one round of 6 requests, one batch per model as the hosted API needs
    assert fake.creates == 2 and len(fake.executed) == 6
    assert {b["batch"].endpoint for b in fake.batches.values()} == {"/v1/chat/completions"}
    assert sorted(len(b["lines"]) for b in fake.batches.values()) == [3, 3]
    fake.responder = lambda path, body: {"text": "A"}
    out = tmp_path / "labels.jsonl"
    done = rlaif(["label", "-o", out, "--judge-model", "judge", *common])
    assert done.returncode == 0, done.stderr
    assert fake.creates == 3 and len(fake.executed) == 12  # both orders of 3 pairs
    assert len(read_jsonl(out)) == 3
    again = rlaif(["generate", "responses", "--prompts", prompts, "--model", "m1,m2",
                   *common])
    assert again.returncode == 0 and fake.creates == 3  # answered from the ledger


def test_self_instruct_rounds_through_hosted_batches_match_the_online_run(fake, tmp_path):
    # Rounds that need earlier answers (generate, classify, instances) each wait for their
    # batch; the scripted model answers the same either way, so the data must be identical.
    from fake_openai import FakeOpenAI
    from test_self_instruct import kept_rows, scripted

    from datagen.endpoint.client import ClientConfig, LLMClient, run_async
    from datagen.endpoint.hosted_options import HostedOptions
    from datagen.self_instruct.generate import (
        SelfInstructConfig,
        load_seed_tasks,
        run_self_instruct,
    )

    def run(base_url: str, db_path: Path, hosted: HostedOptions | None):
        db = store.open_db(db_path)
        config = ClientConfig(base_url=base_url, model="fake-model", max_retries=0,
                              hosted=hosted)
        settings = SelfInstructConfig(prompts_per_round=2, num_instructions=6)

        async def go():
            async with LLMClient(config, db) as client:
                return await run_self_instruct(client, db, settings, load_seed_tasks())

        return run_async(go()), db

    fake.responder = scripted
    hosted = HostedOptions(poll_interval=0.02, gather_seconds=0.05, label="test")
    summary, db = run(fake.base_url, tmp_path / "hosted.db", hosted)
    with FakeOpenAI(responder=scripted) as online:
        expected, online_db = run(online.base_url, tmp_path / "online.db", None)
    assert summary.status == "complete" and summary.kept >= 6
    assert kept_rows(db) == kept_rows(online_db)
    assert summary.instances == expected.instances
    assert fake.creates >= 3 and len(fake.executed) == len(set(fake.executed))
    assert len(fake.executed) == len(online.requests)
    assert {r["via"] for r in store.load_rows(db, tables.REQUESTS)} == {"batch"}


def test_an_endpoint_without_the_batch_api_is_one_line_and_exit_1(fake_llm, tmp_path):
    # FakeOpenAI has no Files endpoint: it refuses the multipart upload with a 400
    src = write_batch(tmp_path / "in.jsonl", 2)
    done = rlaif(["batch", src, "-o", tmp_path / "o.jsonl", "--db", tmp_path / "d.db",
                  "--hosted", "--base-url", fake_llm.base_url])
    assert done.returncode == 1 and not (tmp_path / "o.jsonl").exists()
    (line,) = done.stderr.strip().splitlines()[-1:]
    assert "hosted Batch API: upload: HTTP 400" in line and "rerun" in line
    (job,) = store.hosted_jobs(store.open_db(tmp_path / "d.db"))  # kept for a rerun
    assert job["status"] == "new" and job["input_file_id"] is None and not job["ingested"]
    assert "Traceback" not in done.stderr


def test_constitutional_rounds_through_hosted_batches_match_the_online_run(fake, tmp_path):
    # critique and revision rounds wait for the batch of the round before; an upstream 400
    # comes back through the error file and is recorded as online
    from fake_openai import FakeOpenAI
    from test_constitutional import SCRIPT, SMALL, scripted, write, write_prompts

    constitution = write(tmp_path / "c.yaml", SMALL)
    prompts = write_prompts(tmp_path / "p.jsonl", [{"id": k, "prompt": k} for k in SCRIPT])
    fake.responder = scripted

    def generate(base_url: str, name: str, *extra) -> list[dict]:
        out = tmp_path / f"{name}.jsonl"
        done = rlaif(["generate", "constitutional", "--prompts", prompts, "--constitution",
                      constitution, "--db", tmp_path / f"{name}.db", "--base-url", base_url,
                      "--max-retries", "0", "-o", out, *extra])
        assert done.returncode == 1, done.stderr  # the "broken" prompt fails
        fields = ("prompt_id", "status", "degenerate", "stopped_at", "initial", "final",
                  "rounds", "refusals")
        return [{k: row[k] for k in fields} for row in read_jsonl(out)]

    hosted = generate(fake.base_url, "hosted", "--hosted", "--poll-interval", "0.02")
    with FakeOpenAI(responder=scripted) as online:
        assert hosted == generate(online.base_url, "online")
    assert fake.creates >= 3 and len(fake.executed) == len(online.requests)
