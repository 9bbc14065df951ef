"""`rlaif train grpo|rloo|online-dpo` and the reward-hacking watch, on tiny models built here.

The policy is the toy Llama of tests/align_models.py with its end-of-reply token made likely
(every embedding shares one coordinate and the end token's is larger), so replies end at
varied lengths within 16 tokens and length statistics mean something. The judge is the
scripted loopback server (tests/fake_openai.py): it scores replies 1-9 by a hash of the
request and picks A or B the same way, so some pairs come out consistent and some not.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from align_models import build_policy, build_reward_model, build_tokenizer
from click.testing import CliRunner
from fake_openai import FakeOpenAI
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from align.cli import main
from align.export.datasets import export_prompts
from align.rl.prompts import load_rl_prompts
from align.rl.rewards import RewardSpec, parse_reward, verify_rewards
from align.rl.watch import RewardWatch, Thresholds, alarms, pearson
from datagen import store
from datagen.errors import UserInputError

REPO = Path(__file__).resolve().parents[1]
CONSTRAINTS = [
    [{"kind": "no_commas"}, {"kind": "word_count", "max": 6}],
    [{"kind": "all_lowercase"}],
    [{"kind": "include_keywords", "keywords": ["cat"]}, {"kind": "no_digits"}],
    [{"kind": "ends_with_question"}],
]
TINY = "num_generations: 4\nper_device_train_batch_size: 8\nmax_completion_length: 16\n"
TINY_DPO = "per_device_train_batch_size: 1\ngradient_accumulation_steps: 4\nmax_new_tokens: 16\n"
WATCH_FIELDS = ("reward/mean", "reward/std", "kl", "entropy", "length/mean", "truncated/share",
                "reward_length_corr", "alarms")


def judge_reply(path: str, body: dict) -> dict:
    digest = int(hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest(), 16)
    if body.get("logprobs"):
        score = str(1 + digest % 9)
        return {"text": score, "logprobs": [{score: -0.1, "5": -3.0}]}
    return {"text": "AB"[digest % 2]}


@pytest.fixture(scope="module")
def judge():
    with FakeOpenAI(responder=judge_reply) as server:
        yield server


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("online")
    tokenizer = build_tokenizer()
    policy = build_policy(tokenizer, root / "policy")
    model = AutoModelForCausalLM.from_pretrained(policy)
    weights = model.model.embed_tokens.weight  # tied: also the output layer
    with torch.no_grad():
        weights[:, 0] = 3.0
        weights[tokenizer.eos_token_id, 0] += 0.25
    model.save_pretrained(policy)
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(
        json.dumps({"prompt": "Tell me about the cat" + " please" * (i % 3) + f" {i}.",
                    "constraints": CONSTRAINTS[i % len(CONSTRAINTS)]}) + "\n"
        for i in range(8)))
    (root / "tiny.yaml").write_text(TINY)
    (root / "tiny_dpo.yaml").write_text(TINY_DPO)
    return {"root": root, "policy": policy, "prompts": prompts,
            "rm": build_reward_model(tokenizer, root / "rm"),
            "grpo": root / "tiny.yaml", "rloo": root / "tiny.yaml",
            "online-dpo": root / "tiny_dpo.yaml"}


def train(kind: str, toy: dict, out: Path, *args: object, code: int = 0) -> str:
    result = CliRunner().invoke(main, ["train", kind, "--prompts", str(toy["prompts"]),
                                       "--model", str(toy["policy"]), "--output", str(out),
                                       "--config", str(toy[kind]), "--seed", "1",
                                       *map(str, args)])
    assert result.exit_code == code, result.output + repr(result.exception)
    return result.output


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


# --- pieces -----------------------------------------------------------------------------------


def test_reward_options_parse_kind_arguments_and_weight():
    assert parse_reward("verify") == RewardSpec("verify", "", 1.0)
    assert parse_reward("verify:strict=2") == RewardSpec("verify", "strict", 2.0)
    assert parse_reward("length:40=-0.5") == RewardSpec("length", "40", -0.5)
    assert parse_reward("rm:/models/rm=0.3") == RewardSpec("rm", "/models/rm", 0.3)
    spec = parse_reward("judge:base-url=http://127.0.0.1:9/v1,model=7")
    assert spec.weight == 1.0 and spec.options() == {"base-url": "http://127.0.0.1:9/v1",
                                                     "model": "7"}
    assert parse_reward("judge:model=m=0.25").weight == 0.25
    for bad in ("bleu", "verify:loose", "rm", "length:0", "judge:colour=red", "verify=inf"):
        with pytest.raises(UserInputError, match="--reward"):
            parse_reward(bad)


def test_empty_reply_gets_verifier_reward_zero():
    specs = json.dumps([{"kind": "no_commas"}, {"kind": "word_count", "max": 5}])
    rewards, checks = verify_rewards(["", "   \n", "one, two", "fine words"], [specs] * 4)
    assert rewards == [0.0, 0.0, 0.5, 1.0]
    assert checks[0] == [("no_commas", False), ("word_count", False)]
    strict, _ = verify_rewards(["", "one, two", "fine words"], [specs] * 3, strict=True)
    assert strict == [0.0, 0.0, 1.0]


def test_ifeval_form_prompts_become_verifier_constraints(tmp_path):
    path = tmp_path / "ifeval.jsonl"
    path.write_text(json.dumps({
        "key": 1, "prompt": "Write about tea.",
        "instruction_id_list": ["punctuation:no_comma", "length_constraints:number_words",
                                "keywords:letter_frequency"],
        "kwargs": [{}, {"relation": "less than", "num_words": 40},
                   {"letter": "t", "let_frequency": 3, "let_relation": "at least"}]}) + "\n")
    [row] = load_rl_prompts(path)
    assert row["prompt"] == [{"role": "user", "content": "Write about tea."}]
    assert json.loads(row["constraints"]) == [  # IFEval's own kinds (issue 16)
        {"kind": "punctuation:no_comma"},
        {"kind": "length_constraints:number_words", "num_words": 40, "relation": "less than"},
        {"kind": "keywords:letter_frequency", "letter": "t", "let_frequency": 3,
         "let_relation": "at least"}]
    path.write_text(json.dumps({"prompt": "Hi", "instruction_id_list": ["language:no_such_"
                                "id"], "kwargs": [{"language": "fr"}]}) + "\n")
    with pytest.raises(UserInputError, match=r"ifeval.jsonl:1: key 'instruction_id_list'"):
        load_rl_prompts(path)


def test_exported_prompts_keep_their_constraints_for_the_verifier(tmp_path):
    labels = tmp_path / "labels.jsonl"
    constraints = [{"kind": "no_commas"}]
    labels.write_text("".join(json.dumps(
        {"prompt": "Say hi.", "response_a": "hi", "response_b": "hi, you", "preferred": "a",
         "constraints": constraints}) + "\n" for _ in range(2)) + json.dumps(
        {"prompt": "Say bye.", "response_a": "bye", "response_b": "ciao", "preferred": "a"})
        + "\n")
    export_prompts(tmp_path / "prompts.jsonl", labels=labels)
    rows = load_rl_prompts(tmp_path / "prompts.jsonl")
    assert [json.loads(r["constraints"]) for r in rows] == [constraints, []]


def test_watch_statistics_and_alarms():
    watch = RewardWatch({"verify": 1.0, "length": 0.5}, eos_ids={9}, pad_id=0)
    ids = [[5, 9, 0, 0], [5, 5, 5, 9], [5, 5, 5, 5]]
    lengths, truncated = watch.measure(ids)
    assert (lengths, truncated) == ([2, 4, 4], [False, False, True])
    watch.record("verify", [1.0, 0.0, None], lengths, truncated)
    watch.record("length", [-0.5, -1.0, -1.0], lengths, truncated)
    watch.record_checks([[("no_commas", True)], [("no_commas", False)], [("no_commas", True)]])
    row = watch.drain()
    assert row["reward/verify/mean"] == 0.5 and row["reward/length/mean"] == pytest.approx(-5 / 6)
    assert row["reward/mean"] == pytest.approx((0.75 - 0.5 - 0.5) / 3)
    assert row["truncated/share"] == pytest.approx(1 / 3)
    assert row["verify/no_commas"] == pytest.approx(2 / 3)
    assert row["reward_length_corr"] == pytest.approx(pearson([0.75, -0.5, -0.5], [2, 4, 4]))
    assert watch.drain() == {}
    assert pearson([1, 1, 1], [1, 2, 3]) is None and pearson([1, 2, 3], [2, 4, 6]) == 1.0
    hot = {"reward_length_corr": 0.9, "kl": 2.0, "samples": 8}
    assert len(alarms(hot, Thresholds(corr=0.6, kl=1.0))) == 2
    assert alarms({**hot, "samples": 2}, Thresholds(corr=0.6, kl=5.0)) == []


def test_bad_inputs_are_user_errors_before_training(toy, tmp_path):
    bare = tmp_path / "bare.jsonl"
    bare.write_text(json.dumps({"prompt": "Hello"}) + "\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["train", "grpo", "--prompts", str(bare), "--model",
                                       str(toy["policy"]), "--output", str(out),
                                       "--reward", "verify"])
    assert result.exit_code == 2 and "needs prompts with constraints" in result.output
    output = train("grpo", toy, out, "--reward", "pairwise", code=2)
    assert "only `rlaif train online-dpo`" in output
    output = train("grpo", toy, out, code=2)
    assert "at least one --reward" in output
    output = train("grpo", toy, out, "--reward", f"rm:{tmp_path}", code=2)
    assert "not a model directory" in output
    assert not out.exists()


# --- each trainer with each reward kind ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["grpo", "rloo", "online-dpo"])
def test_trainer_runs_every_reward_kind_and_writes_the_watch(kind, toy, judge, tmp_path):
    db = tmp_path / "ledger.db"
    endpoint = f"base-url={judge.base_url},model=judge"
    rewards = ["verify", f"judge:{endpoint}=0.5", f"rm:{toy['rm']}=0.1", "length:8=0.2"]
    if kind == "online-dpo":
        rewards.append(f"pairwise:{endpoint}")
    before = len(judge.requests)
    output = train(kind, toy, tmp_path / "out", "--max-steps", 2, "--db", db, "--lr", 1e-3,
                   *[arg for reward in rewards for arg in ("--reward", reward)])
    assert f"trained {kind}: 2 steps" in output
    out = tmp_path / "out"
    AutoModelForCausalLM.from_pretrained(out)  # a loadable model
    assert any(not torch.equal(a, weights(out)[name]) for name, a in
               weights(toy["policy"]).items() if name in weights(out))
    rows = metrics(out)
    assert [row["step"] for row in rows] == [1, 2]
    names = ["verify", "judge", "rm", "length"] + (["pairwise"] if kind == "online-dpo" else [])
    for row in rows:
        for field in [*WATCH_FIELDS, *(f"reward/{n}/{s}" for n in names for s in ("mean", "std"))]:
            assert field in row, (field, row)
        assert row["samples"] == 8 and row["kl"] is not None and row["entropy"] > 0
        assert 1 <= row["length/mean"] <= 16 and 0 <= row["truncated/share"] <= 1
        assert 0 <= row["reward/judge/mean"] <= 1
        assert any(key.startswith("verify/") for key in row)
    sent = len(judge.requests) - before
    assert sent > 0 and store.ledger_totals(store.open_db(db))["ok"] == sent
    assert f"judge: {sent} requests (0 from the ledger" in output
    if kind != "grpo":
        return
    # the same run again: same seed, same samples, every judge call answered by the ledger
    before = len(judge.requests)
    output = train(kind, toy, tmp_path / "again", "--max-steps", 2, "--db", db, "--lr", 1e-3,
                   *[arg for reward in rewards for arg in ("--reward", reward)])
    assert len(judge.requests) == before
    assert f"judge: {sent} requests ({sent} from the ledger" in output


@pytest.mark.slow
def test_online_dpo_skips_pairs_the_judge_did_not_decide(toy, tmp_path):
    # a judge that always prefers the first reply shown contradicts itself when the order is
    # swapped: every pair is undecided, so none may move the policy
    with FakeOpenAI(responder=lambda path, body: {"text": "A"}) as biased:
        out = tmp_path / "biased"
        output = train("online-dpo", toy, out, "--max-steps", 2, "--lr", 1e-3, "--db",
                       tmp_path / "l.db", "--reward", f"pairwise:base-url={biased.base_url},"
                                                     "model=judge")
        assert len(biased.requests) == 2 * 4 * 2  # 2 steps x 4 pairs x both orders
    assert "trained online-dpo: 2 steps" in output
    assert [row["pairs/skipped"] for row in metrics(out)] == [1.0, 1.0]
    assert json.loads((out / "rl_run.json").read_text())["pairs_skipped"] == 8
    start = weights(toy["policy"])
    assert all(torch.equal(start[name], tensor) for name, tensor in weights(out).items())
    # the same run with a reward that tells the two replies apart does train
    out = tmp_path / "decided"
    train("online-dpo", toy, out, "--max-steps", 2, "--lr", 1e-3, "--reward", f"rm:{toy['rm']}")
    assert min(row["pairs/skipped"] for row in metrics(out)) < 1.0
    assert any(not torch.equal(start[name], tensor) for name, tensor in weights(out).items())


def test_online_dpo_refuses_a_micro_batch_of_several_pairs(toy, tmp_path):
    config = tmp_path / "batch.yaml"
    config.write_text("per_device_train_batch_size: 2\nmax_new_tokens: 8\n")
    result = CliRunner().invoke(main, ["train", "online-dpo", "--prompts", str(toy["prompts"]),
                                       "--model", str(toy["policy"]), "--output",
                                       str(tmp_path / "out"), "--config", str(config),
                                       "--reward", "verify"])
    assert result.exit_code == 2
    assert "per_device_train_batch_size must be 1 (got 2)" in result.output
    assert "gradient_accumulation_steps" in result.output and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_max_minutes_stops_with_a_checkpoint(toy, tmp_path):
    out = tmp_path / "out"
    output = train("grpo", toy, out, "--reward", "verify", "--max-steps", 5, "--save-steps", 100,
                   "--max-minutes", 0.0001)
    assert "trained grpo: 1 steps" in output and "stopped at --max-minutes" in output
    assert (out / "checkpoint-1" / "trainer_state.json").is_file()
    AutoModelForCausalLM.from_pretrained(out)


# --- alarms -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_length_paying_reward_raises_the_alarm_and_stop_on_alarm_stops(toy, tmp_path):
    out = tmp_path / "out"
    output = train("grpo", toy, out, "--reward", "length=-1", "--max-steps", 3,
                   "--stop-on-alarm")
    assert "ALARM at step 1: reward-length correlation 1.00" in output
    assert "stopped on alarm before any checkpoint: no model saved" in output
    [row] = metrics(out)
    assert row["reward_length_corr"] == pytest.approx(1.0) and row["alarms"]
    assert not (out / "model.safetensors").exists()
    assert json.loads((out / "rl_run.json").read_text())["stopped_on_alarm"] is True


@pytest.mark.slow
def test_stop_on_kl_alarm_keeps_the_last_good_checkpoint(toy, tmp_path):
    out = tmp_path / "out"
    output = train("grpo", toy, out, "--reward", "verify", "--max-steps", 6, "--save-steps", 1,
                   "--lr", 0.05, "--alarm-kl", 1e-5, "--alarm-corr", 1, "--stop-on-alarm")
    summary = json.loads((out / "rl_run.json").read_text())
    step = summary["alarm_step"]
    assert step is not None and 1 < step < 6 and "KL to reference" in output
    assert summary["model_saved_from"] == f"checkpoint-{step - 1}"
    assert not (out / f"checkpoint-{step}").exists()
    kept = weights(out / f"checkpoint-{step - 1}")
    assert all(torch.equal(kept[name], tensor) for name, tensor in weights(out).items())
    assert [row["step"] for row in metrics(out)] == list(range(1, step + 1))


@pytest.mark.slow
def test_ppo_stop_on_alarm_keeps_the_policy_before_the_alarmed_batch(toy, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Tell me about cat {i}."}) + "\n"
                               for i in range(4)))
    out = tmp_path / "ppo"
    result = CliRunner().invoke(main, [
        "train", "ppo", "--prompts", str(prompts), "--policy", str(toy["policy"]),
        "--reward-model", str(toy["rm"]), "--output", str(out), "--batch-size", 4,
        "--total-episodes", 8, "--response-length", 16, "--alarm-corr", -1, "--stop-on-alarm"])
    assert result.exit_code == 0, result.output
    assert "ALARM at update 1" in result.output and "stopped on alarm" in result.output
    [row] = metrics(out)
    for field in ("reward/rm/mean", "reward/rm/std", "kl_per_token", "length/mean",
                  "truncated/share", "reward_length_corr"):
        assert field in row
    assert all(torch.equal(weights(toy["policy"])[k], v) for k, v in weights(out).items())


# --- killed and resumed -------------------------------------------------------------------------


def _command(toy: dict, out: Path, db: Path, judge_url: str) -> list[str]:
    return [sys.executable, "-m", "align.cli", "train", "grpo", "--prompts", str(toy["prompts"]),
            "--model", str(toy["policy"]), "--output", str(out), "--config", str(toy["grpo"]),
            "--seed", "1", "--max-steps", "4", "--save-steps", "1", "--lr", "1e-3",
            "--db", str(db), "--reward", "verify",
            "--reward", f"judge:base-url={judge_url},model=judge"]


@pytest.mark.slow
def test_sigkilled_run_resumes_from_its_checkpoint_with_the_same_data_order(toy, tmp_path):
    slow = FakeOpenAI(responder=lambda path, body: {**judge_reply(path, body), "delay": 0.15})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    with slow:
        whole = tmp_path / "whole"
        CliRunner().invoke(main, _command(toy, whole, tmp_path / "a.db", slow.base_url)[3:],
                           catch_exceptions=False)
        out = tmp_path / "killed"
        command = _command(toy, out, tmp_path / "b.db", slow.base_url)
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 240
        while not (out / "checkpoint-2" / "trainer_state.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not (out / "rl_run.json").exists()
        done = CliRunner().invoke(main, command[3:], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert "resumed from" in done.output
    resumed, reference = metrics(out), metrics(whole)
    assert [row["step"] for row in resumed] == [1, 2, 3, 4]
    for mine, theirs in zip(resumed, reference, strict=True):
        assert mine["num_tokens"] == theirs["num_tokens"]  # the same prompts, step by step
        assert mine["reward/mean"] == pytest.approx(theirs["reward/mean"])
    assert not math.isnan(resumed[-1]["reward/mean"])
