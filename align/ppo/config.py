"""The project PPO's settings: one flat dataclass of named values, and its checks.

Kept apart from the loop (``align/ppo/loop.py``) so the CLI can build and validate a config, and
report a bad key or value by name, before torch and transformers are imported (so the device is
checked here only by its spelling; ``align.ppo.loop.resolve_device`` checks that it exists).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

KL_ESTIMATORS = ("k1", "k3")
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


@dataclass
class PPOConfig:
    """Every PPO setting, flat; defaults are TRL 1.12's unless a comment says otherwise.

    Example: ``PPOConfig(total_episodes=1024, batch_size=16, response_length=32, kl_coef=0.05)``.
    """

    learning_rate: float = 3e-6  # AdamW learning rate (policy and value model share one optimiser)
    lr_schedule: str = "linear"  # "linear" decays to 0 over the run (as TRL), or "constant"
    adam_eps: float = 1e-8  # AdamW epsilon (TrainingArguments default; weight decay is 0)
    max_grad_norm: float | None = 1.0  # clip the joint gradient norm; None = off (TRL 1.12: off)
    batch_size: int = 8  # episodes (prompts) per update, over all processes
    total_episodes: int | None = None  # None = one pass over the prompts; updates = ceil(/batch)
    num_ppo_epochs: int = 4  # optimisation epochs over each rollout batch, reshuffled each time
    num_mini_batches: int = 1  # optimiser steps per PPO epoch; must divide the local batch
    gradient_accumulation_steps: int = 1  # micro-batches per mini-batch (memory only)
    rollout_forward_batch_size: int = 64  # sequences per no-grad forward during the rollout
    response_length: int = 53  # maximum new tokens per response
    temperature: float = 0.7  # sampling temperature; logits are divided by (T + 1e-7)
    stop_token: str | None = "eos"  # "eos" cuts responses after the eos token; None never cuts
    missing_eos_penalty: float | None = None  # subtracted from the score of responses without eos
    kl_coef: float = 0.05  # weight of the per-token KL penalty in the reward
    kl_estimator: str = "k1"  # "k1" (log ratio) or "k3" ((rho - 1) - log rho, never negative)
    whiten_rewards: bool = False  # whiten per-token rewards (keeping their mean) before GAE
    cliprange: float = 0.2  # policy ratio clip epsilon
    vf_coef: float = 0.1  # weight of the value loss
    cliprange_value: float = 0.2  # how far new values may move from rollout values unclipped
    gamma: float = 1.0  # discount
    lam: float = 0.95  # GAE lambda
    seed: int = 0  # seeds sampling, prompt order and mini-batch shuffles (rank is mixed in)
    # project settings, not TRL's: where to run and in which precision
    device: str = "auto"  # "auto" (cuda if available, else cpu), "cpu", "cuda" or "cuda:N";
    # under torchrun "auto" and "cuda" mean cuda:LOCAL_RANK
    bf16: bool | None = None  # bf16 autocast for forward passes; None = on for CUDA devices that
    # support it, off on CPU
    # the reward-hacking watch (align/rl/watch.py), checked on each rollout before its update
    alarm_corr: float = 0.6  # alarm when the batch's score-length correlation exceeds this
    alarm_kl: float = 1.0  # alarm when the KL to the reference (nats per token) exceeds this
    max_minutes: float | None = None  # stop after the update that passes this much wall time
    stop_on_alarm: bool = False  # stop at the first alarm, before that rollout's update, so the
    # saved policy is the last one that raised none


def config_from_dict(values: dict[str, Any]) -> PPOConfig:
    """Build a PPOConfig from a mapping, rejecting unknown keys and wrongly typed values by name
    (``ValueError`` naming the key). Numeric text is accepted for float settings, because YAML
    reads ``3e-6`` (no dot) as a string."""
    fields = {f.name: f for f in dataclasses.fields(PPOConfig)}
    checked = {}
    for key, value in values.items():
        if key not in fields:
            raise ValueError(f"unknown PPO setting {key!r} (known: {', '.join(fields)})")
        checked[key] = _typed(key, value, fields[key].type)
    return PPOConfig(**checked)


def _typed(key: str, value: Any, type_name: str) -> Any:
    kinds = [part.strip() for part in type_name.split("|")]  # e.g. "float | None"
    if value is None and "None" in kinds:
        return None
    if isinstance(value, bool):
        ok = "bool" in kinds
    elif isinstance(value, int):
        ok = "int" in kinds or "float" in kinds
    elif isinstance(value, float):
        ok = "float" in kinds
    elif isinstance(value, str) and "float" in kinds:
        try:
            return float(value)
        except ValueError:
            ok = False
    else:
        ok = isinstance(value, str) and "str" in kinds
    if not ok:
        raise ValueError(f"key {key!r}: {value!r} is not a {type_name}")
    return value


def check_config(config: PPOConfig, world_size: int = 1) -> None:
    """Raise ``ValueError`` naming the setting when values are out of range or do not divide."""
    if config.batch_size < 1 or config.batch_size % world_size:
        raise ValueError(f"batch_size {config.batch_size} must be a positive multiple of the "
                         f"number of processes ({world_size})")
    local = config.batch_size // world_size
    if config.num_mini_batches < 1 or local % config.num_mini_batches:
        raise ValueError(f"num_mini_batches {config.num_mini_batches} must divide the "
                         f"per-process batch {local}")
    mini = local // config.num_mini_batches
    if config.gradient_accumulation_steps < 1 or mini % config.gradient_accumulation_steps:
        raise ValueError(f"gradient_accumulation_steps {config.gradient_accumulation_steps} "
                         f"must divide the mini-batch {mini}")
    checks = {
        "kl_estimator": config.kl_estimator in KL_ESTIMATORS,
        "stop_token": config.stop_token in (None, "eos"),
        "lr_schedule": config.lr_schedule in ("linear", "constant"),
        "temperature": config.temperature > 0,
        "response_length": config.response_length >= 1,
        "num_ppo_epochs": config.num_ppo_epochs >= 1,
        "total_episodes": config.total_episodes is None or config.total_episodes >= 1,
        "rollout_forward_batch_size": config.rollout_forward_batch_size >= 1,
        "learning_rate": config.learning_rate > 0,
        "max_minutes": config.max_minutes is None or config.max_minutes > 0,
        "device": DEVICE_PATTERN.fullmatch(str(config.device)) is not None,
    }
    for name, ok in checks.items():
        if not ok:
            hint = " (use auto, cpu, cuda or cuda:N)" if name == "device" else ""
            raise ValueError(f"{name}: {getattr(config, name)!r} is not allowed{hint}")
