"""A pair keeps one id in every file that carries it (issue 14: exports once hashed an unnamed
pair's prompt after converting it, with spaced JSON, so its export id differed from its label
id). Driven through the CLI: responses -> pairs -> labels -> export -> label queue."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

from click.testing import CliRunner

from align.cli import main
from datagen.ids import pair_id

PROMPTS = [
    {"id": "q1", "prompt": "Name a fruit."},
    {"id": "q2", "prompt": [{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": "Name a tree, é."}]},
    {"prompt": "Say hi."},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def cli(*args: str) -> None:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output


def answer_then_prefer_m1(fake) -> None:
    """Generation requests get numbered answers; the judge prefers the answer of m1."""
    counter = itertools.count(1)

    def respond(path: str, body: dict) -> dict:
        if body["model"] != "judge":
            return {"text": f"{body['model']} answer {next(counter)}"}
        user = body["messages"][1]["content"]
        first = re.search(r"<response_A>\n(.*?)\n</response_A>", user, re.S).group(1)
        return {"text": "A" if first.startswith("m1") else "B"}

    fake.responder = respond


def ids_downstream(tmp_path: Path, fake, pairs: Path, name: str) -> dict[str, list[str]]:
    """The pair ids in the labels, preference export and label queue made from ``pairs``."""
    labels, export, queued = (tmp_path / f"{name}.{k}.jsonl" for k in ("labels", "pref", "q"))
    cli("label", "--input", str(pairs), "-o", str(labels), "--db", str(tmp_path / "r.db"),
        "--judge-base-url", fake.base_url, "--judge-model", "judge")
    cli("export", "preference", "--labels", str(labels), "-o", str(export))
    queue_db = str(tmp_path / f"{name}.queue.db")
    cli("label-queue", "--db", queue_db, "--from-labels", str(labels))
    cli("label-export", "--db", queue_db, "-o", str(queued))
    return {"labels": [r.get("id") for r in read_jsonl(labels)],
            "export": [r["id"] for r in read_jsonl(export)],
            "queue": sorted(r["id"] for r in read_jsonl(queued))}


def test_a_pair_has_one_id_in_every_file(tmp_path, fake_llm):
    answer_then_prefer_m1(fake_llm)
    cli("generate", "responses", "--prompts", str(write_jsonl(tmp_path / "p.jsonl", PROMPTS)),
        "--db", str(tmp_path / "r.db"), "--base-url", fake_llm.base_url, "--model", "m1,m2")
    named = tmp_path / "pairs.jsonl"
    cli("export", "pairs", "--db", str(tmp_path / "r.db"), "-o", str(named))
    pairs = read_jsonl(named)
    assert len(pairs) == 3 and len({p["id"] for p in pairs}) == 3
    ids = [p["id"] for p in pairs]
    seen = ids_downstream(tmp_path, fake_llm, named, "named")
    assert seen == {"labels": ids, "export": ids, "queue": sorted(ids)}

    # Without ids every reader names the pair by the same hash of its content as given.
    unnamed = write_jsonl(tmp_path / "unnamed.jsonl",
                          [{k: p[k] for k in ("prompt", "response_a", "response_b")}
                           for p in pairs])
    hashed = [pair_id(p["prompt"], [p["response_a"], p["response_b"]]) for p in pairs]
    assert len(set(hashed)) == 3 and not set(hashed) & set(ids)
    seen = ids_downstream(tmp_path, fake_llm, unnamed, "unnamed")
    assert seen == {"labels": [None] * 3, "export": hashed, "queue": sorted(hashed)}
