"""`rlaif generate responses` and `rlaif export pairs` against the scripted loopback server."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from click.testing import CliRunner

from align.cli import main
from datagen import store

PROMPTS = [
    {"id": "q1", "prompt": "Name a fruit.", "constraints": [{"kind": "no_commas"}]},
    {"id": "q2", "prompt": [{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": "Name a tree."}]},
]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def numbered_replies(fake) -> None:
    counter = itertools.count(1)
    fake.responder = lambda path, body: {"text": f"{body['model']} answer {next(counter)}"}


def generate(tmp_path: Path, fake, *args: str, prompts: list = PROMPTS):
    prompts_file = write_jsonl(tmp_path / "prompts.jsonl", prompts)
    return CliRunner().invoke(main, [
        "generate", "responses", "--prompts", str(prompts_file), "--db", str(tmp_path / "r.db"),
        "--base-url", fake.base_url, *args])


def export(tmp_path: Path) -> list[dict]:
    out = tmp_path / "pairs.jsonl"
    result = CliRunner().invoke(main, ["export", "pairs", "--db", str(tmp_path / "r.db"),
                                       "-o", str(out)])
    assert result.exit_code == 0, result.output
    return read_jsonl(out)


def test_two_models_one_pair_per_prompt_and_rerun_sends_nothing(tmp_path, fake_llm):
    numbered_replies(fake_llm)
    result = generate(tmp_path, fake_llm, "--model", "m1,m2", "--temperature", "0.7")
    assert result.exit_code == 0, result.output
    bodies = fake_llm.bodies()
    assert sorted(b["model"] for b in bodies) == ["m1", "m1", "m2", "m2"]
    assert all(b["temperature"] == 0.7 and b["max_tokens"] == 512 for b in bodies)
    assert bodies[0]["messages"] in ([{"role": "user", "content": "Name a fruit."}],
                                     PROMPTS[1]["prompt"])
    pairs = export(tmp_path)
    assert [p["prompt_id"] for p in pairs] == ["q1", "q2"]
    assert all({p["model_a"], p["model_b"]} == {"m1", "m2"} for p in pairs)
    assert pairs[0]["constraints"] == [{"kind": "no_commas"}] and "constraints" not in pairs[1]
    assert pairs[1]["prompt"] == PROMPTS[1]["prompt"]
    again = generate(tmp_path, fake_llm, "--model", "m1,m2", "--temperature", "0.7")
    assert again.exit_code == 0 and "4 from the ledger" in again.output
    assert len(fake_llm.requests) == 4 and export(tmp_path) == pairs


def test_samples_of_one_model_are_separate_requests_and_all_pairs(tmp_path, fake_llm):
    numbered_replies(fake_llm)
    result = generate(tmp_path, fake_llm, "--model", "m", "--n", "3", "--pairs", "all")
    assert result.exit_code == 0, result.output
    assert len(fake_llm.requests) == 6
    db = store.open_db(tmp_path / "r.db")
    assert sorted(r["sample_index"] for r in store.load_rows(db, "responses", prompt_id="q1")) \
        == [0, 1, 2]
    pairs = export(tmp_path)
    assert len(pairs) == 6
    for prompt_id in ("q1", "q2"):
        texts = [{p["response_a"], p["response_b"]} for p in pairs if p["prompt_id"] == prompt_id]
        assert len({frozenset(t) for t in texts}) == 3 and all(len(t) == 2 for t in texts)


def test_random_pair_is_seeded(tmp_path, fake_llm):
    numbered_replies(fake_llm)
    generate(tmp_path, fake_llm, "--model", "m", "--n", "4", "--seed", "1")
    first = export(tmp_path)
    (tmp_path / "r.db").unlink()
    generate(tmp_path, fake_llm, "--model", "m", "--n", "4", "--seed", "1")
    assert len(fake_llm.requests) == 16
    second = export(tmp_path)
    assert [p["response_a_id"] for p in first] == [p["response_a_id"] for p in second]


def test_failed_samples_form_no_pair_and_exit_1(tmp_path, fake_llm):
    counter = itertools.count()
    fake_llm.responder = lambda path, body: (
        {"status": 400, "error": "no"} if "tree" in json.dumps(body)
        else {"text": f"fruit {next(counter)}"})
    result = generate(tmp_path, fake_llm, "--model", "m")
    assert result.exit_code == 1 and "2 failed" in result.output
    assert [p["prompt_id"] for p in export(tmp_path)] == ["q1"]


def test_bad_prompt_file_exits_2(tmp_path, fake_llm):
    result = generate(tmp_path, fake_llm, prompts=[PROMPTS[0], {"id": "x"}])
    assert result.exit_code == 2 and "prompts.jsonl:2: missing prompt" in result.output
    result = generate(tmp_path, fake_llm, prompts=[PROMPTS[0], PROMPTS[0]])
    assert result.exit_code == 2 and "duplicate id 'q1'" in result.output
    assert fake_llm.requests == []


def test_label_reads_pairs_from_the_database(tmp_path, fake_llm):
    numbered_replies(fake_llm)
    generate(tmp_path, fake_llm, "--model", "m1,m2")
    fake_llm.responder = lambda path, body: {"text": "A"}
    out = tmp_path / "labels.jsonl"
    result = CliRunner().invoke(main, ["label", "--db", str(tmp_path / "r.db"), "-o", str(out),
                                       "--judge-base-url", fake_llm.base_url])
    assert result.exit_code == 0, result.output
    labels = read_jsonl(out)
    assert [r["prompt_id"] for r in labels] == ["q1", "q2"]
    assert all(r["preferred"] == "tie" for r in labels)


def seeded_replies(fake) -> None:
    """A deterministic endpoint that honours `seed`: the same body always gets the same text."""
    fake.responder = lambda path, body: {"text": f"answer for seed {body.get('seed')}"}


def test_each_sample_carries_its_own_recorded_seed_so_pairs_differ(tmp_path, fake_llm):
    # issue 17: n byte-identical bodies made every pair a tie on a deterministic endpoint
    seeded_replies(fake_llm)
    result = generate(tmp_path, fake_llm, "--model", "m", "--n", "3", "--seed", "7")
    assert result.exit_code == 0, result.output
    seeds = [b["seed"] for b in fake_llm.bodies()]
    assert len(seeds) == 6 and len(set(seeds)) == 3  # three per prompt, the same per sample
    db = store.open_db(tmp_path / "r.db")  # recorded: each response names its ledger request
    keys = [r["request_key"] for r in store.load_rows(db, "responses", prompt_id="q1")]
    recorded = [json.loads(row["body"])["seed"] for row in store.ledger_lookup(db, keys).values()]
    assert sorted(recorded) == sorted(set(seeds))
    assert all(p["response_a"] != p["response_b"] for p in export(tmp_path))
    other = generate(tmp_path, fake_llm, "--model", "m", "--n", "3", "--seed", "8")
    assert other.exit_code == 0 and not set(b["seed"] for b in fake_llm.bodies()[6:]) & set(seeds)


def test_temperature_zero_with_several_samples_is_refused(tmp_path, fake_llm):
    result = generate(tmp_path, fake_llm, "--model", "m", "--temperature", "0")
    assert result.exit_code == 2 and "--temperature 0 with --n 2" in result.output
    assert "Traceback" not in result.output and fake_llm.requests == []
