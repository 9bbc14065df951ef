"""`rlaif run PIPELINE.yaml`: checks before running, stages in order, resume after SIGKILL, --from.

Pipelines here use only fast stages against the scripted loopback server; the runner itself is
started as a real process (``python -m align.cli run``) so it can be killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from align.cli import main
from align.eval.heldout import rate
from align.pipeline.file import load_plan
from datagen import store
from datagen.endpoint.keys import canonical_json

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [{"id": f"q{i}", "prompt": f"Name {i} colours.", "constraints": [{"kind": "no_commas"}]}
           for i in range(1, 6)]
BASE = [{"id": f"b{i}", "prompt": f"Describe object number {i}."} for i in range(1, 4)]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def pipeline(tmp_path: Path, base_url: str) -> Path:
    """A five-stage pipeline: constrained prompts, responses (fake server), verifier labels,
    pairs export, judge report."""
    write_jsonl(tmp_path / "base.jsonl", BASE)
    write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    return write(tmp_path / "mini.yaml", f"""\
name: mini
output: out
seed: 0
stages:
  - stage: generate constrained
    options: {{prompts: "${{pipeline_dir}}/base.jsonl", output: constrained.jsonl}}
  - stage: generate responses
    options:
      prompts: "${{pipeline_dir}}/prompts.jsonl"
      n: 2
      max-tokens: 8
      concurrency: 1
      base-url: {base_url}
  - stage: label
    options: {{judge: verify, output: labels.jsonl}}
  - stage: export pairs
    options: {{output: pairs.jsonl}}
  - stage: judge-report
    options: {{reference: verify}}
    args: [labels.jsonl]
