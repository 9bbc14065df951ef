"""`rlaif train sft|rm|dpo`: parse options, call ``align.train.trainers``, print a summary.

Options map one-to-one onto fields of TRL's configs (``--lr`` -> ``learning_rate``,
``--epochs`` -> ``num_train_epochs``, ...); everything else goes in ``--config FILE.yaml``
with TRL's own field names. Under ``torchrun`` every rank runs the command; only rank 0 prints.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from datagen.cli_checks import model_dir_option, output_option


def train_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by the three training commands."""
    options = [
        click.option("--data", required=True, type=click.Path(exists=True),
                     help="Export (JSONL or dataset directory; its 'train' split)."),
        output_option("Directory for the model, tokenizer, metrics.jsonl (and curves.png).",
                      directory=True, path_type=str),
        click.option("--max-steps", type=int, default=None, help="max_steps"),
        click.option("--epochs", type=float, default=None, help="num_train_epochs"),
        click.option("--lr", type=float, default=None, help="learning_rate"),
        click.option("--seed", type=int, default=None, help="seed"),
        click.option("--lora", is_flag=True, help="Train a LoRA adapter (merged when saved)."),
        click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
                     help="YAML of TRL config fields (SFTConfig / RewardConfig / DPOConfig)."),
        click.option("--plot", is_flag=True, help="Also draw loss/reward curves to curves.png."),
    ]
    return functools.reduce(lambda f, opt: opt(f), reversed(options), fn)


def run(kind: str, data: str, model: str, output: str, max_steps: int | None,
        epochs: float | None, lr: float | None, seed: int | None, lora: bool,
        config_file: str | None, plot: bool, **extra: Any) -> None:
    """Map the shared options onto TRL config fields, train, and print on rank 0."""
    from align.train.trainers import train

    summary = train(
        kind, data, model, output, config_file=config_file, lora=lora, plot=plot,
        max_steps=max_steps, num_train_epochs=epochs, learning_rate=lr, seed=seed, **extra,
    )
    if summary["is_main_process"]:
        click.echo(
            f"trained {kind}: {summary['steps']} steps, train loss {summary['train_loss']:.4f}; "
            f"saved to {summary['output_dir']} (metrics: {summary['metrics']}"
            + (f", plot: {summary['plot']})" if "plot" in summary else ")")
        )


POLICY_HELP = "The policy to start from: 'default' (the embedded model) or a model directory."


@click.command("sft")
@train_options
@model_dir_option("--policy", "model", POLICY_HELP, default="default", show_default=True)
def train_sft(**options: Any) -> None:
    """Supervised fine-tuning on `messages` rows (TRL SFTTrainer)."""
    run("sft", **options)


@click.command("rm")
@train_options
@model_dir_option("--model-dir", "model", "The model the reward model starts from: 'default' (the "
                  "embedded model) or a model directory.", default="default", show_default=True)
@click.option("--center-rewards", type=float, default=None,
              help="center_rewards_coefficient (e.g. 0.01).")
def train_rm(center_rewards: float | None, **options: Any) -> None:
    """Train a reward model (sequence-classification head) on preference pairs, using `margin`."""
    run("rm", center_rewards_coefficient=center_rewards, **options)


def _loss_types(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]):
    names = [name.strip() for item in value for name in item.split(",") if name.strip()]
    return names or None


@click.command("dpo")
@train_options
@model_dir_option("--policy", "model", POLICY_HELP, default="default", show_default=True)
@click.option("--beta", type=float, default=None, help="beta (KL strength).")
@click.option("--loss-type", multiple=True, callback=_loss_types,
              help="TRL DPO loss type(s), repeatable or comma-separated, e.g. sigmoid,sft.")
@click.option("--precompute-ref", is_flag=True, default=None,
              help="Compute reference log-probs once before training (no reference model kept).")
def train_dpo(beta: float | None, loss_type: list[str] | None, precompute_ref: bool | None,
              **options: Any) -> None:
    """Direct preference optimisation on preference pairs (TRL DPOTrainer)."""
    run("dpo", beta=beta, loss_type=loss_type, precompute_ref_log_probs=precompute_ref,
        **options)
