"""`rlaif report`: a real project database, label, metrics and eval files, the page opened in
headless Chromium (no broken image, no script error, stored markup shown as text, not blank),
dataset cards traced back to their runs, user errors, and the page template's golden file."""

from __future__ import annotations

import io
import json
import math
import random
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from browser import Chromium
from click.testing import CliRunner
from conftest import assert_golden
from PIL import Image

from align.eval.intervals import wilson
from align.export.datasets import export_preference, export_sft
from align.report.cli import report
from align.report.data import eval_results, verb_noun
from align.report.html import Section, render_page
from datagen import store
from datagen.constitutional import loop as constitutional
from datagen.constitutional.loop import CaiSample, CaiSummary
from datagen.flan import render as flan
from datagen.flan.render import ExampleSource, FlanExample, Message
from datagen.responses.sample import Pair, Response, save_responses
from datagen.self_instruct.generate import (
    SelfInstructConfig,
    summarise,
)
from datagen.store.tables import CONSTRAINED_PROMPTS, SI_INSTANCES, SI_INSTRUCTIONS, SI_TASKS
from judges.constraints.prompts import add_constraints, load_base_prompts

GOLDEN = Path(__file__).parent / "golden" / "report"
INJECTED = ('<script>window.__pwned = 1; console.error("pwned")</script>'
            '<img src=x onerror="window.__pwned = 2">')
VERBS = ("Write", "Explain", "Summarize", "List", "Describe", "Compare", "Translate", "Plan")
TOPICS = ("a poem about rain", "the water cycle", "two sorting algorithms", "a meal plan",
          "the causes of inflation", "a job interview answer", "the rules of chess")


# --- a small but real project -------------------------------------------------------------------


def self_instruct_run(db) -> str:
    config = SelfInstructConfig(num_instructions=30, model="tiny-lm", seed=7)
    run_id = config.run_id("seeds")
    store.start_run(db, run_id, "self-instruct", config.model_dump(), config.seed)
    rng = random.Random(1)
    rows = []
    for k in range(40):
        text = f"{VERBS[k % len(VERBS)]} {TOPICS[k % len(TOPICS)]} for a reader aged {k + 8}."
        score = rng.random() * 0.9
        reason = "rouge" if score > 0.7 else ("too_short" if k % 13 == 0 else None)
        rows.append({"id": f"si-{k:04d}", "run_id": run_id, "round": k // 8,
                     "prompt_index": k % 8, "item_index": 0, "model": "tiny-lm",
                     "params": config.generation_params(), "context_ids": ["seed_1"],
                     "request_key": f"key-{k}", "parent": None, "instruction": text,
                     "rouge_l": score, "nearest": "seed_1" if k < 3 else f"si-{k - 1:04d}",
                     "status": "rejected" if reason else "kept", "reason": reason})
    rows.append(rows[-1] | {"id": "si-inject", "instruction": "Describe this: " + INJECTED,
                            "rouge_l": 0.97, "status": "rejected", "reason": "rouge",
                            "nearest": "si-0001"})
    store.save_rows(db, SI_INSTRUCTIONS, rows)
    kept = [r for r in rows if r["status"] == "kept"]
    store.save_rows(db, SI_TASKS, [{"id": r["id"], "run_id": run_id, "instruction_id": r["id"],
                                 "is_classification": False, "instances": 1, "dropped": 0,
                                 "drop_reason": None, "model": "tiny-lm"} for r in kept])
    store.save_rows(db, SI_INSTANCES, [
        {"id": f"sx-{r['id']}", "run_id": run_id, "instruction_id": r["id"], "position": 0,
         "input": "", "output": f"An answer to: {r['instruction']}", "model": "tiny-lm"}
        for r in kept])
    store.finish_run(db, run_id, "complete", summarise(db, run_id, "complete").model_dump())
    return run_id


def flan_run(db, tmp: Path) -> None:
    examples = []
    for i in range(24):
        task = ("sentiment", "nli")[i % 2]
        content = f"Is this review positive? Review {i}: the soup was fine." if task == \
            "sentiment" else f"Does premise {i} entail the hypothesis?"
        core = {"messages": [Message(role="user", content=content),
                             Message(role="assistant", content="yes")],
                "task": task, "template_id": f"{task}-t{i % 3 + (i % 5 == 0)}",
                "source": ExampleSource(file=f"{task}.csv", row=i), "shots": i % 4 == 0,
                "answer": "yes"}
        examples.append(FlanExample(**core, id=f"flan-{i:03d}"))
    path = tmp / "flan.jsonl"
    path.write_text("".join(e.model_dump_json() + "\n" for e in examples))
    flan.save_run(db, path, {"inputs": ["sentiment.csv", "nli.csv"], "shots": 1}, 3,
                  {"examples": 24, "tasks": {"sentiment": 12, "nli": 12}})


