"""Train a policy (SFT, DPO) or a reward model with TRL's own trainers, configs and data formats.

One function, ``train``, builds TRL's config (``SFTConfig`` / ``RewardConfig`` / ``DPOConfig``)
from device defaults, an optional YAML file whose keys are that class's own field names (an
unknown key is a user error naming the key and its line) and command-line overrides, in that
order of precedence, then runs the matching trainer, writes the log history to
``metrics.jsonl`` through a callback and saves model and tokenizer. Device defaults: on CPU
fp32, no gradient checkpointing, ``use_cpu=True`` (so ``torchrun`` runs real data-parallel
training over gloo instead of N independent jobs), no pinned memory; on a GPU bf16 when
supported. Everywhere: ``report_to="none"``, ``save_strategy="no"`` (the model is saved once,
at the end) and ``logging_steps=1``. With LoRA (peft) the adapter is merged before saving, so
the output directory is always a plain model that ``rlaif eval``, PPO or DPO can load.
``trl_classes`` and ``build_config`` also serve the online trainers (GRPO, RLOO, online DPO) of
``align.rl.online``, which add their own defaults between the device's and the YAML file's.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainerCallback

from align.export.datasets import load_split, require_columns
from align.train.metrics import METRICS_FILE, append_metrics, read_metrics
from align.train.progress import quiet_library_warnings, replace_printers
from datagen.errors import UserInputError

KINDS = ("sft", "rm", "dpo")
# TRL 1.16's DPO loss names (DPOConfig.loss_type help); an unknown one only fails mid-training.
DPO_LOSS_TYPES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
    "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)
CURVES_FILE = "curves.png"


def trl_classes(kind: str) -> tuple[type, type]:
    """(config class, trainer class) for a training kind; imports TRL on first use. Online DPO
    lives in TRL's experimental package, whose import warning is silenced."""
    import trl

    if kind == "online-dpo":
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
        from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

        return OnlineDPOConfig, OnlineDPOTrainer
    return {
        "sft": (trl.SFTConfig, trl.SFTTrainer),
        "rm": (trl.RewardConfig, trl.RewardTrainer),
        "dpo": (trl.DPOConfig, trl.DPOTrainer),
        "grpo": (trl.GRPOConfig, trl.GRPOTrainer),
        "rloo": (trl.RLOOConfig, trl.RLOOTrainer),
    }[kind]


def device_defaults() -> dict[str, Any]:
    """Config values that suit the hardware we are on (see the module docstring)."""
    import torch

    values: dict[str, Any] = {"report_to": "none", "save_strategy": "no", "logging_steps": 1}
    if torch.cuda.is_available():
        values["bf16"] = torch.cuda.is_bf16_supported()
    else:
        values.update(bf16=False, use_cpu=True, gradient_checkpointing=False,
                      dataloader_pin_memory=False)
    return values


def read_config_file(path: str | Path, config_class: type) -> dict[str, Any]:
    """Read a YAML mapping of ``config_class`` field names to values; unknown keys are errors."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        values = yaml.safe_load(text)
    except OSError as err:
        raise UserInputError(f"{path}: cannot read ({err.strerror})") from err
    except yaml.MarkedYAMLError as err:
        line = err.problem_mark.line + 1 if err.problem_mark else 1
        raise UserInputError(f"{path}:{line}: invalid YAML ({err.problem})") from err
    except yaml.YAMLError as err:
        raise UserInputError(f"{path}: invalid YAML ({err})") from err
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UserInputError(f"{path}:1: expected a mapping of {config_class.__name__} fields")
    known = {field.name for field in dataclasses.fields(config_class) if field.init}
    for key_node, _ in node.value:
        if key_node.value not in known:
            raise UserInputError(
                f"{path}:{key_node.start_mark.line + 1}: unknown key '{key_node.value}' "
                f"for trl.{config_class.__name__}"
            )
    return values


def build_config(
    kind: str, output_dir: str | Path, config_file: str | Path | None = None, *,
    defaults: dict[str, Any] | None = None, **overrides: Any
):
    """TRL's config for ``kind``: device defaults < ``defaults`` < YAML file < overrides
    (None = not given)."""
    config_class, _ = trl_classes(kind)
    values = device_defaults() | (defaults or {})
    if config_file is not None:
        values.update(read_config_file(config_file, config_class))
    values.update({key: value for key, value in overrides.items() if value is not None})
    values["output_dir"] = str(output_dir)
    try:
        config = config_class(**values)
    except (TypeError, ValueError) as err:
        raise UserInputError(f"invalid {config_class.__name__} settings: {err}") from err
    if kind == "dpo":
        unknown = [name for name in config.loss_type if name not in DPO_LOSS_TYPES]
        if unknown:
            raise UserInputError(
                f"unknown DPO loss type {unknown[0]!r}; choose from {', '.join(DPO_LOSS_TYPES)}"
            )
    return config


def resolve_model(model: str) -> str:
    """A local model directory: ``default`` is the embedded default model (converted copy)."""
    if model == "default":
        try:
            from datagen.serve.default_model import default_model_dir
        except ModuleNotFoundError as err:
            raise UserInputError(
                f"--model default needs datagen.serve.default_model ({err.msg}); pass --model DIR"
            ) from err
        return str(default_model_dir())
    if not (Path(model) / "config.json").is_file():
        raise UserInputError(f"{model}: not a model directory (no config.json)")
    return model


def lora_config(kind: str):
    """LoRA on every linear layer (r=8, alpha=16); the reward head is trained in full."""
    from peft import LoraConfig

    task_type = "SEQ_CLS" if kind == "rm" else "CAUSAL_LM"
    return LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                      task_type=task_type)


class MetricsCallback(TrainerCallback):
    """Append each log entry of the trainer (with its step) to a JSONL file, on rank 0 only."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            append_metrics(self.path, {"step": state.global_step, **logs})


