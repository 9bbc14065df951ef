"""Training progress on the terminal: a rich bar of steps with the latest loss, reward and KL.

TRL's trainers print every log entry as a raw dict (transformers' ``PrinterCallback`` /
``ProgressCallback``); we remove those and show one bar instead, while every entry still goes
to ``metrics.jsonl`` (``MetricsCallback``, the watch of the online trainers, the PPO loop).
Off a terminal nothing is drawn: the command's summary line is the only output. The project
PPO loop feeds the same display through its ``on_update`` hook. It also owns the one warning
filter for a known-harmless library warning (see ``quiet_library_warnings``).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from transformers import TrainerCallback

# What the bar shows of a log entry, first match per group: loss, a reward, a KL.
SHOWN = (("loss",), ("rewards/accuracies", "reward", "score", "rewards/margins", "rlhf_reward"),
         ("objective/kl", "kl", "kl_per_token"))


def summary_fields(row: dict[str, Any]) -> str:
    """``loss 0.6931  reward 0.5000  kl 0.0100`` from a metrics row (what it has of them)."""
    parts = []
    for group in SHOWN:
        name = next((k for k in group if isinstance(row.get(k), int | float)), None)
        if name is not None:
            parts.append(f"{name} {row[name]:.4f}")
    return "  ".join(parts)


class TrainingBar:
    """A bar of steps (or PPO updates) with the latest metrics; draws only on a terminal."""

    def __init__(self, label: str, total: int | None, stream: TextIO | None = None,
                 unit: str = "step") -> None:
        stream = stream or sys.stderr
        self.progress: Progress | None = None
        if not stream.isatty():
            return
        self.progress = Progress(
            TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn(unit + "s"),
            TextColumn("{task.fields[shown]}"), TimeRemainingColumn(),
            console=Console(file=stream), transient=False)
        self.task = self.progress.add_task(label, total=total, shown="")
        self.progress.start()

    def update(self, step: int, row: dict[str, Any], total: int | None = None) -> None:
        if self.progress is None:
            return
        fields = summary_fields(row)
        self.progress.update(self.task, completed=step, **({"total": total} if total else {}),
                             **({"shown": fields} if fields else {}))

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class TrainingBarCallback(TrainerCallback):
    """Drive a ``TrainingBar`` from a transformers/TRL trainer (rank 0 only)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: TrainingBar | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.bar = TrainingBar(self.label, state.max_steps or None)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and logs:
            self.bar.update(state.global_step, logs, state.max_steps or None)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()


def replace_printers(trainer: Any, label: str) -> Any:
    """Swap transformers' per-step dict printers for one ``TrainingBarCallback``."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(TrainingBarCallback(label))
    return trainer


@contextmanager
def quiet_library_warnings() -> Iterator[None]:
    """Run a block with known-harmless library warnings silenced, and only those."""
    with warnings.catch_warnings():
        # TRL reads model.is_gradient_checkpointing, which transformers 4.5x deprecated in
        # favour of is_activation_checkpointing: every train command opened with this
        # FutureWarning although nothing we or the user can change triggers it.
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated",
                                category=FutureWarning)
        yield