def constitutional_run(db) -> None:
    run_id = "cai-test"
    store.start_run(db, run_id, "constitutional", {"rounds": 1, "model": "tiny-lm"}, 5)
    samples = [CaiSample(
        id=f"{run_id}/p{i}", run_id=run_id, prompt_id=f"p{i}", category="harm",
        prompt=[{"role": "user", "content": text}], constitution="default",
        constitution_hash="abc", model="tiny-lm", params={"temperature": 0.7},
        principle_ids=["harm"], initial="First answer.", final="Revised answer.",
        status="ok" if i else "empty") for i, text in enumerate(
            ["How do I pick a lock?", "Plan a surprise party " + INJECTED,
             "Write an insult for my coworker."])]
    constitutional.save_samples(db, samples)
    summary = CaiSummary(run_id=run_id, prompts=3, status={"ok": 2, "empty": 1},
                         degenerate={}, refusals={}, pairs=2, requests_sent=9, from_ledger=0,
                         prompt_tokens=900, completion_tokens=300, cost_usd=0.0012, seconds=2.5)
    store.finish_run(db, run_id, "done", summary.model_dump())


def responses_and_ledger(db) -> list[str]:
    prompts = add_constraints(load_base_prompts()[:6], seed=0)
    store.save_rows(db, CONSTRAINED_PROMPTS, prompts, pk="id")
    responses, pairs = [], []
    for p in prompts[:4]:
        a, b = (Response(id=f"{p.id}-{m}", prompt_id=p.id, model=m, sample_index=j,
                         temperature=0.8, max_tokens=64, text=f"Answer by {m}.",
                         finish_reason="stop", status="ok", error=None, request_key=f"k{j}")
                for j, m in enumerate(("tiny-lm", "small-lm")))
        responses += [a, b]
        pairs.append(Pair(id=f"pair-{p.id}", prompt_id=p.id, prompt=p.prompt, response_a=a.text,
                          response_b=b.text, model_a=a.model, model_b=b.model,
                          response_a_id=a.id, response_b_id=b.id))
    save_responses(db, responses, pairs)
    rows = [{"key": f"req-{i}", "path": "/v1/chat/completions", "body": "{}",
             "model": ("tiny-lm", "small-lm", "judge-lm")[i % 3]} for i in range(30)]
    store.ledger_add_pending(db, rows)
    store.ledger_finish(db, [{"key": r["key"], "status": "failed" if i == 4 else "ok",
                              "prompt_tokens": 100 + i, "completion_tokens": 20 + i,
                              "cost_usd": 0.0001 * i} for i, r in enumerate(rows[:-2])])
    return [pair.id for pair in pairs]


def label_rows(pair_ids: list[str], n: int = 40) -> list[dict]:
    """Labels as `rlaif label` writes them; the first rows label the stored pairs."""
    rng = random.Random(3)
    ids = [*pair_ids, *(f"pair-{i}" for i in range(len(pair_ids), n))]
    rows = []
    for i in range(n):
        a, b = "word " * rng.randint(5, 60), "word " * rng.randint(5, 60)
        p_a = min(max(rng.gauss(0.5 + (len(a) - len(b)) / 400, 0.2), 0.0), 1.0)
        first = "first" if p_a > 0.5 else "second"
        consistent = i % 5 != 0
        second = ("second" if first == "first" else "first") if consistent else first
        preferred = "tie" if not consistent else ("a" if p_a > 0.55 else "b" if p_a < 0.45
                                                  else "tie")
        rows.append({"id": ids[i], "prompt": f"Question {i}?" + (INJECTED if i == 0 else ""),
                     "response_a": a, "response_b": b, "preferred": preferred, "p_a": p_a,
                     "consistent": consistent,
                     "verdicts": [{"first": "a", "verdict": first},
                                  {"first": "b", "verdict": second}],
                     "judge": {"judges": ["pairwise"], "model": "judge-lm", "soft": True}})
    return rows


