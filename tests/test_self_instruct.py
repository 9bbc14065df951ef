"""Self-Instruct: prompts (golden files), parsing and filters, and whole runs against the fake
OpenAI server, including a real SIGKILL of `rlaif generate self-instruct` and a restart."""

from __future__ import annotations

import hashlib
import json
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import assert_golden

from datagen import store
from datagen.endpoint.client import ClientConfig, LLMClient, run_async
from datagen.endpoint.keys import canonical_json
from datagen.errors import UserInputError
from datagen.self_instruct.cli import dedup, export_self_instruct, generate_self_instruct
from datagen.self_instruct.generate import (
    SelfInstructConfig,
    load_seed_tasks,
    run_self_instruct,
    sft_examples,
)
from datagen.self_instruct.parse import (
    Instance,
    SeedTask,
    filter_instances,
    instruction_filter,
    parse_input_first,
    parse_instruction_list,
    parse_output_first,
    parse_yes_no,
    render_classify_prompt,
    render_generate_prompt,
    render_instance_prompt,
    sample_context,
)
from datagen.self_instruct.rouge import rouge_l
from datagen.store.tables import SI_INSTANCES, SI_INSTRUCTIONS, SI_TASKS

GOLDEN = Path(__file__).parent / "golden" / "self_instruct"
RLAIF = Path(sys.executable).parent / "rlaif"


# --- a scripted model ---------------------------------------------------------------------

VERBS = ("Describe", "Summarize", "Compare", "Rewrite", "Explain", "List", "Translate", "Plan",
         "Estimate", "Outline", "Critique", "Draft", "Suggest", "Classify", "Rank")
TOPICS = ("the history of tea", "a budget for students", "two sorting algorithms",
          "a poem about rain", "customer reviews of a blender", "the rules of chess",
          "a weekly meal plan", "the causes of inflation", "a job interview answer",
          "a product launch email", "the water cycle", "a bedtime story about owls",
          "solar panels for a small house", "the French revolution", "a marathon schedule")


def scripted(path: str, body: dict) -> dict:
    """Deterministic replies chosen by a hash of the prompt, so reruns see the same model."""
    text = body["messages"][-1]["content"]
    rng = random.Random(hashlib.sha256(text.encode()).hexdigest())
    if "Classification task?" in text:
        return {"text": rng.choice([" Yes", "No", "no"])}
    if "Class label" in text.splitlines()[0] or text.startswith("Each classification task"):
        return {"text": "Class label: Positive\nInput: I love it.\n"
                        "Class label: Negative\nInput: I hate it."}
    if text.startswith("Each task below"):
        k = rng.randint(1, 99)
        return {"text": f"Example 1\nInput: case {k}\nOutput: answer {k}\n\n"
                        f"Example 2\nOutput: a reply with no input {k}"}
    items = [f"{rng.choice(VERBS)} {rng.choice(TOPICS)} for {rng.choice(TOPICS)} in "
             f"{rng.randint(2, 9)} sentences." for _ in range(5)]
    return {"text": items[0] + "\n" + "\n".join(f"{10 + i}. {t}" for i, t in enumerate(items[1:]))}


def run_in_process(fake, db_path: Path, seeds=None, **options):
    config = SelfInstructConfig(**{"prompts_per_round": 2, **options})
    seeds = seeds or load_seed_tasks()
    db = store.open_db(db_path)

    async def go():
        async with LLMClient(ClientConfig(base_url=fake.base_url, max_retries=0), db) as client:
            return await run_self_instruct(client, db, config, seeds)

    return run_async(go()), db


def kept_rows(db) -> list[tuple[str, str]]:
    return [(r["id"], r["instruction"]) for r in store.load_rows(
        db, SI_INSTRUCTIONS, order_by="round, prompt_index, item_index", status="kept")]


# --- seed tasks -----------------------------------------------------------------------------


def test_default_seed_tasks_are_many_and_varied():
    seeds = load_seed_tasks()
    assert len(seeds) >= 150
    assert len({s.id for s in seeds}) == len(seeds)
    assert 20 <= sum(s.is_classification for s in seeds) <= 40
    assert all(s.instances and s.instances[0]["output"] for s in seeds)
    text = " ".join(s.instruction.lower() for s in seeds)
    for kind in ("python", "sql", "classify", "extract", "rewrite", "solve", "plan", "poem"):
        assert kind in text


