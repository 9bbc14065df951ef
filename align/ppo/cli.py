"""`rlaif train ppo`: train a policy with the project's PPO against a reward model.

Parses options (and an optional YAML file of ``PPOConfig`` fields; options given on the command
line win), reads prompts from JSONL or a saved Hugging Face dataset, calls
``align.ppo.loop.train_ppo`` and prints one summary line. Works under ``torchrun``
(``torchrun --nproc_per_node 2 -m align.ppo.cli ...``); rank 0 writes and prints. ``--device``
(default auto: a GPU when there is one) is checked before any model is loaded.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import click
import yaml

from datagen.cli_checks import ModelDir, output_option
from datagen.errors import UserInputError
from datagen.jsonl import read_objects

PLOT_FILE = "ppo_curves.png"

OPTION_FIELDS = {
    "total_episodes": "total_episodes",
    "batch_size": "batch_size",
    "num_ppo_epochs": "num_ppo_epochs",
    "kl_coef": "kl_coef",
    "lr": "learning_rate",
    "response_length": "response_length",
    "temperature": "temperature",
    "seed": "seed",
    "device": "device",
    "bf16": "bf16",
    "alarm_corr": "alarm_corr",
    "alarm_kl": "alarm_kl",
    "stop_on_alarm": "stop_on_alarm",
    "max_minutes": "max_minutes",
}


def load_prompts(path: str | Path) -> list[str | list[dict[str, str]]]:
    """Prompts from a JSONL file (one ``{"prompt": ...}`` per line) or a saved dataset directory
    with a ``prompt`` column; a prompt is text or a list of ``{role, content}`` messages."""
    path = Path(path)
    if path.is_dir():
        return _dataset_prompts(path)
    if not path.is_file():
        raise UserInputError(f"{path}: no such file or directory")
    prompts = []
    for _, where, row in read_objects(path, empty_message=None,
                                      not_object="missing key 'prompt'"):
        if "prompt" not in row:
            raise UserInputError(f"{where}: missing key 'prompt'")
        prompts.append(_checked_prompt(row["prompt"], where))
    if not prompts:
        raise UserInputError(f"{path}: no prompts")
    return prompts


def _dataset_prompts(path: Path) -> list[str | list[dict[str, str]]]:
    import datasets

    try:
        data = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise UserInputError(f"{path}: not a saved Hugging Face dataset directory") from None
    if isinstance(data, datasets.DatasetDict):
        if "train" not in data:
            raise UserInputError(f"{path}: dataset has no 'train' split ({', '.join(data)})")
        data = data["train"]
    if "prompt" not in data.column_names:
        raise UserInputError(f"{path}: missing key 'prompt' (columns: "
                             f"{', '.join(data.column_names)})")
    prompts = [_checked_prompt(p, f"{path}: row {i}") for i, p in enumerate(data["prompt"])]
    if not prompts:
        raise UserInputError(f"{path}: no prompts")
    return prompts


def _checked_prompt(prompt: Any, where: str) -> str | list[dict[str, str]]:
    if isinstance(prompt, str) and prompt:
        return prompt
    if isinstance(prompt, list) and prompt and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in prompt
    ):
        return [{"role": m["role"], "content": m["content"]} for m in prompt]
    raise UserInputError(f"{where}: key 'prompt': expected non-empty text or a list of "
                         "{role, content} messages")


def load_config_file(path: str | None) -> dict[str, Any]:
    """The PPO settings in a YAML file, as a dict (empty when no file is given)."""
    if path is None:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserInputError(f"{path}: cannot read config: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: expected a mapping of PPO settings")
    return data


def build_config(config_file: str | None, options: dict[str, Any]) -> Any:
    """PPOConfig from the YAML file, overridden by the options given on the command line."""
    from align.ppo.config import check_config, config_from_dict

    values = load_config_file(config_file)
    try:
        config_from_dict(values)
    except ValueError as exc:
        raise UserInputError(f"{config_file}: {exc}") from None
    values.update({OPTION_FIELDS[k]: v for k, v in options.items() if v is not None})
    config = config_from_dict(values)
    try:
        check_config(config, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError as exc:
        raise UserInputError(f"{config_file or 'options'}: {exc}") from None
    return config


def check_device(config: Any, source: str) -> None:
    """Fail as a user error, before any model is loaded, when the configured device (or bf16 on
    it) is not available here; ``source`` names where the setting came from."""
    from align.ppo import loop as ppo

    try:
        device = ppo.resolve_device(config.device, local_rank=ppo.torchrun_local_rank())
        ppo.resolve_bf16(config.bf16, device)
    except ValueError as exc:
        raise UserInputError(f"{source}: {exc}") from None


def resolve_model_dir(value: str, option: str) -> Path:
    """A model directory; ``default`` means the embedded SmolLM2 model."""
    if value == "default":
        from datagen.serve.default_model import default_model_dir

        return Path(default_model_dir())
    path = Path(value)
    if not (path / "config.json").is_file():
        raise UserInputError(f"{path}: {option}: not a model directory (no config.json)")
    return path


def plot_curves(metrics: list[dict[str, float]], png_path: Path) -> None:
    """Write a PNG with the mean reward-model score and the KL to the reference per update."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    updates = [row["update"] for row in metrics]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 6), sharex=True)
    top.plot(updates, [row["score"] for row in metrics], label="RM score")
    top.plot(updates, [row["rlhf_reward"] for row in metrics], label="score - KL penalty")
    top.set_ylabel("reward")
    top.legend()
    bottom.plot(updates, [row["kl"] for row in metrics], color="tab:red")
    bottom.set_ylabel("KL to reference (nats)")
    bottom.set_xlabel("update")
    fig.tight_layout()
    partial = png_path.with_name(f".{png_path.name}.partial")
    fig.savefig(partial, format="png")
    plt.close(fig)
    partial.rename(png_path)


