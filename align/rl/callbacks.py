"""The transformers callback that runs the watch inside TRL's online trainers.

On each log entry it drains the ``RewardWatch``, appends one row to ``metrics.jsonl`` (rank 0),
prints alarms and, with ``stop_on_alarm``, stops the run without saving the alarmed step, so
the newest checkpoint left is the last good one. It also ends the run after ``max_minutes``
(saving a checkpoint first) and draws the progress bar with the mean reward and KL, in place
of transformers' own bar.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm
from transformers import TrainerCallback

from align.rl.watch import RewardWatch, Thresholds, alarms, step_row
from align.train.metrics import append_metrics


class WatchCallback(TrainerCallback):
    """Metrics rows, alarms, the time limit and the progress bar of an online run."""

    def __init__(self, watch: RewardWatch, metrics_path: Path, thresholds: Thresholds,
                 stop_on_alarm: bool = False, max_minutes: float | None = None) -> None:
        self.watch, self.metrics_path, self.thresholds = watch, metrics_path, thresholds
        self.stop_on_alarm, self.max_minutes = stop_on_alarm, max_minutes
        self.alarm_step: int | None = None
        self.alarm_messages: list[str] = []
        self.timed_out = False
        self.started = time.monotonic()
        self.bar: Any = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.monotonic()
        if state.is_world_process_zero:
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="steps",
                            dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)
        if self.max_minutes is not None and (time.monotonic() - self.started) / 60 >= \
                self.max_minutes:
            self.timed_out = True
            control.should_training_stop = True
            control.should_save = self.alarm_step is None

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "train_runtime" in logs:  # the closing summary entry, not a step
            return
        row = step_row(state.global_step, logs, self.watch.drain())
        found = alarms(row, self.thresholds)
        row["alarms"] = found
        if state.is_world_process_zero:
            append_metrics(self.metrics_path, row)
            self._show(row, found, state.global_step)
        if found and self.alarm_step is None:
            self.alarm_step, self.alarm_messages = state.global_step, found
        if found and self.stop_on_alarm:
            control.should_training_stop = True
            control.should_save = False

    def _show(self, row: dict[str, Any], found: list[str], step: int) -> None:
        if self.bar is None:
            return
        postfix = {"reward": row.get("reward/mean"), "kl": row.get("kl")}
        self.bar.set_postfix({k: f"{v:.3f}" for k, v in postfix.items() if v is not None})
        for message in found:
            self.bar.write(f"ALARM at step {step}: {message}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