@pytest.mark.parametrize(("content", "message"), [
    ('{"instruction": "Do a thing.", "instances": []}\nnot json\n', ":2: not valid JSON"),
    ('{"instances": [{"input": "", "output": "x"}]}\n', ":1: missing instruction"),
    ("", ":1: empty seed file"),
    ('{"instruction": "A"}\n\n{"instruction": "B", "id": "seed_1"}\n', ":3: duplicate id"),
])
def test_bad_seed_files_name_the_line(tmp_path, content, message):
    path = tmp_path / "seeds.jsonl"
    path.write_text(content)
    with pytest.raises(UserInputError, match=message):
        load_seed_tasks(path)
    result = CliRunner().invoke(generate_self_instruct, ["--seed-tasks", str(path),
                                                         "--db", str(tmp_path / "x.db")])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "x.db").exists()


# --- prompts --------------------------------------------------------------------------------

SEEDS = [
    SeedTask(id="s1", instruction="Classify the review as positive or negative.",
             instances=[{"input": "Great phone.", "output": "Positive"},
                        {"input": "It broke in a day.", "output": "Negative"}],
             is_classification=True),
    SeedTask(id="s2", instruction="Write a haiku about the season.",
             instances=[{"input": "Winter", "output": "Snow on the fence post"}]),
    SeedTask(id="s3", instruction="Give three tips for sleeping better:",
             instances=[{"input": "", "output": "Keep a schedule; no screens; cool room."}]),
    SeedTask(id="s4", instruction="Is the number even or odd?",
             instances=[{"input": "7", "output": "Odd"}], is_classification=True),
]


def test_generate_prompt_golden():
    instructions = [f"Task number {i}:  with   extra spaces" if i == 3 else f"Do task {i}."
                    for i in range(1, 9)]
    prompt = render_generate_prompt(instructions)
    assert_golden(GOLDEN / "generate.txt", prompt)
    lines = prompt.splitlines()
    numbered = [ln for ln in lines if ln[:1].isdigit()]
    assert [int(ln.split(".")[0]) for ln in numbered] == list(range(1, 10))
    assert lines[-1] == "9." and "3. Task number 3: with extra spaces" in lines


def test_classify_prompt_golden():
    prompt = render_classify_prompt("Decide if the email is spam.", SEEDS)
    assert_golden(GOLDEN / "classify.txt", prompt)
    assert prompt.count("Classification task? Yes") == 2
    assert prompt.endswith("Task: Decide if the email is spam.\nClassification task?\n")


def test_instance_prompts_golden():
    input_first = render_instance_prompt("Summarize the text.", False, SEEDS[1:3], 5)
    label_first = render_instance_prompt("Is the tweet sarcastic?", True, [SEEDS[0], SEEDS[3]], 5)
    assert_golden(GOLDEN / "instances_input.txt", input_first)
    assert_golden(GOLDEN / "instances_label.txt", label_first)
    assert "Example 1\nInput: Winter\nOutput: Snow on the fence post" in input_first
    assert "Example 1\nOutput: Keep a schedule" in input_first
    assert "Class label: Positive\nInput: Great phone." in label_first
    assert input_first.endswith("Task: Summarize the text.\n")


def test_context_mixes_machine_and_human_tasks():
    rng = random.Random(0)
    seeds = [SeedTask(id=f"h{i}", instruction=f"human {i}", instances=[]) for i in range(20)]
    machine = [(f"m{i}", f"machine {i}") for i in range(5)]
    empty = sample_context(rng, seeds, [], 8, 2)
    assert len(empty) == 8 and all(i.startswith("h") for i, _ in empty)
    one = sample_context(rng, seeds, machine[:1], 8, 2)
    assert sum(i.startswith("m") for i, _ in one) == 1
    mixed = sample_context(rng, seeds, machine, 8, 2)
    assert sorted(i[0] for i, _ in mixed) == ["h"] * 6 + ["m"] * 2


# --- instruction parsing and filters --------------------------------------------------------