def load_training_data(kind: str, path: str | Path):
    """The train split of an export, checked for the columns the trainer needs."""
    data = load_split(path, "train")
    if kind == "sft":
        require_columns(data, path, ("messages",), ("text",), ("prompt", "completion"))
    else:
        require_columns(data, path, ("chosen", "rejected"))
    return data


def train(
    kind: str,
    data: str | Path,
    model: str,
    output_dir: str | Path,
    *,
    config_file: str | Path | None = None,
    lora: bool = False,
    plot: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Train ``kind`` (sft, rm, dpo) on an export and save the model; returns a summary.

    ``overrides`` are field names of TRL's config (``max_steps``, ``learning_rate``, ``beta``,
    ``loss_type``, ``precompute_ref_log_probs``, ``center_rewards_coefficient``, ``seed``...).
    The DPO reference model is a frozen copy of ``model`` (or the adapter-disabled model with
    LoRA); with ``precompute_ref_log_probs`` its log-probs are computed once before training.
    """
    from transformers import AutoTokenizer

    config = build_config(kind, output_dir, config_file, **overrides)
    model_dir = resolve_model(model)
    dataset = load_training_data(kind, data)
    _, trainer_class = trl_classes(kind)
    with quiet_library_warnings():
        trainer = replace_printers(trainer_class(
            model=model_dir,
            args=config,
            train_dataset=dataset,
            processing_class=AutoTokenizer.from_pretrained(model_dir),
            peft_config=lora_config(kind) if lora else None,
            callbacks=[MetricsCallback(Path(output_dir) / METRICS_FILE)],
        ), f"train {kind}")
        result = trainer.train()
    save_model(trainer, output_dir)
    summary = {
        "kind": kind,
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "output_dir": str(output_dir),
        "metrics": str(Path(output_dir) / METRICS_FILE),
        "is_main_process": trainer.is_world_process_zero(),
    }
    if plot and trainer.is_world_process_zero():
        summary["plot"] = str(plot_metrics(Path(output_dir) / METRICS_FILE,
                                           Path(output_dir) / CURVES_FILE))
    return summary


def save_model(trainer, output_dir: str | Path) -> None:
    """Save model and tokenizer; a LoRA adapter is merged into the base weights first."""
    from peft import PeftModel

    model = trainer.accelerator.unwrap_model(trainer.model)
    if not isinstance(model, PeftModel):
        trainer.save_model(str(output_dir))
        return
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        merged = model.merge_and_unload()
        merged.save_pretrained(str(output_dir))
        trainer.processing_class.save_pretrained(str(output_dir))


def plot_metrics(metrics_path: str | Path, png_path: str | Path) -> Path:
    """Draw loss and reward curves from ``metrics.jsonl`` into one PNG (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = read_metrics(metrics_path)
    entries = [entry for entry in entries if "loss" in entry]  # drop the final summary entry
    reward_keys = sorted({
        key for entry in entries for key in entry
        if key.startswith("rewards/") or key in ("mean_reward", "margin", "accuracy")
    })
    panels = 2 if reward_keys else 1
    figure, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.5), squeeze=False)
    steps = [entry["step"] for entry in entries]
    axes[0][0].plot(steps, [entry["loss"] for entry in entries])
    axes[0][0].set(xlabel="step", ylabel="loss", title="training loss")
    for key in reward_keys:
        axes[0][1].plot(steps, [entry.get(key, float("nan")) for entry in entries], label=key)
    if reward_keys:
        axes[0][1].set(xlabel="step", title="rewards")
        axes[0][1].legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(png_path)
    plt.close(figure)
    return Path(png_path)