""")


@pytest.mark.parametrize(("stage", "expected"), [
    ("  - stage: generate bogus\n",
     "mini.yaml:3: stages[0].stage: no such command 'generate bogus'"),
    ("  - stage: generate responses\n    options: {prompts: p.jsonl, temprature: 0.5}\n",
     "mini.yaml:4: stages[0].options.temprature: no such option for 'generate responses' "
     "(did you mean temperature?)"),
    ("  - stage: generate responses\n    options: {prompts: missing.jsonl}\n",
     "mini.yaml:4: stages[0].options.prompts: no such file: "),
    ("  - stage: generate responses\n    options:\n      prompts: p.jsonl\n      n: 1\n",
     "mini.yaml:6: stages[0].options.n: invalid value for option --n: 1 is not in the range"),
    ("  - stage: train dpo\n    options: {output: dpo}\n",
     "mini.yaml:3: stages[0]: 'train dpo' needs option --data"),
    ("  - stage: serve\n", "mini.yaml:3: stages[0].stage: 'serve' cannot be a stage"),
    ("  - stage: judge-report\n    args: [labels.jsonl, extra.jsonl]\n",
     "mini.yaml:4: stages[0].args: 'judge-report' takes 1 positional arguments"),
])
def test_mistakes_name_the_yaml_key_and_exit_2(tmp_path, monkeypatch, stage, expected):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "p.jsonl", json.dumps(PROMPTS[0]) + "\n")
    write(tmp_path / "mini.yaml", f"output: {tmp_path}\nstages:\n{stage}")
    result = invoke("run", "mini.yaml")
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "rlaif.db").exists()


@pytest.mark.parametrize(("top", "expected"), [
    ("executor: spark\n", "mini.yaml:2: executor: expected one of local, ray, got 'spark'"),
    ("ray_address: auto\n", "mini.yaml:2: ray_address: needs executor: ray"),
])
def test_bad_executor_settings_name_their_key(tmp_path, monkeypatch, top, expected):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "mini.yaml", f"output: {tmp_path}\n{top}stages:\n  - stage: judge-report\n"
          "    args: [mini.yaml]\n")
    result = invoke("run", "mini.yaml")
    assert result.exit_code == 2 and expected in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


def test_top_level_executor_reaches_only_stages_that_take_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "pairs.jsonl", json.dumps({"prompt": "Hi.", "response_a": "a",
                                                "response_b": "b"}) + "\n")
    write(tmp_path / "mini.yaml", f"output: {tmp_path}\nexecutor: ray\nray_address: auto\n"
          "stages:\n  - stage: label\n    options: {input: pairs.jsonl, judge: verify, "
          "output: labels.jsonl, endpoint-per-node: 'http://h:$${PORT}/v1'}\n"
          "  - stage: label\n    options: {input: pairs.jsonl, "
          "judge: verify, output: l2.jsonl, executor: local}\n"
          "  - stage: judge-report\n    args: [labels.jsonl]\n")
    result = invoke("run", "mini.yaml", "--dry-run")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("[")]
    assert "--executor ray --ray-address auto" in lines[0]
    assert "http://h:${PORT}/v1" in lines[0]  # $${X}: a literal ${X}, filled on each node
    assert "--executor local" in lines[1] and "--ray-address" not in lines[1]
    assert "--executor" not in lines[2]


def test_checks_cover_every_stage_before_anything_runs(tmp_path, fake_llm, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = pipeline(tmp_path, fake_llm.base_url).read_text()
    write(tmp_path / "mini.yaml", text.replace("args: [labels.jsonl]", "args: [lables.jsonl]"))
    result = invoke("run", str(tmp_path / "mini.yaml"))
    assert result.exit_code == 2
    assert "stages[4].args[0]: no such file" in result.output
    assert "no earlier stage writes it" in result.output
    assert not (tmp_path / "out").exists() and not fake_llm.requests


def test_dry_run_resolves_paths_and_defaults(tmp_path, fake_llm, monkeypatch):
    monkeypatch.chdir(tmp_path)  # output: is relative to the current folder
    path = pipeline(tmp_path, fake_llm.base_url)
    result = invoke("run", str(path), "--dry-run")
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    lines = result.output.splitlines()
    assert lines[0].startswith("pipeline mini: 5 stages")
    assert f"rlaif generate constrained --prompts {tmp_path}/base.jsonl --output " \
           f"{out}/constrained.jsonl --seed 0" in lines[1]
    assert f"--db {out}/rlaif.db" in lines[2] and "pending" in lines[2]
    assert lines[5].endswith(f"judge-report --reference verify {out}/labels.jsonl")
    assert not out.exists() and not fake_llm.requests
    plan = load_plan(path)
    assert [s.key for s in plan.stages] == [s.key for s in load_plan(path).stages]


def ledger_bodies(db_path: Path, status: str | None = None) -> Counter:
    db = store.open_db(db_path)
    rows = store.load_rows(db, "requests")
    return Counter(canonical_json(json.loads(r["body"])) for r in rows
                   if status is None or r["status"] == status)


def records(db_path: Path) -> dict[int, dict]:
    return {r["stage_index"]: r for r in store.load_rows(store.open_db(db_path),
                                                          "pipeline_stages")}


def wait_for(check, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not check():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def run_runner(path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "align.cli", "run", str(path), *args],
                          cwd=path.parent, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


@pytest.mark.slow
def test_sigkill_mid_stage_then_rerun_resumes_without_repeats_and_from_reruns(tmp_path,
                                                                               fake_llm):
    counter = iter(range(10**6))
    fake_llm.responder = lambda path, body: {"text": f"answer {next(counter)}", "delay": 0.3}
    path = pipeline(tmp_path, fake_llm.base_url)
    db_path = tmp_path / "out" / "rlaif.db"
    with (tmp_path / "first.log").open("w") as log:
        runner = subprocess.Popen(
            [sys.executable, "-m", "align.cli", "run", str(path)], cwd=tmp_path,
            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        try:
            wait_for(lambda: sum(r["answered_at"] is not None for r in fake_llm.requests) >= 3)
        finally:
            os.kill(runner.pid, signal.SIGKILL)
            runner.wait()
    stage_pid = records(db_path)[1]["pid"]
    wait_for(lambda: gone(stage_pid), timeout=15)  # the stage died with the runner
    sent_before = len(fake_llm.requests)
    time.sleep(0.5)
    assert len(fake_llm.requests) == sent_before
    before = records(db_path)
    assert before[0]["status"] == "done" and before[1]["status"] == "running"
    assert 2 not in before
    ok_before = ledger_bodies(db_path, "ok")
    assert 0 < sum(ok_before.values()) < 2 * len(PROMPTS)

    second = run_runner(path)
    assert second.returncode == 0, second.stderr
    assert "[1/5] generate constrained: done earlier, skipped" in second.stderr
    assert "[2/5] generate responses: resuming an unfinished run" in second.stderr
    after = records(db_path)
    assert after[0]["started_at"] == before[0]["started_at"]  # not repeated
    assert all(after[i]["status"] == "done" for i in range(5))
    assert json.loads(after[1]["argv"])[:5] == [sys.executable, "-m", "align.cli", "generate",
                                                "responses"]
    # Every request answered before the kill came from the ledger; only the others were sent.
    sent_after = Counter(canonical_json(r["body"]) for r in fake_llm.requests[sent_before:])
    total = ledger_bodies(db_path, "ok")
    assert sum(total.values()) == 2 * len(PROMPTS)
    assert sent_after == total - ok_before
    assert len((tmp_path / "out" / "pairs.jsonl").read_text().splitlines()) == len(PROMPTS)
    assert "output:   " in second.stdout and "pairs.jsonl" in second.stdout

    third = run_runner(path, "--from", "label")
    assert third.returncode == 0, third.stderr
    assert "[2/5] generate responses: done earlier, skipped" in third.stderr
    rerun = records(db_path)
    assert rerun[1]["finished_at"] == after[1]["finished_at"]
    assert all(rerun[i]["started_at"] > after[i]["finished_at"] for i in (2, 3, 4))
    assert len(fake_llm.requests) == sent_before + sum(sent_after.values())

    fourth = run_runner(path)
    assert fourth.returncode == 0
    assert fourth.stderr.count("done earlier, skipped") == 5


def test_from_names_a_stage_by_number_name_or_command(tmp_path, fake_llm, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = load_plan(pipeline(tmp_path, fake_llm.base_url))
    assert plan.find("3") == 2 and plan.find("export pairs") == 3
    result = invoke("run", str(tmp_path / "mini.yaml"), "--from", "train dpo", "--dry-run")
    assert result.exit_code == 2 and "--from train dpo: no such stage" in result.output


def test_vars_profiles_and_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "base.jsonl", BASE)
    path = write(tmp_path / "v.yaml", """\
