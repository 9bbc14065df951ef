"""Where a training run keeps its logged metrics: ``metrics.jsonl`` in its output folder.

Every trainer appends one JSON object per log entry there (TRL's trainers through
``align.train.trainers.MetricsCallback``, the project PPO loop once per update), and `rlaif
report` finds runs by that file name and draws their curves from it. The name and the line format
are defined once here, in a module without heavy imports, so the writers and the readers cannot
disagree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datagen.jsonl import read_objects

METRICS_FILE = "metrics.jsonl"


def append_metrics(path: str | Path, entry: dict[str, Any]) -> None:
    """Append one log entry as a JSON line."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")


def read_metrics(path: str | Path, skipped: list[str] | None = None) -> list[dict[str, Any]]:
    """The log entries of a metrics file, in order. A run killed mid-write leaves a cut last
    line: with a ``skipped`` list such lines are noted there and left out instead of raising."""
    path = Path(path)
    text = path.read_text(encoding="utf-8", errors="replace")
    return [line.obj for line in read_objects(path, text, empty_message=None, skipped=skipped)]