@pytest.mark.parametrize(("text", "reason"), [
    ("Sort these four numbers.", None),
    ("Sort the numbers.", "too_short"),
    (" ".join(["word"] * 150), None),
    (" ".join(["word"] * 151), "too_long"),
    ("Describe the mapping between two sets.", None),
    ("Draw the map of your hometown.", "blacklist"),
    ("Make a plot of the data.", "blacklist"),
    ("Go to the store and buy milk.", "blacklist"),
    ("Summarize the attached FILES for me.", "blacklist"),
    ("Write a programming tutorial outline.", None),
    ("Write a program that sorts a list.", "write_a_program"),
    ("(Optional) explain the rule of thirds.", "leading_punctuation"),
    ("Éxplain the rule of thirds in photography.", "non_ascii_start"),
])
def test_instruction_filters(text, reason):
    assert instruction_filter(text) == reason


@pytest.mark.parametrize(("reply", "expected"), [
    ("Write a limerick about a cat.\n10. Translate the sentence into German.\n11. Sort the list",
     ["Write a limerick about a cat.", "Translate the sentence into German.", "Sort the list"]),
    ("Sure! Here are more tasks:\n\n9. **Plan a picnic for six people.**\n10) give three tips\n"
     "   for saving money.\n\nI hope these help!",
     ["Plan a picnic for six people.", "Give three tips for saving money."]),
    ("1. First task here.\n2.\n3. Explain SQL joins to a beginner.",
     ["First task here.", "Explain SQL joins to a beginner."]),
    ("", []),
    ("I'm sorry, I can't continue this list", ["I'm sorry, I can't continue this list"]),
])
def test_parse_messy_instruction_lists(reply, expected):
    assert parse_instruction_list(reply) == expected


def test_classification_answers():
    assert [parse_yes_no(a) for a in (" Yes", "yes", "No", "", "YES.", "maybe")] == [
        True, True, False, False, True, False]


def test_parse_input_first():
    text = ("Example 1\nInput: 2 + 2\nOutput: 4\n\nExample 2\nOutput: Hello there\n"
            "Example 3\nInput: x\nOutput: y\nInput: stray input that is cut\nExample 4\n"
            "Input: no output here")
    assert parse_input_first(text) == [
        Instance(input="2 + 2", output="4"), Instance(input="", output="Hello there"),
        Instance(input="x", output="y")]
    assert parse_input_first("Output: just one") == [Instance(input="", output="just one")]
    assert parse_input_first("nothing useful") == []


def test_parse_output_first():
    text = "Class label: Yes\nInput: Oh great, rain again.\nClass label: No\nInput: Nice day."
    assert parse_output_first(text) == [
        Instance(input="Oh great, rain again.", output="Yes"),
        Instance(input="Nice day.", output="No")]
    assert parse_output_first("Class label: Spam\n") == [Instance(input="", output="Spam")]


def test_instance_filters():
    rng = random.Random(0)
    good = Instance(input="a", output="b")
    kept, dropped, reason = filter_instances([
        good, good, Instance(input="same", output="same"), Instance(input="", output=""),
        Instance(input="Input:", output="x"), Instance(input="c", output="d")], 5, rng)
    assert kept == [good, Instance(input="c", output="d")] and reason is None
    assert dropped == {"duplicate": 1, "same_input_output": 1, "empty_output": 1,
                       "ends_with_colon": 1}
    kept, _, reason = filter_instances(
        [Instance(input="q", output="1"), Instance(input="q", output="2")], 5, rng)
    assert kept == [] and reason == "conflicting_outputs"
    many = [Instance(input=str(i), output=f"o{i}") for i in range(9)]
    kept, dropped, _ = filter_instances(many, 5, rng)
    assert len(kept) == 5 and dropped == {"too_many": 4}
    assert [int(k.input) for k in kept] == sorted(int(k.input) for k in kept)


# --- whole runs against the fake server ------------------------------------------------------