output: out
vars: {limit: 3, spread: 1-2}
profiles: {quick: {limit: 1}}
stages:
  - stage: generate constrained
    options: {prompts: "${pipeline_dir}/base.jsonl", limit: "${limit}",
              constraints: "${spread}", output: "c-${limit}.jsonl"}
""")
    assert "--limit 3" in " ".join(load_plan(path).stages[0].argv)
    quick = load_plan(path, profile="quick").stages[0].argv
    assert "--limit 1" in " ".join(quick) and quick[-1].endswith("c-1.jsonl")
    result = invoke("run", str(path), "--set", "limit=2", "--set", "spread=2", "--dry-run")
    assert "--limit 2 --constraints 2" in result.output
    result = invoke("run", str(path), "--profile", "slow", "--dry-run")
    assert result.exit_code == 2 and "no such profile" in result.output
    write(path, path.read_text().replace("${spread}", "${sprad}"))
    result = invoke("run", str(path), "--dry-run")
    assert result.exit_code == 2
    assert "stages[0].options.constraints: unknown variable ${sprad}" in result.output


def test_builtin_demo_pipeline_checks(tmp_path):
    result = invoke("demo", "--quick", "--dry-run", "--output", str(tmp_path / "demo"))
    assert result.exit_code == 0, result.output
    assert "pipeline demo: 18 stages" in result.output
    assert "rlaif train dpo --data " in result.output and "--max-steps 1 " in result.output
    assert "rlaif eval constraints --prompts " in result.output
    assert not (tmp_path / "demo").exists()


def test_demo_prints_only_its_reports_not_the_database(tmp_path):
    from align.pipeline.cli import constraint_reports, demo_path, ifeval_outputs

    plan = load_plan(demo_path(), output=tmp_path / "demo", profile="quick")
    assert ifeval_outputs(plan) == {} and constraint_reports(plan) == []
    out = tmp_path / "demo"
    out.mkdir()
    store.open_db(out / "rlaif.db").close()  # every eval stage also names the database
    for name in ("eval_constraints.json", "ifeval_default.jsonl", "ifeval_grpo.jsonl"):
        (out / name).write_text("{}\n")
    assert constraint_reports(plan) == [out / "eval_constraints.json"]
    assert ifeval_outputs(plan) == {"default": out / "ifeval_default.jsonl",
                                    "grpo": out / "ifeval_grpo.jsonl"}


def answers_in_ledger(db_path: Path, model_dir: Path) -> dict[str, str]:
    """{request body: response} of the ledger rows of one served model directory."""
    rows = store.load_rows(store.open_db(db_path), "requests")
    return {r["body"]: json.loads(r["response"])["choices"][0]["message"]["content"]
            for r in rows if json.loads(r["body"])["model"].startswith(model_dir.name + "-")}


@pytest.mark.slow  # serves each policy with `rlaif serve`
def test_eval_constraints_on_tiny_policies(tmp_path):
    from align_models import build_policy, build_tokenizer

    tokenizer = build_tokenizer()
    first = build_policy(tokenizer, tmp_path / "start")
    second = build_policy(tokenizer, tmp_path / "trained", seed=1)
    prompts = write_jsonl(tmp_path / "heldout.jsonl", [
        {"id": "h1", "prompt": "Describe a cat.", "constraints": [{"kind": "no_commas"}]},
        {"id": "h2", "prompt": "Name a tree.",
         "constraints": [{"kind": "word_count", "min": 1, "max": 400}, {"kind": "no_digits"}]},
    ])
    out = tmp_path / "eval.json"
    result = invoke("eval", "constraints", "--prompts", str(prompts), "--model", str(first),
                    "--model", str(second), "--max-tokens", "6", "--samples", "2",
                    "--db", str(tmp_path / "r.db"), "-o", str(out))
    assert result.exit_code == 0, result.output
    # Every answer went through the ledger: 2 prompts x 2 samples (seeds 0 and 1) per policy.
    asked = answers_in_ledger(tmp_path / "r.db", first)
    assert len(asked) == 4 and len(answers_in_ledger(tmp_path / "r.db", second)) == 4
    assert sorted(json.loads(body)["seed"] for body in asked) == [0, 0, 1, 1]
    report = json.loads(out.read_text())
    start, trained = report["models"][str(first)], report["models"][str(second)]
    assert start["n"] == trained["n"] == 4 and report["samples"] == 2
    assert sorted(start["by_kind"]) == ["no_commas", "no_digits", "word_count"]
    assert start["constraints"]["n"] == 6
    low, high = start["ci95"]
    assert low <= start["rate"] <= high
    assert "vs_baseline" not in start
    diff = trained["vs_baseline"]
    assert diff["diff"] == trained["rate"] - start["rate"]
    assert diff["ci95"][0] <= diff["diff"] <= diff["ci95"][1]
    assert report["start_satisfaction_rate"] == start["rate"]  # as `rlaif report` reads it
    assert "held-out constraint satisfaction: 4 answers per model" in result.output
    # Seeded: a fresh ledger samples the baseline again and gets the same answers.
    again = invoke("eval", "constraints", "--prompts", str(prompts), "--model", str(first),
                   "--max-tokens", "6", "--samples", "2", "--db", str(tmp_path / "fresh.db"),
                   "--json")
    assert again.exit_code == 0, again.output
    assert answers_in_ledger(tmp_path / "fresh.db", first) == asked
    assert json.loads(again.stdout)["models"][str(first)]["per_item"] == start["per_item"]
    result = invoke("eval", "constraints", "--prompts", str(prompts), "--model", str(first),
                    "--model", str(first))
    assert result.exit_code == 2 and "each policy once" in result.output
    bare = write_jsonl(tmp_path / "bare.jsonl", [{"id": "b", "prompt": "Hi."}])
    result = invoke("eval", "constraints", "--prompts", str(bare), "--model", str(first))
    assert result.exit_code == 2 and "prompt 'b' has no constraints" in result.output


def test_satisfaction_rate_has_a_wilson_interval():
    low, high = rate(8, 10)["ci95"]
    assert round(low, 3) == 0.490 and round(high, 3) == 0.943
    assert rate(0, 0)["ci95"] == [0.0, 1.0]
