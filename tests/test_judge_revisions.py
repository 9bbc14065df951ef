"""`rlaif judge-revisions` (issue 6): the judge's view of each constitutional revision is stored
in ``judge_agrees`` and the preference export can drop the pairs it disagreed with."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from align.cli import main
from datagen import store
from datagen.constitutional.constitution import Prompt, load_constitution
from datagen.constitutional.loop import (
    critique_and_revise,
    load_samples,
    preference_pairs,
    save_samples,
)
from datagen.endpoint.client import ClientConfig, LLMClient, run_async
from judges.cli import judge_revisions

CONSTITUTION = """\
principles:
  - id: harm
    critique_request: Say what is harmful in your last reply.
    revision_request: Rewrite it without the harm. Reply with the rewritten response only.
"""
JUDGE_SYSTEM = "You compare two responses"


def responder(path: str, body: dict) -> dict:
    """Generation turns get distinct texts; the judge prefers the revision ("Safe answer")
    except for question 3 (prefers the initial answer) and question 4 (always says A)."""
    messages = body["messages"]
    if messages[0]["content"].startswith(JUDGE_SYSTEM):
        user = messages[1]["content"]
        first = re.search(r"<response_A>\n(.*?)\n</response_A>", user, re.S).group(1)
        if "question 4" in user:
            return {"text": "A"}
        wanted = "Unsafe" if "question 3" in user else "Safe"
        return {"text": "A" if first.startswith(wanted) else "B"}
    last = messages[-1]["content"]
    if last.startswith("Say what"):
        return {"text": "The answer is unsafe."}
    if last.startswith("Rewrite"):
        return {"text": f"Safe answer to {messages[0]['content']}."}
    return {"text": f"Unsafe answer to {last}"}


def generate(fake_llm, db_path: Path, constitution_path: Path):
    config = ClientConfig(base_url=fake_llm.base_url, model="fake-model", max_retries=0)
    db = store.open_db(db_path)
    prompts = [Prompt(id=f"q{i}", messages=[{"role": "user", "content": f"question {i}"}])
               for i in range(5)]

    async def go():
        async with LLMClient(config, db) as client:
            return await critique_and_revise(client, prompts, load_constitution(
                constitution_path))

    save_samples(db, run_async(go()))
    return db


def verdicts(db) -> dict[str, bool | None]:
    return {s.prompt_id: s.judge_agrees for s in load_samples(db)}


def test_judge_agrees_is_recorded_and_export_drops_disagreeing_pairs(fake_llm, tmp_path):
    fake_llm.responder = responder
    constitution = tmp_path / "c.yaml"
    constitution.write_text(CONSTITUTION)
    db_path = tmp_path / "db"
    db = generate(fake_llm, db_path, constitution)
    assert set(verdicts(db).values()) == {None}
    generated = len(fake_llm.requests)

    args = ["--db", str(db_path), "--base-url", fake_llm.base_url, "--max-retries", "0"]
    result = CliRunner().invoke(judge_revisions, args)
    assert result.exit_code == 0, result.output
    assert "5 pairs: revision better 3, initial better 1, undecided 1" in result.output
    assert verdicts(db) == {"q0": True, "q1": True, "q2": True, "q3": False, "q4": None}
    judged = [r["body"] for r in fake_llm.requests[generated:]]
    assert len(judged) == 10  # both orders of each pair
    assert all(b["messages"][0]["content"].startswith(JUDGE_SYSTEM) for b in judged)

    again = CliRunner().invoke(judge_revisions, args)  # a rerun reads the ledger
    assert again.exit_code == 0 and "10 requests (10 from the ledger" in again.output
    assert len(fake_llm.requests) == generated + 10

    generate(fake_llm, db_path, constitution)  # rerunning the generator keeps the verdicts
    assert verdicts(db)["q3"] is False and verdicts(db)["q0"] is True

    assert len(list(preference_pairs(db))) == 5
    kept = list(preference_pairs(db, drop_judge_disagrees=True))
    assert sorted(p["id"].split("/")[-1] for p in kept) == ["q0", "q1", "q2", "q4"]

    out = tmp_path / "prefs.jsonl"
    result = CliRunner().invoke(main, [
        "export", "preference", "--source", "constitutional", "--db", str(db_path),
        "-o", str(out), "--drop-judge-disagrees"])
    assert result.exit_code == 0, result.output
    assert "read 5, kept 4; dropped:" in result.output and "judge_disagrees 1" in result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"].split("/")[-1] for r in rows] == ["q0", "q1", "q2", "q4"]


def test_drop_judge_disagrees_is_refused_for_label_files(tmp_path):
    labels = tmp_path / "labels.jsonl"
    labels.write_text("")
    result = CliRunner().invoke(main, [
        "export", "preference", "--labels", str(labels), "-o", str(tmp_path / "o.jsonl"),
        "--drop-judge-disagrees"])
    assert result.exit_code == 2
    assert "--drop-judge-disagrees: not for --source labels" in result.output


def test_judge_revisions_needs_stored_revisions(tmp_path):
    db_path = tmp_path / "db"
    store.open_db(db_path)
    result = CliRunner().invoke(judge_revisions, ["--db", str(db_path)])
    assert result.exit_code == 2
    assert "no constitutional revisions to judge" in result.output