def user_table(db_path: Path, name: str, rows: list[dict]) -> None:
    """A table of the user's own, outside the schema (added with any SQLite client)."""
    columns = list(rows[0])
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"CREATE TABLE {name} ({', '.join(columns)})")
        conn.executemany(
            f"INSERT INTO {name} VALUES ({', '.join('?' for _ in columns)})",
            [[json.dumps(r[c]) if isinstance(r[c], dict | list) else r[c] for c in columns]
             for r in rows])


def write_runs(runs: Path) -> None:
    dpo = runs / "dpo-1"
    dpo.mkdir(parents=True)
    lines = [{"step": s, "loss": 0.69 * math.exp(-s / 20), "rewards/chosen": 0.02 * s,
              "rewards/margins": 0.03 * s, "learning_rate": 5e-6, "epoch": s / 40}
             for s in range(1, 41)]
    lines.append({"step": 40, "train_runtime": 12.5, "train_loss": 0.4})
    (dpo / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines)
                                       + '{"step": 41, "loss"')
    ppo = runs / "ppo-1"
    ppo.mkdir()
    (ppo / "metrics.jsonl").write_text("".join(json.dumps(
        {"update": u, "episodes": 8 * u, "lr": 1e-5, "score": 0.1 * u, "rlhf_reward": 0.08 * u,
         "kl": 0.01 * u * u, "policy_loss": -0.01 * u, "value_loss": 1 / u}) + "\n"
        for u in range(1, 16)))
    (ppo / "eval_winrate.json").write_text(json.dumps(
        {"win_rate": 0.62, "ci": [0.55, 0.69], "n": 200, "judge": "judge-lm"}))
    grpo = runs / "grpo-1"
    grpo.mkdir()
    (grpo / "metrics.jsonl").write_text("".join(json.dumps(
        {"step": s, "loss": 0.1, "reward/mean": 0.1 * s, "kl": 0.02 * s, "entropy": 2 - 0.1 * s,
         "length/mean": 10 + 5 * s, "truncated/share": 0.1 * s, "reward_length_corr": 0.2 * s,
         "verify/no_commas": 0.5, "alarms": ["reward-length correlation 0.80 > 0.6"] * (s == 4)})
        + "\n" for s in range(1, 5)))
    (runs / ".dpo-2.partial").mkdir()
    (runs / ".dpo-2.partial" / "metrics.jsonl").write_text('{"step": 1, "loss": 1}\n')


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("report")
    db_path = tmp / "rlaif.db"
    db = store.open_db(db_path)
    si_run = self_instruct_run(db)
    flan_run(db, tmp)
    constitutional_run(db)
    pair_ids = responses_and_ledger(db)
    labels = tmp / "labels.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in label_rows(pair_ids)))
    user_table(db_path, "labels", [r | {"consistent": None, "verdicts": r["verdicts"][:1]}
                                   for r in label_rows(pair_ids, 12)])
    write_runs(tmp / "runs")
    rm_eval = tmp / "rm_eval.json"
    rm_eval.write_text(json.dumps({"accuracy": 0.7, "count": 50, "correct": 35}))
    sft = tmp / "sft.jsonl"
    export_sft(sft, source="self-instruct", db=db_path, test_size=0.25, seed=0)
    preference = tmp / "preference.jsonl"
    export_preference(preference, labels=labels)
    flan_dir = tmp / "flan_sft"
    export_sft(flan_dir, source="flan", db=db_path, test_size=0.25)  # a dataset directory
    out = tmp / "report.html"
    out.write_text("old report")
    result = CliRunner().invoke(report, [
        "--db", str(db_path), "-o", str(out), "--runs-dir", str(tmp / "runs"),
        "--labels", str(labels), "--eval", str(rm_eval), "--dataset", str(sft),
        "--dataset", str(preference), "--dataset", str(flan_dir)])
    assert result.exit_code == 0, result.output
    return {"tmp": tmp, "db": db_path, "report": out, "si_run": tmp / si_run, "labels": labels,
            "output": result.output}


@pytest.fixture(scope="module")
def browser():
    with Chromium() as chromium:
        yield chromium


def non_white_share(png: bytes) -> float:
    counts = Image.open(io.BytesIO(png)).convert("L").histogram()
    return sum(counts[:235]) / sum(counts)


# --- the page in a browser ------------------------------------------------------------------------