@click.command("ppo")
@click.option("--prompts", "prompts_path", required=True, type=click.Path(),
              help="JSONL with a 'prompt' per line (text or chat messages) or a dataset dir.")
@click.option("--policy", required=True, type=ModelDir(),
              help="Policy model directory, or 'default' for the embedded SmolLM2 model.")
@click.option("--reward-model", required=True, type=ModelDir(),
              help="Sequence-classification reward model directory (same tokenizer).")
@output_option("Directory for the trained policy, metrics.jsonl and ppo_config.yaml.",
               directory=True, path_type=str)
@click.option("--config", "config_file", default=None, type=click.Path(dir_okay=False),
              help="YAML file of PPOConfig fields; options given here override it.")
@click.option("--total-episodes", type=click.IntRange(1), default=None,
              help="Prompts to train on in all (default: one pass over the prompts).")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Episodes per update.")
@click.option("--num-ppo-epochs", type=click.IntRange(1), default=None,
              help="Optimisation epochs per rollout batch.")
@click.option("--kl-coef", type=click.FloatRange(min=0), default=None, help="KL penalty weight.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Learning rate.")
@click.option("--response-length", type=click.IntRange(1), default=None,
              help="Maximum new tokens per response.")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Sampling temperature.")
@click.option("--seed", type=int, default=None, help="Random seed.")
@click.option("--device", default=None,
              help="auto (default: cuda if available, else cpu), cpu, cuda or cuda:N.")
@click.option("--bf16/--no-bf16", default=None,
              help="bf16 autocast for forward passes (default: on for CUDA devices that support "
                   "it, off on CPU).")
@click.option("--alarm-corr", type=click.FloatRange(-1, 1), default=None,
              help="Alarm when the score-length correlation of a batch exceeds this (0.6).")
@click.option("--alarm-kl", type=click.FloatRange(min=0), default=None,
              help="Alarm when the KL to the reference (nats per token) exceeds this (1.0).")
@click.option("--stop-on-alarm", is_flag=True, default=None,
              help="Stop at the first alarm, before training on that batch; the saved policy "
                   "is the last one without an alarm.")
@click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop (saving the policy) after the update that passes this wall time.")
@click.option("--plot", is_flag=True, help=f"Also write {PLOT_FILE} (reward and KL curves).")
def train_ppo(prompts_path: str, policy: str, reward_model: str, output: str,
              config_file: str | None, plot: bool, **options: Any) -> None:
    """Train a policy with PPO against a reward model."""
    from align.ppo import loop as ppo

    config = build_config(config_file, options)
    on_command_line = options.get("device") is not None or options.get("bf16") is not None
    check_device(config, "options" if on_command_line or not config_file else config_file)
    prompts = load_prompts(prompts_path)
    policy_dir = resolve_model_dir(policy, "--policy")
    reward_dir = resolve_model_dir(reward_model, "--reward-model")
    output_dir = Path(output)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise UserInputError(f"{output_dir}: output directory exists and is not empty")
    from align.train.progress import TrainingBar  # imports transformers: only when training

    bar = TrainingBar("train ppo", math.ceil((config.total_episodes or len(prompts))
                                             / config.batch_size), unit="update")
    try:
        result = ppo.train_ppo(config, policy=policy_dir, reward_model=reward_dir,
                               prompts=prompts, output_dir=output_dir,
                               on_update=lambda row: bar.update(int(row["update"]), row))
    finally:
        bar.close()
    if int(os.environ.get("RANK", "0")) != 0:
        return
    if plot:
        plot_curves(result.metrics, output_dir / PLOT_FILE)
    first, last = result.metrics[0], result.metrics[-1]
    for row in result.metrics:
        for message in row["alarms"]:
            click.echo(f"ALARM at update {row['update']}: {message}")
    click.echo(f"saved policy to {output_dir}: {len(result.metrics)} updates, "
               f"score {first['score']:.3f} -> {last['score']:.3f}, KL {last['kl']:.3f}, "
               f"{result.seconds:.1f}s" + (" (stopped on alarm)" if result.stopped_on_alarm
                                           else " (stopped at --max-minutes)"
                                           if result.timed_out else ""))


if __name__ == "__main__":
    train_ppo()
