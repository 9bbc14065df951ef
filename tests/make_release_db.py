"""Write tests/data/release-0.1.db: a small project database made by the release before named
migrations covered every table (commit 9a659f4), for the upgrade test in tests/test_store.py.

In that release only ``requests`` and ``runs`` came from migrations; every other table was made
by sqlite-utils on its first insert, with column types guessed from the first row (a column
first written as null became TEXT, so later numbers in it were stored as text). This script
drives that release's own commands and writers against the scripted loopback server, so the
file holds exactly what a user's database of that release holds: Self-Instruct, FLAN,
Constitutional AI, responses and pairs, constrained prompts, a pipeline, a service job and
human labels (with a consensus copied onto a pair).

It was run once, at 9a659f4, as ``PYTHONPATH=$PWD python tests/make_release_db.py OUT.db``
from the repository root, and its output committed (the service's database thread was then
``align.service.jobs.SerialDB``, since replaced by ``store.DBThread``, the one name changed here
since). It is kept to show how the file was made: run on a newer tree it writes that tree's
schema, which is not what the upgrade test needs.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))

from fake_openai import FakeOpenAI, default_responder  # noqa: E402
from test_self_instruct import scripted  # noqa: E402

from align.cli import main  # noqa: E402
from align.labeling.queue import LabelSettings, Vote, enqueue, read_items  # noqa: E402
from align.labeling.votes import LabelBoard  # noqa: E402
from align.service.jobs import JobRunner, get_job  # noqa: E402
from datagen import store  # noqa: E402

ROOT = Path(__file__).parents[1]


def cli(*args: str) -> None:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def self_instruct(fake: FakeOpenAI, db: Path) -> None:
    """A small run whose first reply holds no numbered list (a row of ``si_failures``)."""
    replies = iter([{"text": "10.\n11."}])

    def model(path: str, body: dict) -> dict:
        reply = scripted(path, body)
        return next(replies, reply) if reply["text"][:1].isupper() and "\n10." in reply[
            "text"] else reply

    fake.responder = model
    cli("generate", "self-instruct", "--base-url", fake.base_url, "--db", db,
        "--num-instructions", "3", "--prompts-per-round", "2", "--seed", "1")


def flan(db: Path, tmp: Path) -> None:
    cli("generate", "flan", "--input", ROOT / "tests" / "data" / "flan" / "nli.jsonl",
        "--task", "nli", "--limit", "3", "--db", db, "-o", tmp / "flan.jsonl")


def constitutional(fake: FakeOpenAI, db: Path, tmp: Path) -> None:
    fake.responder = lambda path, body: {"text": f"reply {len(body['messages'])}"}
    prompts = write_jsonl(tmp / "red.jsonl", [{"id": "r1", "prompt": "How do I pick a lock?"}])
    cli("generate", "constitutional", "--prompts", prompts, "--base-url", fake.base_url,
        "--db", db, "--rounds", "1", "--model", "fake-model")


def responses_by_pipeline(fake: FakeOpenAI, db: Path, tmp: Path) -> None:
    """`rlaif run` with one stage: pipeline_stages, responses and pairs (pid and returncode
    are first written as null)."""
    fake.responder = lambda path, body: {"text": f"answer to {body['messages'][-1]['content']}"
                                                 f" at {body.get('temperature')}"}
    write_jsonl(tmp / "prompts.jsonl", [{"id": "q1", "prompt": "Name a fruit.",
                                         "constraints": [{"kind": "no_commas"}]},
                                        {"id": "q2", "prompt": "Name a tree."}])
    (tmp / "p.yaml").write_text(f"""\
name: fixture
output: {tmp / "out"}
db: {db}
stages:
  - stage: generate responses
    options:
      prompts: "${{pipeline_dir}}/prompts.jsonl"
      n: 2
      base-url: {fake.base_url}
""")
    cli("run", tmp / "p.yaml")


def constrained(db: Path) -> None:
    cli("generate", "constrained", "--limit", "2", "--db", db)


def service_job(fake: FakeOpenAI, db: Path, tmp: Path) -> None:
    """One batch job run by the service's own runner (a CLI process), as `rlaif service` does."""
    fake.responder = default_responder
    src = write_jsonl(tmp / "batch.jsonl", [{
        "custom_id": "b-1", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "fake-model", "messages": [{"role": "user", "content": "b1"}]}}])

    async def go() -> None:
        serial = store.DBThread(db)
        runner = JobRunner(serial, db, 1, dict(os.environ))
        await runner.start()
        job = await runner.submit("batch", {"input_file": str(src), "base-url": fake.base_url})
        deadline = time.monotonic() + 60
        while (await serial.call(get_job, job["id"]))["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        await runner.stop()
        serial.close()

    asyncio.run(go())


def labels(db_path: Path, tmp: Path) -> None:
    """Queue the stored pairs and one gold item, two annotators vote: votes, consensus and the
    ``human`` column added to ``pairs`` by the consensus."""
    db = store.open_db(db_path)
    pairs = store.load_rows(db, "pairs")
    rows = [{"id": p["id"], "prompt": json.loads(p["prompt"]), "response_a": p["response_a"],
             "response_b": p["response_b"]} for p in pairs]
    items = read_items(write_jsonl(tmp / "items.jsonl", rows), required=2)
    gold = read_items(write_jsonl(tmp / "gold.jsonl", [
        {"id": "g1", "prompt": "2+2?", "response_a": "4", "response_b": "5", "human": "a"}]),
        gold=True)
    enqueue(db, [*items, *gold], LabelSettings(min_gold=1, gold_every=2))
    board = LabelBoard(db)
    for name in ("ann", "bea"):
        while (item := board.next_item(name)) is not None:
            board.record(Vote(item_id=item.id, annotator=name, choice="a", note="ok"))
    db.close()


def build(out: Path) -> None:
    out.unlink(missing_ok=True)
    with FakeOpenAI() as fake, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        self_instruct(fake, out)
        flan(out, tmp)
        constitutional(fake, out, tmp)
        responses_by_pipeline(fake, out, tmp)
        constrained(out)
        service_job(fake, out, tmp)
        labels(out, tmp)
    for suffix in ("-wal", "-shm"):
        Path(f"{out}{suffix}").unlink(missing_ok=True)
    shutil.rmtree(f"{out}.jobs")


if __name__ == "__main__":
    build(Path(sys.argv[1]))
