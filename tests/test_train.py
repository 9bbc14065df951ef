"""`rlaif train sft|rm|dpo` and `rlaif eval rm` on tiny models built here (CPU, TRL trainers)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from align_models import OBJECTS, build_policy, build_tokenizer, toy_prompts
from click.testing import CliRunner
from safetensors.torch import load_file

from align.cli import main
from align.export import datasets as ds
from align.train.trainers import build_config
from datagen.errors import UserInputError

GOOD = ["a good plan", "some nice music", "bright colours", "the new book"]
BAD = [o for o in OBJECTS if o not in GOOD]


@pytest.fixture(scope="module")
def policy(tmp_path_factory) -> Path:
    return build_policy(build_tokenizer(), tmp_path_factory.mktemp("models") / "policy")


def toy_labels(n: int, seed: int) -> list[dict]:
    """Pairs where the chosen reply always names a GOOD object and the rejected one a BAD one."""
    rng = random.Random(seed)
    rows = []
    for i, prompt in enumerate(toy_prompts(n, seed=seed)):
        good, bad = f"It is {rng.choice(GOOD)}.", f"It is {rng.choice(BAD)}."
        a_first = rng.random() < 0.5
        p_good = rng.uniform(0.7, 0.99)
        rows.append({
            "id": f"{seed}-{i}", "prompt": prompt,
            "response_a": good if a_first else bad, "response_b": bad if a_first else good,
            "preferred": "a" if a_first else "b", "p_a": p_good if a_first else 1 - p_good,
        })
    return rows


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    """A preference export (dataset dir with train/test splits, margins from soft labels)."""
    root = tmp_path_factory.mktemp("data")
    labels = root / "labels.jsonl"
    labels.write_text("".join(json.dumps(row) + "\n" for row in toy_labels(64, seed=1)))
    ds.export_preference(root / "pairs", labels=labels, test_size=0.25, seed=0)
    return root / "pairs"


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sft") / "sft.jsonl"
    rows = [{"id": str(i), "messages": prompt + [{"role": "assistant", "content": "It is good."}]}
            for i, prompt in enumerate(toy_prompts(16))]
    ds.write_export(ds.sft_rows(rows, "toy"), out)
    return out


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def changed(before: Path, after: Path) -> list[str]:
    """Names of the shared backbone tensors whose values differ between two checkpoints."""
    old, new = weights(before), weights(after)
    shared = [name for name in old if name in new and old[name].shape == new[name].shape]
    assert len(shared) > 5
    return [name for name in shared if not torch.equal(old[name], new[name])]


def run_cli(*args: str) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.stdout


def test_sft_two_steps_change_parameters_and_write_metrics_and_plot(policy, sft_data, tmp_path):
    out = tmp_path / "sft"
    output = run_cli("train", "sft", "--data", sft_data, "--model", policy, "--output", out,
                     "--max-steps", 2, "--lr", 1e-3, "--plot")
    assert "trained sft: 2 steps" in output
    assert changed(policy, out)
    assert (out / "tokenizer.json").is_file() and (out / "curves.png").stat().st_size > 1000
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in logs if "loss" in entry] == [1, 2]
    assert "train_runtime" in logs[-1]


def test_rm_two_steps_change_parameters_with_margin_and_centering(policy, pairs, tmp_path):
    assert "margin" in ds.load_split(pairs).column_names
    out = tmp_path / "rm"
    run_cli("train", "rm", "--data", pairs, "--model", policy, "--output", out,
            "--max-steps", 2, "--center-rewards", 0.01)
    assert changed(policy, out)
    assert json.loads((out / "config.json").read_text())["architectures"] == [
        "LlamaForSequenceClassification"]
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"accuracy", "margin", "mean_reward"} <= set(logs[0])


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--precompute-ref", "--loss-type", "sigmoid,sft", "--beta", 0.2],
        ["--lora", "--loss-type", "ipo"],
    ],
    ids=["reference-model", "precomputed-ref-mixed-loss", "lora-ipo"],
)
def test_dpo_two_steps_change_parameters(policy, pairs, tmp_path, extra):
    out = tmp_path / "dpo"
    run_cli("train", "dpo", "--data", pairs, "--model", policy, "--output", out,
            "--max-steps", 2, "--lr", 1e-3, *extra)
    assert changed(policy, out)
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert "rewards/margins" in logs[0]


def test_reward_model_separates_held_out_pairs(policy, pairs, tmp_path):
    out = tmp_path / "rm"
    run_cli("train", "rm", "--data", pairs, "--model", policy, "--output", out,
            "--max-steps", 24, "--lr", 3e-3, "--seed", 0)
    result = json.loads(run_cli("eval", "rm", "--model", out, "--data", pairs, "--json"))
    assert result["count"] == 16  # the test split: 16 of 64 prompts
    assert result["accuracy"] >= 0.9
    assert "accuracy" in run_cli("eval", "rm", "--model", out, "--data", pairs)


def test_yaml_config_maps_onto_trl_config_and_options_win(tmp_path):
    config = tmp_path / "dpo.yaml"
    config.write_text("beta: 0.3\nper_device_train_batch_size: 4\nloss_type: [sigmoid, sft]\n")
    args = build_config("dpo", tmp_path / "out", config, beta=0.2, max_steps=None)
    assert type(args).__name__ == "DPOConfig"
    assert (args.beta, args.per_device_train_batch_size, args.loss_type) == (0.2, 4, ["sigmoid",
                                                                                      "sft"])
    assert (args.use_cpu, args.bf16, args.report_to, args.save_strategy) == (True, False, [], "no")

    (tmp_path / "bad_loss.yaml").write_text("loss_type: sigmod\n")
    with pytest.raises(UserInputError, match="unknown DPO loss type 'sigmod'"):
        build_config("dpo", tmp_path / "out", tmp_path / "bad_loss.yaml")


def test_yaml_unknown_key_exits_2_naming_key_and_line(policy, pairs, tmp_path):
    config = tmp_path / "rm.yaml"
    config.write_text("learning_rate: 1.0e-4\n# a comment\nbetaa: 0.1\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["train", "rm", "--data", str(pairs), "--model",
                                       str(policy), "--output", str(out), "--config", str(config)])
    assert result.exit_code == 2
    assert f"{config}:3: unknown key 'betaa' for trl.RewardConfig" in result.output
    assert not out.exists()


def test_missing_columns_and_model_are_user_errors(policy, sft_data, tmp_path):
    result = CliRunner().invoke(main, ["train", "dpo", "--data", str(sft_data), "--model",
                                       str(policy), "--output", str(tmp_path / "o")])
    assert result.exit_code == 2 and "needs columns chosen/rejected" in result.output
    result = CliRunner().invoke(main, ["train", "sft", "--data", str(sft_data), "--model",
                                       str(tmp_path), "--output", str(tmp_path / "o")])
    assert result.exit_code == 2 and "not a model directory" in result.output


@pytest.mark.slow
def test_dpo_under_torchrun_with_two_cpu_processes(policy, pairs, tmp_path):
    out = tmp_path / "dpo-ddp"
    rlaif = Path(sys.executable).with_name("rlaif")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--standalone", str(rlaif), "train", "dpo", "--data", str(pairs),
               "--model", str(policy), "--output", str(out), "--max-steps", "2"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained dpo: 2 steps") == 1  # only rank 0 reports
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # 48 train rows, 8 per rank: one step covers 16 rows with 2 ranks (8 with one) -> 3 steps/epoch
    assert logs[0]["epoch"] == pytest.approx(1 / 3)
    assert changed(policy, out)


@pytest.mark.slow
def test_training_output_is_one_bar_or_one_line_and_metrics_go_to_the_file(
        policy, sft_data, tmp_path):
    # issue 17: TRL's per-step dicts and a FutureWarning filled the terminal of every train
    import warnings

    from test_progress import run_on_a_terminal

    args = ["train", "sft", "--data", str(sft_data), "--model", str(policy), "--max-steps", "3"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        piped = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "piped")])
    assert piped.exit_code == 0, piped.output
    assert "{'loss'" not in piped.output and piped.stdout.startswith("trained sft: 3 steps")
    assert not [w for w in seen if "is_gradient_checkpointing" in str(w.message)]
    rows = [json.loads(line) for line in (tmp_path / "piped" / "metrics.jsonl").read_text()
            .splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
    code, shown = run_on_a_terminal([sys.executable, "-m", "align.cli", *args, "-o",
                                     str(tmp_path / "tty")])
    assert code == 0, shown
    assert "train sft" in shown and "3/3" in shown and "loss " in shown
    assert "{'loss'" not in shown
