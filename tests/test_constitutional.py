"""Constitutional critique/revision: conversation order, seeded principles, resume after SIGKILL,
degenerate filters, constitution files (ours and the public recipe's layout), golden renderings
of the bundled constitution, and exports that TRL's DPOTrainer accepts."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import assert_golden
from fake_openai import default_responder

from align.cli import main
from datagen import store
from datagen.constitutional.constitution import (
    DEFAULT_CONSTITUTION,
    DEFAULT_PROMPTS,
    load_constitution,
    load_prompts,
)
from datagen.constitutional.loop import (
    choose_principles,
    critique_and_revise,
    degenerate_reason,
    load_samples,
    preference_pairs,
    save_samples,
    sft_examples,
    split_prompt_ids,
)
from datagen.endpoint.client import CHAT_PATH, ClientConfig, LLMClient, run_async
from datagen.endpoint.keys import canonical_json, request_key

GOLDEN = Path(__file__).parent / "golden" / "constitutional"
RLAIF = Path(sys.executable).parent / "rlaif"

SMALL = """\
name: small
principles:
  - id: harm
    critique_request: Say what is harmful in your last reply.
    revision_request: Rewrite it without the harm. Reply with the rewritten response only.
  - id: truth
    critique_request: Say what is untrue in your last reply.
    revision_request: Rewrite it so that it is true. Reply with the rewritten response only.
  - id: kind
    critique_request: Say what is unkind in your last reply.
    revision_request: Rewrite it kindly. Reply with the rewritten response only.
"""
EXAMPLE = """\
examples:
  - principle: truth
    prompt: Is the sun cold?
    answer: Yes, very.
    critique: The sun is extremely hot, so the answer is false.
    revision: No, the sun is extremely hot.
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def write_prompts(path: Path, prompts: list) -> Path:
    lines = [json.dumps(p if isinstance(p, dict) else {"prompt": p}) for p in prompts]
    return write(path, "\n".join(lines) + "\n")


def generate(fake_llm, db_path: Path, prompts, constitution, concurrency: int = 8, **settings):
    """Run the loop in-process against the fake server and store the samples."""
    config = ClientConfig(base_url=fake_llm.base_url, model="fake-model", max_retries=0,
                          concurrency=concurrency)
    db = store.open_db(db_path)

    async def go():
        async with LLMClient(config, db) as client:
            return await critique_and_revise(client, prompts, constitution, **settings)

    samples = run_async(go())
    save_samples(db, samples)
    return samples, db


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


# --- the loop ----------------------------------------------------------------------------------


def test_message_order_of_every_turn(fake_llm, tmp_path):
    constitution = load_constitution(write(tmp_path / "c.yaml", SMALL + EXAMPLE))
    prompt_file = write_prompts(tmp_path / "p.jsonl", [{"id": "multi", "prompt": [
        {"role": "system", "content": "You are terse."}, user("Hi."), assistant("Hello."),
        user("How do I pick a lock?")]}])
    prompts = load_prompts(prompt_file)
    fake_llm.responder = lambda path, body: {"text": f"reply {len(body['messages'])}"}

    (sample,), db = generate(fake_llm, tmp_path / "db", prompts, constitution, rounds=2, seed=3,
                             temperature=0.5, max_tokens=77)

    first, second = choose_principles(constitution.principles, 3, "multi", 2)
    few_shot = [user("Is the sun cold?"), assistant("Yes, very."),
                user("Say what is untrue in your last reply."),
                assistant("The sun is extremely hot, so the answer is false."),
                user("Rewrite it so that it is true. Reply with the rewritten response only."),
                assistant("No, the sun is extremely hot.")]
    answer_turn = [{"role": "system", "content": "You are terse."}, *few_shot,
                   user("Hi."), assistant("Hello."), user("How do I pick a lock?")]
    critique_1 = [*answer_turn, assistant("reply 10"), user(first.critique_request)]
    revision_1 = [*critique_1, assistant("reply 12"), user(first.revision_request)]
    critique_2 = [*revision_1, assistant("reply 14"), user(second.critique_request)]
    revision_2 = [*critique_2, assistant("reply 16"), user(second.revision_request)]
    bodies = fake_llm.bodies()
    assert [b["messages"] for b in bodies] == [
        answer_turn, critique_1, revision_1, critique_2, revision_2]
    assert {(b["model"], b["temperature"], b["max_tokens"]) for b in bodies} == {
        ("fake-model", 0.5, 77)}

    assert sample.status == "ok" and sample.degenerate is None
    assert sample.initial == "reply 10" and sample.final == "reply 18"
    assert sample.principle_ids == [first.id, second.id]
    assert [(r.principle_id, r.critique, r.revision) for r in sample.rounds] == [
        (first.id, "reply 12", "reply 14"), (second.id, "reply 16", "reply 18")]
    keys = [sample.initial_key] + [k for r in sample.rounds for k in (r.critique_key,
                                                                       r.revision_key)]
    assert keys == [request_key(CHAT_PATH, b) for b in bodies]
    assert store.ledger_totals(db)["ok"] == 5
    (stored,) = load_samples(db)
    assert stored == sample
    assert stored.params == {"temperature": 0.5, "max_tokens": 77, "rounds": 2, "seed": 3}
    assert stored.judge_agrees is None and stored.model == "fake-model"