def test_report_renders_every_chart_without_errors(project, browser):
    page = browser.open(project["report"].as_uri())
    images = page.eval("[...document.images].map(i => [i.alt, i.complete, i.naturalWidth])")
    assert len(images) >= 12, images
    assert [i for i in images if not (i[1] and i[2] > 0)] == []
    assert page.console_errors == []
    assert [u for u in page.requests if not u.startswith("data:")] == [
        project["report"].as_uri()], "the page must not load anything but itself"
    titles = page.eval("[...document.querySelectorAll('section h2')].map(h => h.textContent)")
    assert titles == ["Stages", "Runs", "Tokens and cost", "Instructions", "ROUGE-L novelty",
                      "FLAN templates", "Judge labels", "Training curves", "Evaluation",
                      "Dataset cards"]
    shot = page.screenshot(project["tmp"] / "report.png")
    assert non_white_share(shot) > 0.05, "the page looks blank"
    text = page.eval("document.body.innerText")
    assert "win_rate" in text and "0.62" in text and "0.55" in text  # stored interval
    assert "dpo-1" in text and "ppo-1" in text and ".dpo-2" not in text  # temp dir skipped
    assert "1 unreadable line(s) skipped." in text
    assert "Labels from table labels" in text and "Labels from " + str(project["labels"]) in text
    page.close()


def test_stored_markup_is_shown_as_text_and_never_runs(project, browser):
    page = browser.open(project["report"].as_uri())
    assert page.eval("document.scripts.length") == 0
    assert page.eval("window.__pwned === undefined")
    text = page.eval("document.body.innerText")
    assert text.count('<script>window.__pwned = 1; console.error("pwned")</script>') >= 2
    assert '<img src=x onerror="window.__pwned = 2">' in text
    assert page.console_errors == []
    page.close()


def test_empty_database_gives_notes_not_broken_images(tmp_path, browser):
    db = tmp_path / "empty.db"
    store.open_db(db)
    out = tmp_path / "empty.html"
    result = CliRunner().invoke(report, ["--db", str(db), "-o", str(out)])
    assert result.exit_code == 0, result.output
    page = browser.open(out.as_uri())
    assert page.eval("document.images.length") == 0
    notes = page.eval("[...document.querySelectorAll('aside.omitted li')].map(l => l.innerText)")
    assert "Tokens and cost: the request ledger is empty." in notes
    assert "Training curves: no --runs-dir given." in notes
    assert len(notes) == 10
    assert page.console_errors == []
    page.close()


# --- files, cards and figures ---------------------------------------------------------------


def test_report_replaces_the_old_file_and_writes_cards(project):
    tmp = project["tmp"]
    assert project["report"].read_text().startswith("<!DOCTYPE html>")
    assert not [p for p in tmp.iterdir() if p.name.endswith(".tmp")]
    assert "-> " + str(tmp / "sft.card.md") in project["output"]
    card = (tmp / "sft.card.md").read_text()
    run_id = project["si_run"].name
    assert "- Kind: SFT conversations (messages)" in card
    kept = store.count_rows(store.open_db(project["db"]), SI_INSTRUCTIONS, status="kept")
    test = round(0.25 * kept)
    assert f"- Rows: train `{kept - test}`, test `{test}` (total `{kept}`)" in card
    assert f"| `messages` | `list of {{content, role}}` | {kept} | `2 items;" in card
    assert f"### Run `{run_id}`" in card
    assert "seed `7`" in card and "- Models: `tiny-lm`" in card
    assert "`threshold` = `0.7`" in card
    reasons = Counter(r["reason"] for r in store.load_rows(store.open_db(project["db"]),
                                                           SI_INSTRUCTIONS) if r["reason"])
    assert "`rejected` `" + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) in card
    assert "- Dropped per reason: `failed_parses` `0`" in card
    assert f"`si_instances` {kept} of {kept}" in card
    assert "`max_tokens` = `1024`" in card
    preference = (tmp / "preference.card.md").read_text()
    assert "- Kind: preference pairs" in preference and "| `margin` | `number` |" in preference
    exported = [json.loads(line)["id"] for line in (tmp / "preference.jsonl").open()]
    stored = sum(i.startswith("pair-cp-") for i in exported)
    assert 0 < stored < len(exported)
    assert f"`pairs` {stored} of {len(exported)}, `labels` " in preference
    assert f"`small-lm` ({stored} rows)" in preference
    flan_card = (tmp / "flan_sft.card.md").read_text()
    assert "- Format: Hugging Face dataset (save_to_disk)" in flan_card
    assert "- Rows: train `18`, test `6` (total `24`)" in flan_card
    assert "`flan_examples` 24 of 24" in flan_card and "seed `3`" in flan_card
    assert "`tasks` `nli 12, sentiment 12`" in flan_card


