"""`rlaif eval winrate` (issue 8 part 4): policy against reference, judged, with intervals."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from fake_openai import FakeOpenAI
from tiny_models import tiny_model_dir  # noqa: F401  (a session fixture)

from align.cli import main
from align.eval.intervals import wilson
from align.report.data import eval_results

PROMPTS = [{"id": "p1", "prompt": "Why is the sky blue?"},
           {"id": "p2", "prompt": [{"role": "user", "content": "Name a fruit."}]},
           {"id": "p3", "prompt": "Say hello."}]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def last_user(body: dict) -> str:
    return body["messages"][-1]["content"]


def shown(body: dict) -> tuple[str, str]:
    user = body["messages"][1]["content"]
    return tuple(re.search(rf"<response_{x}>\n(.*?)\n</response_{x}>", user, re.S).group(1)
                 for x in "AB")


def by_model(judge):
    """Answer as the policy ("pol"), the reference ("ref") or, for any other model, the judge."""
    def answer(path: str, body: dict) -> dict:
        if body["model"] == "pol":
            return {"text": "POLICY answers at length: " + last_user(body)}
        if body["model"] == "ref":
            return {"text": "ref: " + last_user(body)}
        return judge(body)
    return answer


def prefer_policy(body: dict) -> dict:
    first, _ = shown(body)
    return {"text": "A" if first.startswith("POLICY") else "B"}


def run_winrate(tmp_path: Path, fake: FakeOpenAI, prompts: list[dict], *args: str):
    path = write_jsonl(tmp_path / "prompts.jsonl", prompts)
    out = tmp_path / "winrate.json"
    result = CliRunner().invoke(main, [
        "eval", "winrate", "--policy", fake.base_url, "--policy-model", "pol",
        "--reference", fake.base_url, "--reference-model", "ref", "--prompts", str(path),
        "--db", str(tmp_path / "r.db"), "-o", str(out), "--max-tokens", "32", "--seed", "7",
        *args])
    data = json.loads(out.read_text()) if out.exists() else None
    return result, data


def test_judge_preferring_policy_gives_win_rate_one(tmp_path, fake_llm):
    fake_llm.responder = by_model(prefer_policy)
    result, data = run_winrate(tmp_path, fake_llm, PROMPTS, "--judge-base-url",
                               fake_llm.base_url, "--judge-model", "judge")
    assert result.exit_code == 0, result.output
    assert (data["win_rate"], data["n"], data["wins"], data["losses"], data["ties"],
            data["errors"]) == (1.0, 3, 3, 0, 0, 0)
    assert data["ci"] == pytest.approx(list(wilson(3, 3)))
    assert data["ci"][0] < 0.6 and data["ci"][1] == 1.0
    assert data["length_controlled_win_rate"] == 1.0
    assert (data["policy"]["model"], data["reference"]["model"]) == ("pol", "ref")
    assert data["judge"]["judges"] == ["pairwise"] and data["satisfaction_rate"] is None
    assert "win rate (ties half)" in result.output and "1.000" in result.output

    gen = [b for b in fake_llm.bodies() if b["model"] in ("pol", "ref")]
    assert sorted(b["model"] for b in gen) == ["pol"] * 3 + ["ref"] * 3
    assert {(b["temperature"], b["max_tokens"], b["seed"]) for b in gen} == {(0.7, 32, 7)}
    judged = [b for b in fake_llm.bodies() if b["model"] == "judge"]
    assert len(judged) == 6  # both orders of each pair

    pairs = [json.loads(line) for line in (tmp_path / "winrate.pairs.jsonl").read_text()
             .splitlines()]
    assert [p["id"] for p in pairs] == ["p1", "p2", "p3"]
    assert all(p["preferred"] == "a" and p["response_a"].startswith("POLICY") for p in pairs)
    report = CliRunner().invoke(main, ["judge-report", str(tmp_path / "winrate.pairs.jsonl")])
    assert report.exit_code == 0 and "a 3, b 0" in report.output
    (found,) = [r for r in eval_results(tmp_path / "winrate.json", strict=True)
                if r["metric"] == "win_rate"]
    assert (found["value"], found["low"]) == (1.0, data["ci"][0])

    sent = len(fake_llm.requests)  # a rerun answers everything from the ledger
    again, same = run_winrate(tmp_path, fake_llm, PROMPTS, "--judge-base-url",
                              fake_llm.base_url, "--judge-model", "judge")
    assert again.exit_code == 0 and len(fake_llm.requests) == sent and same == data


def test_position_biased_judge_gives_ties(tmp_path, fake_llm):
    fake_llm.responder = by_model(lambda body: {"text": "A"})
    result, data = run_winrate(tmp_path, fake_llm, PROMPTS, "--judge-base-url",
                               fake_llm.base_url, "--judge-model", "judge", "--n-prompts", "2")
    assert result.exit_code == 0, result.output
    assert (data["win_rate"], data["n"], data["ties"], data["wins"]) == (0.5, 2, 2, 0)
    assert data["length_controlled_win_rate"] == 0.5
    assert data["ci"] == pytest.approx(list(wilson(1, 2)))


CONSTRAINED = [
    {"id": "c1", "prompt": "Describe rain.", "constraints": [{"kind": "no_commas"}]},
    {"id": "c2", "prompt": "Greet me.", "constraints": [{"kind": "all_lowercase"}]},
    {"id": "c3", "prompt": "Ask me something.", "constraints": [{"kind": "ends_with_question"}]},
    {"id": "c4", "prompt": "Ask about my day.",
     "constraints": [{"kind": "no_commas"}, {"kind": "ends_with_question"}]},
]
ANSWERS = {  # prompt: (policy, reference)
    "Describe rain.": ("rain falls from clouds", "rain, wet, cold"),  # policy meets it: win
    "Greet me.": ("Hello there", "hello there"),  # reference meets it: loss
    "Ask me something.": ("why?", "is it?"),  # both meet it: tie
    "Ask about my day.": ("ok, how was it?", "how was it?"),  # policy meets 1 of 2: loss
}


def constrained_answer(path: str, body: dict) -> dict:
    policy, reference = ANSWERS[last_user(body)]
    return {"text": policy if body["model"] == "pol" else reference}


def test_verify_judge_rates_constraint_satisfaction(tmp_path, fake_llm):
    fake_llm.responder = constrained_answer
    result, data = run_winrate(tmp_path, fake_llm, CONSTRAINED, "--judge", "verify")
    assert result.exit_code == 0, result.output
    assert (data["wins"], data["losses"], data["ties"], data["n"]) == (1, 2, 1, 4)
    assert data["win_rate"] == (1 + 0.5) / 4
    assert data["ci"] == pytest.approx(list(wilson(1.5, 4)))
    assert data["satisfaction_rate"] == {"policy": 0.5, "reference": 0.75}
    assert data["satisfaction_ci"]["policy"] == pytest.approx(list(wilson(2, 4)))
    assert data["satisfaction_ci"]["reference"] == pytest.approx(list(wilson(3, 4)))
    assert data["policy_satisfaction_rate"] == 0.5
    assert len(fake_llm.requests) == 8  # answers only: the verifier calls no model
    assert "constraints met: reference" in result.output


def test_failed_request_is_an_error_not_a_loss(tmp_path, fake_llm):
    def answer(path, body):
        if body["model"] == "ref" and last_user(body) == "Say hello.":
            return {"status": 400, "error": "bad request"}
        return by_model(prefer_policy)(path, body)

    fake_llm.responder = answer
    result, data = run_winrate(tmp_path, fake_llm, PROMPTS, "--judge-base-url",
                               fake_llm.base_url, "--judge-model", "judge")
    assert result.exit_code == 1
    assert (data["errors"], data["n"], data["wins"], data["win_rate"]) == (1, 2, 2, 1.0)
    last = json.loads((tmp_path / "winrate.pairs.jsonl").read_text().splitlines()[-1])
    assert last["preferred"] == "error" and "reference request failed" in last["reason"]


def test_two_models_with_one_name_do_not_share_answers(tmp_path):
    with FakeOpenAI(lambda p, b: {"text": "new: " + last_user(b)}) as new, \
            FakeOpenAI(lambda p, b: {"text": "old: " + last_user(b)}) as old:
        path = write_jsonl(tmp_path / "prompts.jsonl", CONSTRAINED[:1])
        out = tmp_path / "w.json"
        result = CliRunner().invoke(main, [
            "eval", "winrate", "--policy", new.base_url, "--policy-model", "final",
            "--reference", old.base_url, "--reference-model", "final", "--prompts", str(path),
            "--db", str(tmp_path / "r.db"), "-o", str(out), "--judge", "verify"])
        assert result.exit_code == 0, result.output
        (pair,) = [json.loads(x) for x in (tmp_path / "w.pairs.jsonl").read_text().splitlines()]
        assert (pair["response_a"], pair["response_b"]) == ("new: Describe rain.",
                                                            "old: Describe rain.")


@pytest.mark.parametrize("extra, message", [
    (["--prompts", "missing.jsonl"], "cannot read"),
    (["--judge", "oracle"], "unknown judge"),
    (["--reference-model", ""], "--reference-model: required"),
    (["--judge", "verify"], "needs prompts with constraints"),
])
def test_bad_input_exits_2_before_any_request(tmp_path, fake_llm, extra, message):
    path = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    result = CliRunner().invoke(main, [
        "eval", "winrate", "--policy", fake_llm.base_url, "--policy-model", "pol",
        "--reference", fake_llm.base_url, "--reference-model", "ref", "--prompts", str(path),
        "--db", str(tmp_path / "r.db"), "-o", str(tmp_path / "w.json"), *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert fake_llm.requests == [] and not (tmp_path / "w.json").exists()


def test_missing_model_directory_exits_2(tmp_path):
    path = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    result = CliRunner().invoke(main, [
        "eval", "winrate", "--policy", str(tmp_path / "nope"), "--reference", "default",
        "--prompts", str(path), "--db", str(tmp_path / "r.db")])
    assert result.exit_code == 2 and "not a model directory" in result.output


@pytest.mark.slow
def test_same_local_model_on_both_sides_ties(tmp_path, tiny_model_dir):  # noqa: F811
    path = write_jsonl(tmp_path / "prompts.jsonl", CONSTRAINED[:2])
    out = tmp_path / "w.json"
    result = CliRunner().invoke(main, [
        "eval", "winrate", "--policy", str(tiny_model_dir), "--reference", str(tiny_model_dir),
        "--prompts", str(path), "--judge", "verify", "--max-tokens", "8",
        "--db", str(tmp_path / "r.db"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert (data["win_rate"], data["ties"], data["n"]) == (0.5, 2, 2)
    assert data["policy"]["model"] == data["reference"]["model"]
    assert data["policy"]["model"].startswith(tiny_model_dir.name + "-")
    rates = data["satisfaction_rate"]
    assert rates["policy"] == rates["reference"] and data["satisfaction_n"]["policy"] == 2


def test_judge_options_are_those_of_label_less_orders_seed_and_db():
    from align.eval.cli import eval_winrate
    from judges.cli import label

    def judging(command) -> dict[str, str | None]:
        return {p.name: p.help for p in command.params
                if p.name not in ("input_path", "output", "on_bad_row")}

    ours, theirs = judging(eval_winrate), judging(label)
    shared = set(ours) & set(theirs)
    assert {"judges", "judge_base_url", "judge_model", "rubrics", "soft", "cot",
            "tie_margin", "base_url", "concurrency"} <= shared
    assert "orders" in theirs and "orders" not in ours
    assert all(ours[name] == theirs[name] for name in shared - {"seed", "db"})