def test_principle_choice_is_seeded_by_prompt_and_recorded(fake_llm, tmp_path):
    constitution = load_constitution(write(tmp_path / "c.yaml", SMALL))
    prompts = load_prompts(write_prompts(
        tmp_path / "p.jsonl", [{"id": f"q{i}", "prompt": f"question {i}"} for i in range(10)]))

    forward, db = generate(fake_llm, tmp_path / "a.db", prompts, constitution, seed=7)
    sent = fake_llm.bodies()
    backward, _ = generate(fake_llm, tmp_path / "b.db", prompts[::-1], constitution, seed=7,
                           concurrency=3)
    other, _ = generate(fake_llm, tmp_path / "c.db", prompts, constitution, seed=8)

    chosen = {s.prompt_id: s.principle_ids for s in forward}
    assert chosen == {s.prompt_id: s.principle_ids for s in backward}
    assert chosen == {p.id: [choose_principles(constitution.principles, 7, p.id, 1)[0].id]
                      for p in prompts}
    assert chosen != {s.prompt_id: s.principle_ids for s in other}
    assert len({ids[0] for ids in chosen.values()}) > 1
    stored = {s.prompt_id: (s.principle_ids, s.rounds[0].principle_id) for s in load_samples(db)}
    assert stored == {pid: (ids, ids[0]) for pid, ids in chosen.items()}
    # the critique request actually sent is the recorded principle's
    by_id = {p.id: p for p in constitution.principles}
    critiques = {b["messages"][0]["content"]: b["messages"][-1]["content"]
                 for b in sent if len(b["messages"]) == 3}
    assert critiques == {f"question {p.id[1:]}": by_id[chosen[p.id][0]].critique_request
                         for p in prompts}


def test_rounds_draw_distinct_principles_while_they_last():
    constitution = load_constitution(DEFAULT_CONSTITUTION)
    drawn = choose_principles(constitution.principles, 0, "x", 4)
    assert len({p.id for p in drawn}) == 4
    assert len(choose_principles(constitution.principles[:2], 0, "x", 3)) == 3