def test_report_figures(project):
    page = project["report"].read_text()
    assert "Candidates closest to the pool" in page
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert "judge-lm" in page  # ledger model and the labels file's judge
    assert "Wilson, computed here" in page  # the RM eval had a count but no interval


def test_user_errors_write_nothing(tmp_path):
    out = tmp_path / "r.html"
    cases = [["--db", str(tmp_path / "missing.db")],
             ["--runs-dir", str(tmp_path / "nope")],
             ["--eval", str(tmp_path / "nope.json")]]
    bad_eval = tmp_path / "bad.json"
    bad_eval.write_text('{"loss": 3}')
    cases.append(["--eval", str(bad_eval)])
    for args in cases:
        result = CliRunner().invoke(report, ["-o", str(out), *args])
        assert result.exit_code == 2, (args, result.output)
        assert not out.exists()
    assert "no win_rate" in result.output


def test_helpers():
    assert verb_noun("Please write a short poem about rain.") == ("write", "poem")
    assert verb_noun("List three uses of copper") == ("list", "uses")
    low, high = wilson(62, 100)
    assert (round(low, 3), round(high, 3)) == (0.522, 0.709)
    assert wilson(0, 0) is None


def test_eval_interval_forms(tmp_path):
    path = tmp_path / "eval.json"
    for data, expected in [({"win_rate": 0.6, "win_rate_ci": [0.5, 0.7]}, (0.5, 0.7)),
                           ({"satisfaction_rate": 0.8, "ci_low": 0.7, "ci_high": 0.9}, (0.7, 0.9)),
                           ({"win_rate": 0.6, "interval": {"low": 0.4, "high": 0.8}}, (0.4, 0.8)),
                           ({"win_rate": 0.5}, (None, None))]:
        path.write_text(json.dumps(data))
        [found] = eval_results(path, strict=True)
        assert (found["low"], found["high"]) == expected


def test_page_template_golden():
    sections = [Section("a", "First <section>", "<p>body one</p>"),
                Section("b", "Second", "<p>body two</p>"),
                Section("c", "Left out", note="no data & nothing to show.")]
    text = render_page("Report <title>", "Generated 2024-01-01 00:00 UTC.", sections)
    assert_golden(GOLDEN / "page.html", text)


def test_report_plots_the_reward_hacking_watch_and_lists_alarms(project):
    page = project["report"].read_text()
    assert ("Reward-hacking watch: length, truncation, reward-length correlation, entropy: "
            "runs/grpo-1") in page
    assert "Constraint satisfaction per kind: runs/grpo-1" in page
    assert "1 reward-hacking alarm(s)" in page and "reward-length correlation 0.80" in page


def test_report_with_only_db_finds_recorded_labels_and_training_outputs(tmp_path, fake_llm):
    # issue 17: `rlaif report --db X` left out labels and curves unless --labels/--runs-dir
    from align.cli import main
    from datagen.store.tables import PIPELINE_STAGES

    db = tmp_path / "run.db"
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"p{i}", "response_a": "a",
                                         "response_b": "bb"}) + "\n" for i in range(3)))
    labelled = CliRunner().invoke(main, [
        "label", "--input", str(pairs), "-o", str(tmp_path / "labels.jsonl"), "--db", str(db),
        "--base-url", fake_llm.base_url, "--model", "m", "--orders", "first"])
    assert labelled.exit_code == 0, labelled.output
    trained = tmp_path / "runs" / "dpo"
    trained.mkdir(parents=True)
    (trained / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "loss": 1 / s}) + "\n" for s in (1, 2, 3)))
    store.save_rows(store.open_db(db), PIPELINE_STAGES, [{
        "id": "k:7", "pipeline": "p", "stage_key": "k", "stage_index": 7, "stage": "train dpo",
        "name": "train dpo", "argv": ["python", "-m", "align.cli", "train", "dpo", "--data",
                                      "x", "-o", str(trained)], "status": "done"}])
    out = tmp_path / "report.html"
    result = CliRunner().invoke(report, ["--db", str(db), "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "Labels from " + str(tmp_path / "labels.jsonl") in text
    assert "no --runs-dir given" not in text and "dpo" in text