def test_run_records_lineage_and_routes_classification(fake_llm, tmp_path):
    fake_llm.responder = scripted
    summary, db = run_in_process(fake_llm, tmp_path / "a.db", num_instructions=10)
    assert summary.status == "complete" and summary.kept >= 10
    rows = store.load_rows(db, SI_INSTRUCTIONS)
    assert len(rows) == summary.candidates
    for row in rows:
        assert row["run_id"] == summary.run_id and len(json.loads(row["context_ids"])) == 8
        assert json.loads(row["params"])["temperature"] == 1.0 and len(row["request_key"]) == 64
        assert isinstance(row["rouge_l"], float)
    tasks = {t["id"]: t for t in store.load_rows(db, SI_TASKS)}
    assert len(tasks) == summary.kept
    assert 0 < summary.classification_tasks < summary.kept
    for inst in store.load_rows(db, SI_INSTANCES):
        assert inst["parent"] == inst["instruction_id"] in tasks
        assert json.loads(inst["context_ids"]) and len(inst["request_key"]) == 64
    bodies = [b for b in fake_llm.bodies() if b["messages"][0]["content"].startswith("Each")]
    label_first = [b for b in bodies if "Class label" in b["messages"][0]["content"]]
    assert len(label_first) == summary.classification_tasks
    assert all(b["stop"] == ["Example 6", "\nTask:"] and b["temperature"] == 0 for b in bodies)
    examples = list(sft_examples(db))
    assert len(examples) == summary.instances > 0
    assert examples[0]["source"] == "self-instruct"
    assert [m["role"] for m in examples[0]["messages"]] == ["user", "assistant"]
    sent = len(fake_llm.requests)
    again, _ = run_in_process(fake_llm, tmp_path / "a.db", num_instructions=10)
    assert len(fake_llm.requests) == sent and again == summary


def test_truncated_and_unparseable_replies(fake_llm, tmp_path):
    lock, seen, generated = threading.Lock(), [], []

    def responder(path, body):
        reply = scripted(path, body)
        text = body["messages"][-1]["content"]
        if text.startswith("Below"):
            with lock:
                generated.append(text)
                if len(generated) == 1:
                    return {"text": ""}
            return {**reply, "finish_reason": "length"}
        if text.startswith("Each task below"):
            with lock:
                seen.append(text)
                if len(seen) == 1:
                    return {"text": "no examples today"}
        return reply

    fake_llm.responder = responder
    summary, db = run_in_process(fake_llm, tmp_path / "b.db", num_instructions=6)
    assert summary.status == "complete"
    assert summary.rejected.get("truncated", 0) >= 1
    failures = store.load_rows(db, "si_failures")
    assert {"", "no examples today"} <= {f["raw_text"] for f in failures}
    assert summary.failed_parses == len(failures) >= 2
    last_items = [r for r in store.load_rows(db, SI_INSTRUCTIONS) if r["reason"] == "truncated"]
    assert all(r["item_index"] == 4 for r in last_items)


def test_larger_target_extends_the_same_run(fake_llm, tmp_path):
    fake_llm.responder = scripted
    small, db = run_in_process(fake_llm, tmp_path / "c.db", num_instructions=6)
    grown, db = run_in_process(fake_llm, tmp_path / "c.db", num_instructions=16)
    direct, db2 = run_in_process(fake_llm, tmp_path / "d.db", num_instructions=16)
    assert small.run_id == grown.run_id == direct.run_id
    assert small.kept < grown.kept
    assert kept_rows(db) == kept_rows(db2)
    assert list(sft_examples(db)) == list(sft_examples(db2))


@pytest.mark.slow
def test_sigkill_and_restart_reaches_the_same_result(fake_llm, tmp_path):
    def slow(path, body):
        return {**scripted(path, body), "delay": 0.03}

    fake_llm.responder = slow
    db_path = tmp_path / "kill.db"
    args = [str(RLAIF), "generate", "self-instruct", "--base-url", fake_llm.base_url,
            "--db", str(db_path), "--num-instructions", "24", "--prompts-per-round", "3",
            "--concurrency", "4"]

    def answered() -> set[str]:
        if not db_path.exists():
            return set()
        with sqlite3.connect(db_path) as conn:
            try:
                return {row[0] for row in conn.execute(
                    "SELECT body FROM requests WHERE status = 'ok'")}
            except sqlite3.OperationalError:
                return set()

    snapshots = []  # (requests received so far, bodies answered) at each kill
    for kill_after in (4, 30):
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while len(answered()) < kill_after and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        snapshots.append((len(fake_llm.requests), answered()))
    final = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    for before, done in snapshots:
        assert len(done) > 0 and before > 0
        assert not [r for r in fake_llm.requests[before:] if canonical_json(r["body"]) in done]
    bodies = [canonical_json(r["body"]) for r in fake_llm.requests]
    assert len(bodies) - len(set(bodies)) <= 8  # only replies lost in flight at the kills

    fake_llm.responder = scripted
    summary, reference = run_in_process(fake_llm, tmp_path / "ref.db", prompts_per_round=3,
                                        num_instructions=24)
    killed = store.open_db(db_path)
    assert kept_rows(killed) == kept_rows(reference)
    assert list(sft_examples(killed)) == list(sft_examples(reference))
    assert "complete" in final.stderr and f"{summary.kept} kept" in final.stderr


