"""Online RL with TRL's GRPO, RLOO and online DPO trainers, rewards computed while training.

``train_online`` builds TRL's config the way ``align.train.trainers`` does (device defaults,
then the online defaults below, then ``--config FILE.yaml`` with TRL's own field names, then
command-line values), turns the ``--reward`` specs into reward functions
(``align.rl.rewards``, ``align.rl.judged``) weighted through ``reward_weights``, and runs the
trainer with the reward-hacking watch (``align.rl.callbacks``).

Online defaults: ``beta`` 0.04 for GRPO (TRL's 0.0 keeps no reference model, so there would
be no KL to watch), one pair per micro-batch for online DPO (so that a pair the judge did not
decide is skipped exactly, ``align.rl.undecided``), a checkpoint every ``save_steps`` (two
kept), one log line per step. On a
GPU the trainers run in bf16 when it is supported and generate with vLLM (``use_vllm``,
colocated) when vLLM is installed; on CPU in fp32 with ``use_cpu``.

Resuming: an output directory holding ``checkpoint-N`` folders resumes from the newest one
with transformers' own machinery (model, optimizer, scheduler, RNG states; the seeded sampler
skips the batches already seen, so the data order is the one of an uninterrupted run), and
``metrics.jsonl`` is cut back to that step. With ``stop_on_alarm`` a run that raises an alarm
stops before saving the alarmed step, and the output model is the newest checkpoint before the
alarm (none is saved when the alarm came first).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from align.rl.callbacks import WatchCallback
from align.rl.judged import judge_scorer, open_endpoint, pairwise_scorer
from align.rl.prompts import load_rl_prompts
from align.rl.rewards import (
    RewardSpec,
    RewardTerm,
    length_scorer,
    rm_scorer,
    verify_scorer,
)
from align.rl.undecided import check_batch, skipping_online_dpo
from align.rl.watch import RewardWatch, Thresholds
from align.train.metrics import METRICS_FILE, read_metrics
from align.train.progress import quiet_library_warnings
from align.train.trainers import build_config, resolve_model
from datagen.errors import UserInputError
from datagen.jsonl import atomic_write

KINDS = ("grpo", "rloo", "online-dpo")
RUN_FILE = "rl_run.json"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
# what a checkpoint holds besides the model: left behind when it becomes the output model
TRAINING_STATE = ("optimizer.pt", "scheduler.pt", "trainer_state.json", "training_args.bin")


def online_defaults(kind: str, save_steps: int) -> dict[str, Any]:
    """The defaults this project sets on top of TRL's (see the module docstring)."""
    import torch

    values: dict[str, Any] = {"save_strategy": "steps", "save_steps": save_steps,
                              "save_total_limit": 2, "logging_steps": 1}
    if kind == "grpo":
        values["beta"] = 0.04
    if kind == "online-dpo":  # one pair per micro-batch: see align.rl.undecided
        values["per_device_train_batch_size"] = 1
    if torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None:
        values.update(use_vllm=True, vllm_mode="colocate")
    return values


def checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of the checkpoints in an output directory, oldest first."""
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir()
             if p.is_dir() and (m := CHECKPOINT_RE.match(p.name))]
    return sorted(found)


def resume_point(output_dir: Path) -> Path | None:
    """The checkpoint to resume from, None for a fresh start; a finished or foreign
    non-empty directory is a user error."""
    if (output_dir / RUN_FILE).is_file():
        raise UserInputError(f"{output_dir}: holds a finished run ({RUN_FILE}); "
                             "choose another --output")
    found = checkpoints(output_dir)
    if found:
        return found[-1][1]
    # a run that died before its first checkpoint left at most its metrics: start afresh
    if output_dir.exists() and (not output_dir.is_dir() or any(
            item.name != METRICS_FILE for item in output_dir.iterdir())):
        raise UserInputError(f"{output_dir}: output directory exists, is not empty and holds "
                             "no checkpoint to resume from")
    return None


def trim_metrics(path: Path, last_step: int | None) -> None:
    """Start ``metrics.jsonl`` afresh, or keep only the rows up to a resumed step (a line cut
    by the kill is dropped)."""
    kept = []
    if last_step is not None and path.is_file():
        kept = [row for row in read_metrics(path, skipped=[]) if row.get("step", 0) <= last_step]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        handle.write("".join(json.dumps(row) + "\n" for row in kept))


def make_terms(
    kind: str, specs: list[RewardSpec], watch: RewardWatch, max_tokens: int, db: Path,
    stack: ExitStack,
) -> tuple[list[RewardTerm], list[Any]]:
    """The reward functions for the trainer and the judge endpoints they opened."""
    terms, endpoints = [], []
    for spec in specs:
        if spec.kind == "verify":
            scorer = verify_scorer(spec, watch)
        elif spec.kind == "length":
            scorer = length_scorer(spec, max_tokens)
        elif spec.kind == "rm":
            scorer = rm_scorer(spec)
        else:
            endpoint = open_endpoint(spec, db, stack)
            endpoints.append(endpoint)
            scorer = (judge_scorer if spec.kind == "judge" else pairwise_scorer)(spec, endpoint)
        terms.append(RewardTerm(spec, scorer, watch))
    return terms, endpoints


def check_specs(kind: str, specs: list[RewardSpec], rows: list[dict[str, Any]],
                prompts: str) -> None:
    """Refuse reward lists that cannot work, before any model is loaded."""
    if kind != "online-dpo" and any(spec.kind == "pairwise" for spec in specs):
        raise UserInputError("--reward pairwise: only `rlaif train online-dpo` samples two "
                             "replies per prompt to compare")
    if not specs:
        raise UserInputError("give at least one --reward (verify, judge, pairwise, rm:PATH, "
                             "length)")
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise UserInputError(f"--reward: each kind at most once (got {', '.join(names)})")
    if any(s.kind == "verify" for s in specs) and all(r["constraints"] == "[]" for r in rows):
        raise UserInputError(f"{prompts}: --reward verify needs prompts with constraints "
                             "(constraints or instruction_id_list/kwargs); these have none")


def train_online(
    kind: str, prompts: str | Path, model: str, output: str | Path, specs: list[RewardSpec],
    *, config_file: str | Path | None = None, db: str | Path = "rlaif.db",
    thresholds: Thresholds | None = None, stop_on_alarm: bool = False,
    max_minutes: float | None = None, save_steps: int = 50, **overrides: Any,
) -> dict[str, Any]:
    """Train ``model`` online with ``kind`` on ``prompts`` and the reward ``specs``; returns
    a summary (also written to ``rl_run.json``). ``overrides`` are TRL config fields."""
    output = Path(output)
    rows = load_rl_prompts(prompts)
    check_specs(kind, specs, rows, str(prompts))
    model_dir = resolve_model(model)
    resume = resume_point(output)
    overrides["reward_weights"] = [spec.weight for spec in specs]
    config = build_config(kind, output, config_file, defaults=online_defaults(kind, save_steps),
                          **overrides)
    if kind == "online-dpo":
        check_batch(config)
    with ExitStack() as stack:
        stack.enter_context(quiet_library_warnings())
        tokenizer, watch = make_watch(model_dir, specs)
        max_tokens = config.max_new_tokens if kind == "online-dpo" else \
            config.max_completion_length
        terms, endpoints = make_terms(kind, specs, watch, max_tokens, Path(db), stack)
        callback = WatchCallback(watch, output / METRICS_FILE, thresholds or Thresholds(),
                                 stop_on_alarm, max_minutes)
        trainer = make_trainer(kind, config, model_dir, tokenizer, rows, terms, callback)
        trim_metrics(output / METRICS_FILE, int(resume.name.split("-")[1]) if resume else None)
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        saved = _save(trainer, output, callback, stop_on_alarm)
    summary = {
        "kind": kind, "steps": trainer.state.global_step, "output_dir": str(output),
        "resumed_from": str(resume) if resume else None, "model_saved_from": saved,
        "alarm_step": callback.alarm_step, "alarms": callback.alarm_messages,
        "stopped_on_alarm": bool(stop_on_alarm and callback.alarm_step is not None),
        "timed_out": callback.timed_out, "rewards": [spec.name for spec in specs],
        "pairs_skipped": getattr(trainer, "skipped_pairs", None),
        "judge_requests": {key: sum(e.stats[key] for e in endpoints)
                           for key in ("requests", "from_ledger", "failed")},
        "metrics": str(output / METRICS_FILE),
        "is_main_process": trainer.is_world_process_zero(),
    }
    if trainer.is_world_process_zero():
        with atomic_write(output / RUN_FILE) as handle:
            handle.write(json.dumps(summary, indent=1) + "\n")
    return summary


def make_watch(model_dir: str, specs: list[RewardSpec]) -> tuple[Any, RewardWatch]:
    """The policy's tokenizer and a watch that knows its end and padding tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    watch = RewardWatch({spec.name: spec.weight for spec in specs}, {tokenizer.eos_token_id},
                        tokenizer.pad_token_id)
    return tokenizer, watch


def make_trainer(kind: str, config: Any, model_dir: str, tokenizer: Any,
                 rows: list[dict[str, Any]], terms: list[RewardTerm],
                 callback: WatchCallback) -> Any:
    """TRL's trainer for ``kind``, with the watch in place of transformers' progress bar."""
    from datasets import Dataset

    from align.train.progress import replace_printers
    from align.train.trainers import trl_classes

    _, trainer_class = trl_classes(kind)
    if kind == "online-dpo":
        trainer_class = skipping_online_dpo(trainer_class)
    trainer = trainer_class(model=model_dir, reward_funcs=terms, args=config,
                            train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                            callbacks=[callback])
    return replace_printers(trainer, f"train {kind}")


def _save(trainer: Any, output: Path, callback: WatchCallback, stop_on_alarm: bool) -> str | None:
    """Save the output model; returns where it came from ("final", a checkpoint, or None)."""
    if not (stop_on_alarm and callback.alarm_step is not None):
        trainer.save_model(str(output))
        if trainer.is_world_process_zero():
            trainer.processing_class.save_pretrained(str(output))
        return "final"
    good = [path for step, path in checkpoints(output) if step < callback.alarm_step]
    if not good or not trainer.is_world_process_zero():
        return None
    for item in good[-1].iterdir():
        if item.is_file() and item.name not in TRAINING_STATE and not item.name.startswith(
                "rng_state"):
            shutil.copy2(item, output / item.name)
    return good[-1].name