@pytest.mark.slow
def test_resume_after_sigkill_sends_no_answered_request_again(fake_llm, tmp_path):
    constitution = write(tmp_path / "c.yaml", SMALL)
    prompts = write_prompts(tmp_path / "p.jsonl", [f"question {i}" for i in range(4)])
    db_path = tmp_path / "run.db"
    answered_before_kill = 5
    release, blocking, served = threading.Event(), [True], [0]

    def responder(path, body):
        served[0] += 1
        if blocking[0] and served[0] > answered_before_kill:
            release.wait(30)  # hang: this request is in flight when the process dies
        return default_responder(path, body)

    fake_llm.responder = responder
    cmd = [str(RLAIF), "generate", "constitutional", "--prompts", str(prompts),
           "--constitution", str(constitution), "--db", str(db_path), "--base-url",
           fake_llm.base_url, "--concurrency", "1", "--max-retries", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while len(fake_llm.requests) <= answered_before_kill or \
                store.ledger_totals(store.open_db(db_path))["ok"] < answered_before_kill:
            assert proc.poll() is None and time.monotonic() < deadline, "run never got stuck"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        before = [canonical_json(r["body"]) for r in fake_llm.requests]
        assert len(before) == answered_before_kill + 1
        totals = store.ledger_totals(store.open_db(db_path))
        # pending: the request in flight, and those waiting for a --concurrency slot
        assert totals["ok"] == answered_before_kill and totals["pending"] >= 1

        blocking[0] = False
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
    assert done.returncode == 0, done.stderr
    assert f"{answered_before_kill} from the ledger" in done.stderr
    after = [canonical_json(r["body"]) for r in fake_llm.requests][len(before):]
    assert len(after) == 4 * 3 - answered_before_kill
    assert not set(after) & set(before[:answered_before_kill])  # nothing answered is resent
    assert before[-1] in after  # the one killed in flight is sent again
    db = store.open_db(db_path)
    assert store.ledger_totals(db)["ok"] == 12
    samples = load_samples(db)
    assert [s.status for s in samples] == ["ok"] * 4
    assert all(s.final and len(s.rounds) == 1 for s in samples)


# --- degenerate results, failures, the CLI summary -----------------------------------------------

SCRIPT = {  # prompt: (answer, critique, revision); None = let the responder decide
    "good": ("Aim for the knees.", "That helps someone injure a person.",
             "Walk away and stay safe; call for help if you are threatened."),
    "refused": ("I'm sorry, but I can't help with that.", "The refusal was needlessly evasive.",
                "Keep medicine locked away and out of children's reach."),
    "unchanged": ("Keep it   simple.", "It is fine as it is.", "keep it simple.\n"),
    "scaffold": ("Answer A.", "Too blunt.", "Critique: too blunt.\nRevision: Answer B."),
    "echo": ("Answer C.", "Needs work.", None),
    "empty-revision": ("Answer D.", "Needs work.", "   "),
    "empty-answer": ("", None, None),
    "broken": (None, None, None),
}


def scripted(path, body):
    messages = body["messages"]
    turn = (len(messages) - 1) // 2
    prompt = messages[0]["content"]
    if prompt == "broken":
        return {"status": 400, "error": "bad request"}
    text = SCRIPT[prompt][turn]
    return {"text": "Sure. " + messages[-1]["content"] if text is None else text}


def test_degenerate_revisions_and_failures_are_counted_not_paired(fake_llm, tmp_path):
    constitution = write(tmp_path / "c.yaml", SMALL)
    prompts = write_prompts(tmp_path / "p.jsonl", [{"id": k, "prompt": k} for k in SCRIPT])
    fake_llm.responder = scripted
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(main, [
        "generate", "constitutional", "--prompts", str(prompts), "--constitution",
        str(constitution), "--db", str(tmp_path / "db"), "--base-url", fake_llm.base_url,
        "--max-retries", "0", "-o", str(out)])

    assert result.exit_code == 1, result.output  # one request failed
    assert "8 prompts: empty 2, failed 1, ok 5" in result.output
    assert "degenerate: empty_revision 1, scaffolding 2, unchanged 1" in result.output
    assert "refusals: answer 1; 2 pairs" in result.output
    rows = {r["prompt_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert {k: (r["status"], r["degenerate"], r["stopped_at"]) for k, r in rows.items()} == {
        "good": ("ok", None, None), "refused": ("ok", None, None),
        "unchanged": ("ok", "unchanged", None), "scaffold": ("ok", "scaffolding", None),
        "echo": ("ok", "scaffolding", None),
        "empty-revision": ("empty", "empty_revision", "revision-1"),
        "empty-answer": ("empty", None, "answer"), "broken": ("failed", None, "answer")}
    assert rows["refused"]["refusals"] == ["answer"]
    assert "HTTP 400" in rows["broken"]["error"] and rows["broken"]["initial"] is None
    assert rows["empty-answer"]["rounds"] == [] and rows["empty-answer"]["initial"] is None

    db = store.open_db(tmp_path / "db")
    pairs = list(preference_pairs(db))
    assert [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs] == [
        ([user(k)], [assistant(SCRIPT[k][2])], [assistant(SCRIPT[k][0])])
        for k in ("good", "refused")]
    assert all(p["id"] == rows[p["prompt"][0]["content"]]["id"] for p in pairs)
    sft = list(sft_examples(db))
    assert sorted(s["messages"][0]["content"] for s in sft) == ["good", "refused", "unchanged"]
    assert {s["source"] for s in sft} == {"constitutional"}
    run = store.get_run(db, rows["good"]["run_id"])
    assert run["status"] == "incomplete" and run["summary"]["status"]["failed"] == 1


def test_budget_stop_is_recorded_not_crashed(fake_llm, tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", ["one", "two"])
    result = CliRunner().invoke(main, [
        "generate", "constitutional", "--prompts", str(prompts), "--db", str(tmp_path / "db"),
        "--base-url", fake_llm.base_url, "--budget-usd", "0"])
    assert result.exit_code == 1, result.output
    assert "2 prompts: skipped 2;" in result.output and "0 pairs" in result.output
    assert fake_llm.requests == []
    samples = load_samples(store.open_db(tmp_path / "db"))
    assert {(s.status, s.stopped_at) for s in samples} == {("skipped", "answer")}
    assert all("budget" in s.error for s in samples)


def test_degenerate_reason_rules():
    (principle,) = load_constitution(DEFAULT_CONSTITUTION).principles[:1]
    assert degenerate_reason("A b", None) == "empty_revision"
    assert degenerate_reason("A b", " \n") == "empty_revision"
    assert degenerate_reason("A   b.", "a B.") == "unchanged"
    assert degenerate_reason("x", "**Revision:** better") == "scaffolding"
    assert degenerate_reason("x", "Here you go:\nCritique request: none") == "scaffolding"
    assert degenerate_reason("x", "OK. " + principle.revision_request.upper(),
                             [principle]) == "scaffolding"
    assert degenerate_reason("x", "A revision of the plan is due: see below.") is None


# --- constitution files --------------------------------------------------------------------------


def test_public_recipe_json_layout_loads_unchanged(fake_llm, tmp_path):
    path = GOLDEN / "hf_layout_sample.json"
    raw = json.loads(path.read_text())
    constitution = load_constitution(path)
    assert constitution.layout == "hf"
    assert [(p.id, p.critique_request, p.revision_request) for p in constitution.principles] == [
        (f"critic-{i:02d}", c["critic"], c["revision"])
        for i, c in enumerate(raw["constitutions"])]
    flattened = [m for conversation in raw["system_chat"] for m in conversation]
    assert [m.model_dump() for m in constitution.few_shot] == flattened
    assert len(flattened) == 12

    prompts = load_prompts(write_prompts(tmp_path / "p.jsonl", ["How do I start a fire?"]))
    (sample,), _ = generate(fake_llm, tmp_path / "db", prompts, constitution)
    first = fake_llm.bodies()[0]["messages"]
    assert first == [*flattened, user("How do I start a fire?")]
    assert sample.principle_ids[0] in {"critic-00", "critic-01", "critic-02"}
    assert fake_llm.bodies()[1]["messages"][-1]["content"] == \
        raw["constitutions"][int(sample.principle_ids[0][-2:])]["critic"]


GOOD_PRINCIPLE = {"id": "a", "critique_request": "x", "revision_request": "y"}
BAD_FILES = [
    ("missing-key", "c.yaml", "principles:\n  - id: a\n    critique_request: x\n",
     "c.yaml:2: principles[0].revision_request: missing required key"),
    ("no-principles", "c.yaml", "name: x\n", "c.yaml:1: principles: missing required key"),
    ("empty-list", "c.yaml", "name: x\nprinciples: []\n",
     "c.yaml:2: principles: List should have at least 1 item"),
    ("unknown-top", "c.yaml", f"principles: [{json.dumps(GOOD_PRINCIPLE)}]\ncolour: blue\n",
     "c.yaml:2: colour: unknown key"),
    ("unknown-nested", "c.yaml",
     "principles:\n  - id: a\n    critique_request: x\n    revision_request: y\n    weight: 2\n",
     "c.yaml:5: principles[0].weight: unknown key"),
    ("empty-text", "c.yaml", "principles:\n  - id: a\n    critique_request: ''\n"
     "    revision_request: y\n", "c.yaml:3: principles[0].critique_request: String should"),
    ("duplicate-id", "c.yaml", f"principles:\n  - {json.dumps(GOOD_PRINCIPLE)}\n"
     f"  - {json.dumps(GOOD_PRINCIPLE)}\n", "c.yaml:3: principles[1].id: duplicate principle"),
    ("unknown-example-principle", "c.yaml", SMALL + EXAMPLE.replace("truth", "nope"),
     "c.yaml:13: examples[0].principle: unknown principle id 'nope'"),
    ("example-missing-key", "c.yaml", SMALL + EXAMPLE.replace("    answer: Yes, very.\n", ""),
     "c.yaml:13: examples[0].answer: missing required key"),
    ("hf-missing", "c.json", json.dumps({"constitutions": [{"critic": "x"}]}, indent=1),
     "c.json:3: constitutions[0].revision: missing required key"),
    ("hf-unknown", "c.json",
     json.dumps({"constitutions": [{"critic": "x", "revision": "y", "weight": 1}]}),
     "c.json:1: constitutions[0].weight: unknown key"),
    ("hf-unknown-top", "c.json",
     json.dumps({"constitutions": [{"critic": "x", "revision": "y"}], "chat": []}),
     "c.json:1: chat: unknown key"),
    ("hf-empty", "c.json", json.dumps({"constitutions": [], "system_chat": []}),
     "c.json:1: constitutions: List should have at least 1 item"),
    ("hf-bad-role", "c.json", json.dumps({"constitutions": [{"critic": "x", "revision": "y"}],
                                          "system_chat": [[{"role": "bot", "content": "x"}]]}),
     "system_chat[0][0].role: Input should be 'system', 'user' or 'assistant'"),
    ("not-a-mapping", "c.yaml", "- a\n- b\n", "c.yaml: expected a mapping"),
    ("bad-yaml", "c.yaml", "principles: [\n",
     "c.yaml:2: not valid YAML (expected the node content"),
    ("bad-json", "c.json", "{\"constitutions\": ", "c.json:1: not valid JSON (Expecting value)"),
    ("missing-file", None, None, "missing.yaml: cannot read"),
]


@pytest.mark.parametrize("name,filename,text,expected", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_constitution_files_exit_2_naming_file_and_key(tmp_path, name, filename, text,
                                                           expected):
    path = write(tmp_path / filename, text) if filename else tmp_path / "missing.yaml"
    db = tmp_path / "never.db"
    result = CliRunner().invoke(main, [
        "generate", "constitutional", "--constitution", str(path), "--db", str(db),
        "--base-url", "http://127.0.0.1:9/v1"])
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert str(tmp_path) in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not db.exists()  # nothing opened, nothing sent


def test_bad_prompts_file_exit_2_with_line(tmp_path):
    prompts = write(tmp_path / "p.jsonl", '{"prompt": "fine"}\n\n{"prompt": [{"role": '
                    '"assistant", "content": "hi"}]}\n')
    result = CliRunner().invoke(main, [
        "generate", "constitutional", "--prompts", str(prompts), "--db", str(tmp_path / "db"),
        "--base-url", "http://127.0.0.1:9/v1"])
    assert result.exit_code == 2
    assert "p.jsonl:3: prompt: Value error, must be a non-empty string or a list of messages " \
           "ending with 'user'" in result.output
    for line, expected in [('{"prompt": "a", "tags": []}', "p.jsonl:1: tags: unknown key"),
                           ('{"id": "x", "prompt": "a"}\n{"id": "x", "prompt": "b"}',
                            "p.jsonl:2: duplicate prompt id 'x' (first on line 1)"),
                           ("[1]", "p.jsonl:1: expected a JSON object")]:
        with pytest.raises(Exception, match=expected.replace("(", r"\(").replace(")", r"\)")):
            load_prompts(write(prompts, line + "\n"))


# --- the bundled constitution and prompts (golden) -----------------------------------------------


def render(bodies: list[dict]) -> str:
    parts = []
    for number, body in enumerate(bodies, start=1):
        parts.append(f"=== request {number} ===")
        parts += [f"[{m['role']}]\n{m['content']}\n" for m in body["messages"]]
    return "\n".join(parts)


def test_default_constitution_rendering_golden(fake_llm, tmp_path):
    constitution = load_constitution(DEFAULT_CONSTITUTION)
    assert len(constitution.principles) >= 12
    assert len({p.id for p in constitution.principles}) == len(constitution.principles)
    prompts = load_prompts(write_prompts(
        tmp_path / "p.jsonl", [{"id": "golden", "prompt": "How can I get into my ex's email?"}]))
    placeholders = ["<initial answer>", "<critique>", "<revision>"]
    offset = len(constitution.few_shot) + 1
    fake_llm.responder = lambda path, body: {
        "text": placeholders[(len(body["messages"]) - offset) // 2]}
    (sample,), _ = generate(fake_llm, tmp_path / "db", prompts, constitution, seed=0)
    principles = "\n".join(
        f"- {p.id}\n  critique: {p.critique_request}\n  revision: {p.revision_request}"
        for p in constitution.principles)
    text = (f"constitution: {constitution.name} ({constitution.content_hash})\n"
            f"principles:\n{principles}\n\n"
            f"prompt 'golden', seed 0 -> principle {sample.principle_ids[0]}\n\n"
            f"{render(fake_llm.bodies())}")
    assert_golden(GOLDEN / "default_rendering.txt", text)
    assert sample.final == "<revision>"


def test_default_red_team_prompts_golden():
    prompts = load_prompts(DEFAULT_PROMPTS)
    assert len(prompts) >= 100 and all(p.category for p in prompts)
    categories: dict[str, int] = {}
    for p in prompts:
        categories[p.category] = categories.get(p.category, 0) + 1
    summary = {"total": len(prompts), "multi_turn": sum(len(p.messages) > 1 for p in prompts),
               "categories": categories}
    assert_golden(GOLDEN / "red_team_prompts.json", json.dumps(summary, indent=2) + "\n")


# --- exports -------------------------------------------------------------------------------------


def test_split_is_disjoint_by_prompt_and_seeded():
    ids = [f"p{i}" for i in range(7)]
    sft, prefs = split_prompt_ids(ids, seed=0)
    assert (len(sft), len(prefs)) == (3, 4)
    assert not sft & prefs and sft | prefs == set(ids)
    assert split_prompt_ids(reversed(ids), seed=0) == (sft, prefs)
    assert split_prompt_ids(ids, seed=1) != (sft, prefs)


def answering(path, body):
    """Distinct texts per turn for the SMALL constitution's requests."""
    last, size = body["messages"][-1]["content"], len(body["messages"])
    if last.startswith("Say what"):
        return {"text": f"The answer is unsafe ({size})."}
    if last.startswith("Rewrite"):
        return {"text": f"Safe answer ({size})."}
    return {"text": f"Unsafe answer to {last}"}


@pytest.mark.slow
def test_exports_pass_trl_dpo_data_preparation(fake_llm, tmp_path):
    import datasets
    import trl
    from align_models import build_policy, build_tokenizer  # torch: import only here

    constitution = load_constitution(write(tmp_path / "c.yaml", SMALL))
    lines = [{"id": f"q{i}", "prompt": f"question {i}"} for i in range(5)]
    lines.append({"id": "multi", "prompt": [{"role": "system", "content": "Be brief."},
                                            user("Hi"), assistant("Hello"), user("And now?")]})
    fake_llm.responder = answering
    _, db = generate(fake_llm, tmp_path / "db", load_prompts(write_prompts(
        tmp_path / "p.jsonl", lines)), constitution)

    pairs = list(preference_pairs(db))
    assert len(pairs) == 6
    multi = next(p for p in pairs if p["id"].endswith("/multi"))
    assert [m["role"] for m in multi["prompt"]] == ["system", "user", "assistant", "user"]
    sft_half = {e["id"] for e in sft_examples(db, split="sft", seed=1)}
    pref_half = {p["id"] for p in preference_pairs(db, split="preference", seed=1)}
    assert (len(sft_half), len(pref_half)) == (3, 3) and not sft_half & pref_half

    sft = datasets.Dataset.from_list(list(sft_examples(db)))
    assert trl.is_conversational(sft[0]) and sft[0]["messages"][-1]["role"] == "assistant"
    dataset = datasets.Dataset.from_list(pairs)
    assert trl.is_conversational(dataset[0])
    assert dataset.map(trl.maybe_extract_prompt)[0]["prompt"] == pairs[0]["prompt"]
    tokenizer = build_tokenizer()
    templated = dataset.map(trl.maybe_apply_chat_template,
                            fn_kwargs={"processing_class": tokenizer})
    assert templated[0]["prompt"].endswith("<|im_start|>assistant\n")
    assert templated[0]["chosen"] == pairs[0]["chosen"][0]["content"] + "<|im_end|>\n"

    args = trl.DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=1, max_length=128,
                         per_device_train_batch_size=2, bf16=False, use_cpu=True,
                         gradient_checkpointing=False, report_to="none", save_strategy="no",
                         dataloader_pin_memory=False, logging_steps=1)
    trainer = trl.DPOTrainer(model=str(build_policy(tokenizer, tmp_path / "policy")), args=args,
                             train_dataset=dataset, processing_class=tokenizer)
    assert len(trainer.train_dataset) == 6
    assert {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(trainer.train_dataset.column_names)
    assert trainer.train().training_loss > 0

