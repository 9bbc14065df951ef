"""`rlaif train grpo|rloo|online-dpo`: parse options, call ``align.rl.online``, print a summary.

Options map onto TRL config fields (``--lr`` -> ``learning_rate``, ``--num-generations``,
``--max-completion-length`` (``max_new_tokens`` for online DPO), ``--beta``...); anything else
goes in ``--config FILE.yaml`` with TRL's own field names. Rewards are repeatable
``--reward KIND[:ARGS][=WEIGHT]`` options (see ``align.rl.rewards``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from align.rl.rewards import parse_reward
from align.rl.watch import Thresholds
from datagen.cli_checks import db_option, model_dir_option, output_option


def online_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by the three online training commands."""
    options = [
        click.option("--prompts", required=True, type=click.Path(exists=True, dir_okay=False),
                     help="Prompts JSONL: `rlaif export prompts` / `generate constrained` "
                          "output, or IFEval-form rows (instruction_id_list, kwargs)."),
        model_dir_option("--policy", "model", "The policy to start from: 'default' (the "
                         "embedded model) or a model directory.", default="default",
                         show_default=True),
        output_option("Directory for checkpoints, the model, metrics.jsonl, rl_run.json. "
                      "One holding checkpoints is resumed.", directory=True, path_type=str),
        click.option("--reward", "rewards", multiple=True,
                     help="KIND[:ARGS][=WEIGHT], repeatable: verify, verify:strict, "
                          "judge[:base-url=URL,model=NAME,api-key-env=VAR,rubric=FILE], "
                          "pairwise[:...] (online-dpo), rm:PATH, length, length:TOKENS."),
        click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
                     help="YAML of TRL config fields (GRPOConfig / RLOOConfig / "
                          "OnlineDPOConfig)."),
        click.option("--max-steps", type=click.IntRange(1), default=None, help="max_steps"),
        click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Stop (with a checkpoint) after this many minutes of training."),
        click.option("--save-steps", type=click.IntRange(1), default=50, show_default=True,
                     help="Checkpoint every N steps (the newest two are kept)."),
        click.option("--lr", type=float, default=None, help="learning_rate"),
        click.option("--seed", type=int, default=None, help="seed"),
        click.option("--batch-size", type=click.IntRange(1), default=None,
                     help="per_device_train_batch_size"),
        click.option("--max-completion-length", type=click.IntRange(1), default=None,
                     help="Maximum reply tokens."),
        click.option("--temperature", type=click.FloatRange(min=0, min_open=True),
                     default=None, help="temperature"),
        click.option("--beta", type=click.FloatRange(min=0), default=None,
                     help="beta (KL strength)"),
        click.option("--stop-on-alarm", is_flag=True,
                     help="End the run at the first alarm; the output model is the last "
                          "checkpoint before it."),
        click.option("--alarm-corr", type=click.FloatRange(-1, 1), default=Thresholds.corr,
                     show_default=True, help="Alarm when reward-length correlation exceeds this."),
        click.option("--alarm-kl", type=click.FloatRange(min=0), default=Thresholds.kl,
                     show_default=True, help="Alarm when KL to the reference (nats per token) "
                                             "exceeds this."),
        db_option("Project database (the judge's request ledger)."),
    ]
    return functools.reduce(lambda f, opt: opt(f), reversed(options), fn)


def run(kind: str, rewards: tuple[str, ...], alarm_corr: float, alarm_kl: float,
        max_completion_length: int | None, lr: float | None, batch_size: int | None,
        **options: Any) -> None:
    """Parse rewards and thresholds, train, and print on rank 0."""
    from align.rl.online import train_online

    length_field = "max_new_tokens" if kind == "online-dpo" else "max_completion_length"
    summary = train_online(
        kind, specs=[parse_reward(text) for text in rewards],
        thresholds=Thresholds(corr=alarm_corr, kl=alarm_kl),
        learning_rate=lr, per_device_train_batch_size=batch_size,
        **{length_field: max_completion_length}, **options,
    )
    if not summary["is_main_process"]:
        return
    judged = summary["judge_requests"]
    lines = [f"trained {kind}: {summary['steps']} steps"
             + (f" (resumed from {summary['resumed_from']})" if summary["resumed_from"] else "")
             + f"; metrics: {summary['metrics']}"]
    if judged["requests"]:
        lines.append(f"judge: {judged['requests']} requests ({judged['from_ledger']} from the "
                     f"ledger, {judged['failed']} failed)")
    if summary["alarms"]:
        lines.append(f"alarm at step {summary['alarm_step']}: {'; '.join(summary['alarms'])}")
    if summary["stopped_on_alarm"]:
        lines.append(f"stopped on alarm; model from {summary['model_saved_from']}"
                     if summary["model_saved_from"] else
                     "stopped on alarm before any checkpoint: no model saved")
    elif summary["timed_out"]:
        lines.append("stopped at --max-minutes")
    if summary["model_saved_from"]:
        lines.append(f"saved to {summary['output_dir']}")
    click.echo("\n".join(lines))


@click.command("grpo")
@online_options
@click.option("--num-generations", type=click.IntRange(2), default=None,
              help="Samples per prompt (the group).")
def train_grpo(**options: Any) -> None:
    """Online RL with GRPO (TRL GRPOTrainer) on rewards computed while training."""
    run("grpo", **options)


@click.command("rloo")
@online_options
@click.option("--num-generations", type=click.IntRange(2), default=None,
              help="Samples per prompt (leave-one-out baseline over them).")
def train_rloo(**options: Any) -> None:
    """Online RL with RLOO (TRL RLOOTrainer) on rewards computed while training."""
    run("rloo", **options)


@click.command("online-dpo")
@online_options
def train_online_dpo(**options: Any) -> None:
    """Online DPO (TRL experimental OnlineDPOTrainer): two samples per prompt, the better by
    the rewards (pairwise judge, verifier, rm, ...) is chosen."""
    run("online-dpo", **options)
