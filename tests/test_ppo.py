"""Tests for the project PPO: the pure math against hand-computed values, then end-to-end runs on
a toy task whose reward model is known exactly (tests/align_models.py): the score is 5x the mean
over the sequence of +1 for alphabetic tokens and -1 for the rest, so a policy that learns to
answer in letters earns more."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from transformers import AutoModelForCausalLM

from align.ppo import loop as ppo
from align.ppo import rollout as ppo_rollout
from align.ppo.losses import (
    clipped_policy_loss,
    clipped_value_loss,
    compute_gae,
    kl_per_token,
    kl_shaped_rewards,
    masked_mean,
    token_logprobs,
    truncate_after_stop,
    whiten,
)
from datagen.errors import UserInputError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from align_models import (  # noqa: E402
    alphabetic_token_ids,
    build_policy,
    build_token_reward_model,
    build_tokenizer,
    toy_prompts,
)

# Settings that make the toy task learn in a few dozen updates of ~0.1 s each.
TOY = dict(learning_rate=3e-3, lr_schedule="constant", batch_size=16, response_length=8,
           num_ppo_epochs=4, kl_coef=0.05)


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("toy")
    tokenizer = build_tokenizer()
    return {
        "policy": build_policy(tokenizer, root / "policy"),
        "reward": build_token_reward_model(tokenizer, root / "rm", alphabetic_token_ids(tokenizer),
                                           pooling="mean", scale=5.0),
    }


# --- pure functions -------------------------------------------------------------------------


def test_gae_matches_hand_computed_example():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.2, 1.0, 5.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [0.4, 0.3, 9.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    advantages, returns = compute_gae(rewards, values, mask, gamma=0.9, lam=0.95)
    # row 0: deltas 0.04, 0.03, 0.3 -> A2 = 0.3, A1 = 0.03 + 0.855 * 0.3, A0 = 0.04 + 0.855 * A1
    # row 1: the masked third token counts for nothing; deltas 0.07, 0.7
    expected = torch.tensor([[0.2849575, 0.2865, 0.3], [0.6685, 0.7, 0.0]])
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, torch.tensor([[0.7849575, 0.8865, 1.0],
                                                      [1.0685, 1.0, 0.0]]))


def test_gae_with_gamma_and_lambda_one_is_monte_carlo():
    rewards = torch.tensor([[0.1, -0.2, 0.3, 1.0]])
    values = torch.tensor([[0.3, 0.1, 0.4, 0.2]])
    mask = torch.ones_like(rewards, dtype=torch.bool)
    advantages, returns = compute_gae(rewards, values, mask, gamma=1.0, lam=1.0)
    future = rewards.flip(1).cumsum(1).flip(1)
    torch.testing.assert_close(returns, future)
    torch.testing.assert_close(advantages, future - values)


@pytest.mark.parametrize(
    ("ratio", "advantage", "loss", "clipped"),
    [
        (0.5, 1.0, -0.5, False),   # worse action made less likely: no clipping needed
        (1.0, 1.0, -1.0, False),
        (1.5, 1.0, -1.2, True),    # gain capped at 1 + eps
        (0.5, -1.0, 0.8, True),    # penalty floor at 1 - eps
        (1.0, -1.0, 1.0, False),
        (1.5, -1.0, 1.5, False),   # bad action made more likely: full penalty
    ],
)
def test_clipped_surrogate(ratio, advantage, loss, clipped):
    logprob = torch.tensor([[math.log(ratio)]], requires_grad=True)
    value, clipfrac = clipped_policy_loss(logprob, torch.zeros(1, 1), torch.tensor([[advantage]]),
                                          torch.ones(1, 1, dtype=torch.bool), cliprange=0.2)
    assert value.item() == pytest.approx(loss)
    assert clipfrac.item() == float(clipped)
    value.backward()
    # a clipped term carries no gradient; otherwise d(-A * rho)/d(log p) = -A * rho
    assert logprob.grad.item() == pytest.approx(0.0 if clipped else -advantage * ratio)


def test_clipped_surrogate_ignores_masked_tokens():
    logprobs = torch.log(torch.tensor([[1.5, 10.0]]))
    loss, clipfrac = clipped_policy_loss(logprobs, torch.zeros(1, 2), torch.ones(1, 2),
                                         torch.tensor([[True, False]]), cliprange=0.2)
    assert loss.item() == pytest.approx(-1.2)
    assert clipfrac.item() == 1.0


def test_clipped_value_loss_takes_the_larger_error():
    old = torch.tensor([[0.0, 0.0, 0.0]])
    new = torch.tensor([[0.1, 1.0, -1.0]])
    returns = torch.tensor([[0.5, 0.5, 1.0]])
    loss, clipfrac = clipped_value_loss(new, old, returns, torch.ones(1, 3, dtype=torch.bool),
                                        cliprange_value=0.2)
    # per token: (0.1-0.5)^2=0.16 vs unclipped same; (1-0.5)^2=0.25 vs (0.2-0.5)^2=0.09;
    # (-1-1)^2=4 vs (-0.2-1)^2=1.44
    assert loss.item() == pytest.approx(0.5 * (0.16 + 0.25 + 4.0) / 3)
    assert clipfrac.item() == 0.0
    # moving towards the return by more than the clip range: the clipped error (0.64) wins
    loss, clipfrac = clipped_value_loss(torch.tensor([[-0.5]]), torch.zeros(1, 1),
                                        torch.tensor([[-1.0]]), torch.ones(1, 1, dtype=torch.bool),
                                        cliprange_value=0.2)
    assert loss.item() == pytest.approx(0.5 * 0.64) and clipfrac.item() == 1.0


def test_kl_shaped_rewards_penalise_every_token_and_add_score_at_the_end():
    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, -1.0]])
    ref_logprobs = torch.tensor([[-1.5, -1.0, -0.5], [-2.0, -1.0, -3.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    rewards, non_score = kl_shaped_rewards(torch.tensor([2.0, -1.0]), logprobs, ref_logprobs, mask,
                                           kl_coef=0.1)
    torch.testing.assert_close(non_score, torch.tensor([[-0.05, 0.1, 0.0], [-0.1, 0.0, 0.0]]))
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 0.1, 2.0], [-1.1, 0.0, 0.0]]))


def test_k3_estimator_is_nonnegative_and_zero_at_equality():
    logprobs = torch.tensor([[-1.0, -2.0, -0.5]])
    ref = torch.tensor([[-1.5, -1.0, -0.5]])
    k3 = kl_per_token(logprobs, ref, "k3")
    assert (k3 >= 0).all() and k3[0, 2] == 0
    assert k3[0, 0].item() == pytest.approx(math.exp(-0.5) - 1 + 0.5)
    with pytest.raises(ValueError, match="kl_estimator"):
        kl_per_token(logprobs, ref, "k2")


def test_whiten_over_the_mask():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, -7.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    white = whiten(values, mask)
    assert masked_mean(white, mask).item() == pytest.approx(0.0, abs=1e-6)
    real = white[mask]
    assert real.var().item() == pytest.approx(1.0, rel=1e-5)  # unbiased, as whiten uses
    assert white[1, 1] == 0 and white[1, 2] == 0
    kept = whiten(values, mask, shift_mean=False)
    assert masked_mean(kept, mask).item() == pytest.approx(2.5)
    torch.testing.assert_close(kept[mask] - 2.5, real)


def test_truncate_after_stop_keeps_the_stop_token():
    responses = torch.tensor([[5, 9, 7, 9], [5, 6, 7, 8], [9, 5, 5, 5]])
    cut, mask = truncate_after_stop(responses, stop_id=9, pad_id=0)
    assert cut.tolist() == [[5, 9, 0, 0], [5, 6, 7, 8], [9, 0, 0, 0]]
    assert mask.sum(1).tolist() == [2, 4, 1]
    same, all_true = truncate_after_stop(responses, stop_id=None, pad_id=0)
    assert torch.equal(same, responses) and all_true.all()


def test_config_from_dict_rejects_unknown_keys_and_bad_types():
    config = ppo.config_from_dict({"kl_coef": 0.1, "missing_eos_penalty": 1,
                                   "learning_rate": "3e-6", "stop_token": None})
    assert (config.kl_coef, config.learning_rate, config.stop_token) == (0.1, 3e-6, None)
    with pytest.raises(ValueError, match="'whiten_rewards'"):
        ppo.config_from_dict({"whiten_rewards": "yes"})
    with pytest.raises(ValueError, match="'response_length'"):
        ppo.config_from_dict({"response_length": 8.5})
    with pytest.raises(ValueError, match="'kl_coeff'"):
        ppo.config_from_dict({"kl_coeff": 0.1})
    with pytest.raises(ValueError, match="'batch_size'"):
        ppo.config_from_dict({"batch_size": "eight"})
    with pytest.raises(ValueError, match="num_mini_batches"):
        ppo.check_config(ppo.PPOConfig(batch_size=8, num_mini_batches=3))
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        ppo.check_config(ppo.PPOConfig(batch_size=3), world_size=2)


# --- devices and frozen models --------------------------------------------------------------


def test_device_resolution():
    here = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert ppo.resolve_device("cpu") == torch.device("cpu")
    assert ppo.resolve_device("auto") == torch.device(here)
    assert ppo.resolve_device("auto", cuda_devices=0) == torch.device("cpu")
    with pytest.raises(ValueError, match="device: 'cuda' but CUDA is not available"):
        ppo.resolve_device("cuda", cuda_devices=0)
    # under torchrun each process takes the GPU of its LOCAL_RANK, unless an index is given
    assert ppo.resolve_device("auto", local_rank=1, cuda_devices=2) == torch.device("cuda", 1)
    assert ppo.resolve_device("cuda", local_rank=1, cuda_devices=2) == torch.device("cuda", 1)
    assert ppo.resolve_device("cuda:0", local_rank=1, cuda_devices=2) == torch.device("cuda", 0)
    with pytest.raises(ValueError, match="only 2 CUDA device"):
        ppo.resolve_device("cuda:2", cuda_devices=2)
    with pytest.raises(ValueError, match="device: 'gpu' is not allowed"):
        ppo.resolve_device("gpu")
    with pytest.raises(ValueError, match="device: 'cuda:x' is not allowed"):
        ppo.check_config(ppo.PPOConfig(device="cuda:x"))
    # bf16 autocast is off on CPU unless asked for
    assert ppo.resolve_bf16(None, torch.device("cpu")) is False
    assert ppo.resolve_bf16(True, torch.device("cpu")) is True


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_rejects_cuda_when_unavailable(toy, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "hi"}) + "\n")
    config = tmp_path / "ppo.yaml"
    config.write_text("device: cuda\n")
    base = ["--prompts", str(prompts), "--policy", str(toy["policy"]), "--reward-model",
            str(toy["reward"]), "--output", str(tmp_path / "out")]
    for args, where in [(["--device", "cuda"], "options"), (["--config", str(config)], config),
                        (["--device", "cuda:1"], "options")]:
        result = _invoke([*base, *args])
        assert result.exit_code == 2, result.output
        assert f"{where}: device: '{args[1] if where == 'options' else 'cuda'}' but CUDA is " \
               "not available" in result.output
        assert not (tmp_path / "out").exists()
    result = _invoke([*base, "--device", "gpu"])
    assert result.exit_code == 2 and "device: 'gpu' is not allowed" in result.output


def test_frozen_models_get_no_gradients_and_no_optimiser_state(toy):
    models = ppo_rollout.load_models(toy["policy"], toy["reward"], "cpu")
    assert not any(m.training for m in (models.policy, models.ref_policy, models.value_model,
                                        models.reward_model))
    for frozen in (models.ref_policy, models.reward_model):
        assert not any(p.requires_grad for p in frozen.parameters())
    config = ppo.PPOConfig(**{**TOY, "batch_size": 4, "num_ppo_epochs": 1})
    optimizer = ppo.make_optimizer(models, config)
    trainable = {id(p) for m in (models.policy, models.value_model) for p in m.parameters()}
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == trainable
    prompt_ids = ppo_rollout.encode_prompts(models.tokenizer, toy_prompts(4))
    rollout = ppo_rollout.collect_rollout(models, prompt_ids, config,
                                          torch.Generator(device="cpu").manual_seed(0))
    # experience holds per-token values only, never (B, T, V) logits, and no autograd graph
    tensors = [v for v in vars(rollout).values() if isinstance(v, torch.Tensor)]
    assert all(t.dim() == 2 and not t.requires_grad for t in tensors)
    ppo.ppo_epochs(models, rollout, config, optimizer, torch.Generator().manual_seed(0), 1)
    assert {id(p) for p in optimizer.state} == trainable
    for frozen in (models.ref_policy, models.reward_model):
        assert all(p.grad is None for p in frozen.parameters())


def test_bf16_autocast_runs_where_asked(toy, tmp_path):
    """The GPU default path (bf16 autocast), exercised here on CPU where it must be asked for."""
    config = ppo.PPOConfig(**{**TOY, "batch_size": 4, "num_ppo_epochs": 1}, total_episodes=4,
                           device="cpu", bf16=True)
    row = ppo.train_ppo(config, policy=toy["policy"], reward_model=toy["reward"],
                        prompts=toy_prompts(4), output_dir=tmp_path / "out").metrics[0]
    numbers = {k: v for k, v in row.items() if k not in ("alarms", "reward_length_corr")}
    assert all(math.isfinite(value) for value in numbers.values()), row
    assert row["alarms"] == []


# --- end to end ------------------------------------------------------------------------------


def _window(metrics, key, rows):
    return sum(row[key] for row in rows) / len(rows)


def test_cached_sampling_matches_the_training_forward(toy):
    """The KV-cache sampler (left-padded prompts) and the full forward used for training must
    give the same log-probs, or PPO would silently be off-policy."""
    models = ppo_rollout.load_models(toy["policy"], toy["reward"])
    prompts = ppo_rollout.encode_prompts(models.tokenizer, toy_prompts(5) + ["A dog"])
    queries, query_mask = ppo_rollout.left_pad(prompts, models.tokenizer.pad_token_id)
    assert (query_mask == 0).any()  # prompts of different lengths
    tokens, logprobs = ppo_rollout.sample_responses(
        models.policy, queries, query_mask, max_new_tokens=6, temperature=0.7, stop_id=None,
        pad_id=models.tokenizer.pad_token_id, generator=torch.Generator().manual_seed(0))
    ids = torch.cat([queries, tokens], dim=1)
    mask = torch.cat([query_mask, torch.ones_like(tokens)], dim=1)
    with torch.no_grad():
        logits = ppo_rollout.response_logits(models.policy, ids, mask, tokens.shape[1], 0.7)
    torch.testing.assert_close(token_logprobs(logits, tokens), logprobs, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_ppo_raises_the_known_reward_while_kl_stays_bounded(toy, tmp_path):
    config = ppo.PPOConfig(**TOY, total_episodes=16 * 30, seed=1)
    result = ppo.train_ppo(config, policy=toy["policy"], reward_model=toy["reward"],
                           prompts=toy_prompts(64), output_dir=tmp_path / "out")
    metrics = result.metrics
    assert len(metrics) == 30
    start, end = _window(metrics, "score", metrics[:5]), _window(metrics, "score", metrics[-5:])
    assert end - start > 0.5, (start, end)
    rlhf_start = _window(metrics, "rlhf_reward", metrics[:5])
    assert _window(metrics, "rlhf_reward", metrics[-5:]) > rlhf_start + 0.3
    # the whole response could at most move log(V) = 5.8 nats per token away from the reference
    # answering in letters only needs ~8 * log(320 / 112) = 8.4 nats; the penalty holds it near
    assert all(-1 < row["kl"] < 20 for row in metrics), [row["kl"] for row in metrics]
    assert all(row["approx_kl"] < 0.5 for row in metrics)  # the clip keeps each update small
    assert all(0 <= row["policy_clipfrac"] <= 1 and row["entropy"] > 0 for row in metrics)
    # the log, the config and a loadable policy are all there
    out = tmp_path / "out"
    lines = (out / ppo.METRICS_FILE).read_text().splitlines()
    assert [json.loads(line)["update"] for line in lines] == list(range(1, 31))
    assert yaml.safe_load((out / ppo.CONFIG_FILE).read_text())["kl_coef"] == 0.05
    trained = AutoModelForCausalLM.from_pretrained(out)
    initial = AutoModelForCausalLM.from_pretrained(toy["policy"])
    assert not torch.equal(trained.lm_head.weight, initial.lm_head.weight)
    assert not (tmp_path / ".out.partial").exists()
    # a four times stronger KL penalty keeps the policy clearly closer to the reference
    config = ppo.PPOConfig(**{**TOY, "kl_coef": 0.2}, total_episodes=16 * 30, seed=1)
    strict = ppo.train_ppo(config, policy=toy["policy"], reward_model=toy["reward"],
                           prompts=toy_prompts(64), output_dir=tmp_path / "strict").metrics
    assert _window(strict, "kl", strict[-10:]) < 0.7 * _window(metrics, "kl", metrics[-10:])


@pytest.mark.slow
def test_same_seed_same_run(toy, tmp_path):
    def run(name, seed):
        config = ppo.PPOConfig(**{**TOY, "batch_size": 4}, total_episodes=8, seed=seed,
                               num_mini_batches=2, missing_eos_penalty=1.0, kl_estimator="k3")
        rows = ppo.train_ppo(config, policy=toy["policy"], reward_model=toy["reward"],
                             prompts=toy_prompts(8), output_dir=tmp_path / name).metrics
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    first = run("a", seed=3)
    assert first == run("b", seed=3)
    assert first != run("c", seed=4)


# --- command line ----------------------------------------------------------------------------


def _invoke(args):
    from align.cli import main

    return CliRunner().invoke(main, ["train", "ppo", *args])


@pytest.mark.slow
def test_cli_trains_saves_and_plots(toy, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    rows = [{"prompt": p} for p in toy_prompts(6)] + [{"prompt": "Tell me about a dog."}] * 2
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "ppo.yaml"
    config.write_text(yaml.safe_dump({"learning_rate": 1e-3, "response_length": 4,
                                      "num_ppo_epochs": 1, "batch_size": 2}))
    out = tmp_path / "out"
    result = _invoke(["--prompts", str(prompts), "--policy", str(toy["policy"]),
                      "--reward-model", str(toy["reward"]), "--output", str(out),
                      "--config", str(config), "--batch-size", "4", "--seed", "5", "--plot",
                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "2 updates" in result.output
    saved = yaml.safe_load((out / ppo.CONFIG_FILE).read_text())
    assert (saved["batch_size"], saved["response_length"], saved["seed"]) == (4, 4, 5)
    assert (saved["device"], saved["bf16"]) == ("cpu", None)
    assert (out / "ppo_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()


def test_cli_rejects_bad_inputs_by_file_and_key(toy, tmp_path):
    good = tmp_path / "prompts.jsonl"
    good.write_text(json.dumps({"prompt": "hi"}) + "\n")
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text(json.dumps({"prompt": "hi"}) + "\n{oops\n")
    no_key = tmp_path / "nokey.jsonl"
    no_key.write_text(json.dumps({"question": "hi"}) + "\n")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("kl_coeff: 0.1\n")
    base = ["--policy", str(toy["policy"]), "--reward-model", str(toy["reward"])]
    cases = [
        (["--prompts", str(bad_json), *base], f"{bad_json}:2: not valid JSON"),
        (["--prompts", str(no_key), *base], f"{no_key}:1: missing key 'prompt'"),
        (["--prompts", str(good), *base, "--config", str(unknown)],
         f"{unknown}: unknown PPO setting 'kl_coeff'"),
        (["--prompts", str(good), "--policy", str(tmp_path), "--reward-model",
          str(toy["reward"])], "not a model directory (no config.json)"),
        (["--prompts", str(tmp_path / "missing.jsonl"), *base], "no such file"),
    ]
    for args, message in cases:
        out = tmp_path / "out"
        result = _invoke([*args, "--output", str(out)])
        assert result.exit_code == 2, result.output
        assert message in result.output
        assert not out.exists()


def test_cli_reads_a_saved_dataset_directory(tmp_path):
    import datasets

    from align.ppo.cli import load_prompts

    messages = [{"role": "user", "content": "Describe a cat."}]
    datasets.Dataset.from_dict({"prompt": [messages, messages]}).save_to_disk(tmp_path / "ds")
    assert load_prompts(tmp_path / "ds") == [messages, messages]
    datasets.Dataset.from_dict({"text": ["x"]}).save_to_disk(tmp_path / "other")
    with pytest.raises(UserInputError, match="missing key 'prompt'"):
        load_prompts(tmp_path / "other")


# --- two processes ---------------------------------------------------------------------------

RANK_SCRIPT = """
import json, os, sys
import torch
torch.set_num_threads(1)
from align.ppo import loop as ppo
from align.ppo import rollout as ppo_rollout
from datagen.errors import UserInputError
sys.path.insert(0, {tests!r})
from align_models import toy_prompts
config = ppo.PPOConfig(learning_rate=3e-3, batch_size=8, total_episodes=16, response_length=6,
                       num_ppo_epochs=2, num_mini_batches=2, seed=2)