# --- dedup and export commands --------------------------------------------------------------


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_dedup_command(tmp_path):
    texts = ["Write a poem about the sea.", "Write a poem about the sea!",
             "Explain how vaccines work.", "", "Write a short poem about the sea.",
             "Explain how vaccines protect people from measles."]
    src = write_jsonl(tmp_path / "in.jsonl",
                      [{"instruction": t, "k": i} for i, t in enumerate(texts)])
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(dedup, [str(src), "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["k"] for r in rows] == list(range(6))
    assert [r["novel"] for r in rows] == [True, False, True, True, False, True]
    assert rows[0]["rouge_l"] == 0.0 and rows[0]["nearest"] is None
    assert rows[1]["rouge_l"] == 1.0 and rows[1]["nearest"] == 0
    assert rows[3]["nearest"] is None
    assert rows[4]["rouge_l"] == rouge_l(texts[0], texts[4]) and rows[4]["nearest"] == 0
    assert rows[5]["nearest"] == 2 and rows[5]["rouge_l"] == rouge_l(texts[2], texts[5])

    pool = write_jsonl(tmp_path / "pool.jsonl", [{"instruction": "Unrelated words only."},
                                                 {"instruction": "Explain how vaccines work."}])
    result = CliRunner().invoke(dedup, [str(src), "-o", str(out), "--against", str(pool),
                                        "--threshold", "0.9"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[2]["novel"] is False and rows[2]["nearest"] == "against:1"


def test_dedup_bad_input_writes_nothing(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"instruction": "fine"}\n{"text": "no field"}\n')
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(dedup, [str(src), "-o", str(out)])
    assert result.exit_code == 2 and "in.jsonl:2: missing field 'instruction'" in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == [src]


def test_export_command(fake_llm, tmp_path):
    fake_llm.responder = scripted
    summary, _ = run_in_process(fake_llm, tmp_path / "e.db", num_instructions=4)
    out = tmp_path / "si.jsonl"
    result = CliRunner().invoke(export_self_instruct, ["--db", str(tmp_path / "e.db"),
                                                       "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == summary.instances
    row = rows[0]
    assert {"instruction", "input", "output", "messages", "id"} <= set(row)
    user = row["instruction"] + (f"\n\n{row['input']}" if row["input"] else "")
    assert row["messages"] == [{"role": "user", "content": user},
                               {"role": "assistant", "content": row["output"]}]


def test_a_stall_is_a_normal_end_that_says_what_to_change(fake_llm, tmp_path):
    # issue 17: a stalled run exited 1, and a pipeline asked for reruns that could not help
    def same_every_time(path: str, body: dict) -> dict:
        reply = scripted(path, body)
        text = body["messages"][-1]["content"]
        if "Classification task?" in text or "Class label" in text or "Each" in text[:20]:
            return reply
        return {"text": "Write a poem about the sea in 4 sentences.\n"
                        "10. Write a poem about the sea in 5 sentences."}
    fake_llm.responder = same_every_time
    db = tmp_path / "stall.db"
    args = ["--db", str(db), "--base-url", fake_llm.base_url, "--num-instructions", "5",
            "--prompts-per-round", "1", "--patience", "2", "--max-retries", "0"]
    result = CliRunner().invoke(generate_self_instruct, args)
    assert result.exit_code == 0, result.output
    assert "stalled with 1 of 5 instructions" in result.output
    assert "raise --temperature" in result.output and "stronger model" in result.output
    runs = store.load_rows(store.open_db(db), "runs")
    assert [r["status"] for r in runs] == ["stalled"]
    sent = len(fake_llm.requests)
    again = CliRunner().invoke(generate_self_instruct, args)
    assert again.exit_code == 0 and "stalled" in again.output and len(fake_llm.requests) == sent


def test_defaults_are_the_sampling_that_works_for_small_models():
    config = SelfInstructConfig()
    assert (config.temperature, config.top_p) == (1.0, 0.95)
    params = {p.name: p.default for p in generate_self_instruct.params}
    assert (params["temperature"], params["top_p"]) == (1.0, 0.95)