result = ppo.train_ppo(config, policy={policy!r}, reward_model={reward!r},
                       prompts=toy_prompts(16), output_dir={out!r})
params = torch.cat([p.detach().reshape(-1) for p in result.policy.parameters()])
report = {{"metrics": result.metrics, "params": params[:: max(1, params.numel() // 500)].tolist()}}
with open(os.path.join({report!r}, "rank" + os.environ["RANK"] + ".json"), "w") as fh:
    json.dump(report, fh)
"""


@pytest.mark.slow
def test_two_processes_with_torchrun(toy, tmp_path):
    script = tmp_path / "run_rank.py"
    report = tmp_path / "report"
    report.mkdir()
    script.write_text(RANK_SCRIPT.format(tests=str(Path(__file__).parent),
                                         policy=str(toy["policy"]), reward=str(toy["reward"]),
                                         out=str(tmp_path / "out"), report=str(report)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--standalone", str(script)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((report / f"rank{r}.json").read_text()) for r in (0, 1)]
    # each rank sampled its own half of the batch, yet averaged gradients keep them identical
    assert ranks[0]["params"] == ranks[1]["params"]
    initial = torch.cat([p.reshape(-1) for p in AutoModelForCausalLM.from_pretrained(
        toy["policy"]).parameters()])
    assert ranks[0]["params"] != initial[:: max(1, initial.numel() // 500)].tolist()
    assert len(ranks[0]["metrics"]) == 2
    # metrics are all-reduced, so both ranks log the same numbers
    for row0, row1 in zip(ranks[0]["metrics"], ranks[1]["metrics"], strict=True):
        skip = ("seconds", "alarms", "reward_length_corr")
        assert {k: v for k, v in row0.items() if k not in skip} == pytest.approx(
            {k: v for k, v in row1.items() if k not in skip})
        assert row0["alarms"] == row1["alarms"]
    assert (tmp_path / "out" / "model.safetensors").exists()
