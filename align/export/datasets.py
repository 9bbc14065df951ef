"""Turn labelled pairs and stored rows into TRL-ready datasets, and read them back.

TRL's trainers want conversational rows: SFT ``{"messages": [...]}``, preference
``{"prompt": [user messages], "chosen": [assistant message], "rejected": [assistant message]}``
(plus an optional ``margin``), prompt-only ``{"prompt": [user messages]}``. This module builds
those rows from ``rlaif label`` output or from the generators' provider functions, applies pair
hygiene (ties, judge errors, an empty or blank side, identical responses, low-confidence soft
labels; each drop counted by reason), splits train/test by prompt so that no prompt is in both,
and writes JSONL or a saved Hugging Face dataset through a temporary path and a rename.

Margin: with a soft label ``p_a`` = P(response A is better), ``p_chosen`` is ``p_a`` or
``1 - p_a``, clipped to ``[0.5, MARGIN_P_MAX]``, and the margin is ``logit(p_chosen)``, i.e.
0 (plain Bradley-Terry loss) up to ``logit(0.95) ≈ 2.94``. The cap stops an over-confident judge
(p = 1) from asking for an unbounded reward gap; the floor keeps a label that disagrees with its
own ``p_a`` from loosening the loss. Pairs without ``p_a`` get margin 0 when others have one.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import random
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from datagen.errors import UserInputError
from datagen.ids import content_id, pair_id
from datagen.jsonl import ObjectLine, atomic_write, read_objects, read_utf8

MARGIN_P_MAX = 0.95
DROP_REASONS = ("error", "tie", "empty", "identical", "low_confidence")
ROLES = ("system", "user", "assistant")

# source name -> "module:function" of the provider that reads the project DB.
SFT_SOURCES = {
    "self-instruct": "datagen.self_instruct.generate:sft_examples",
    "flan": "datagen.flan.render:sft_examples",
    "constitutional": "datagen.constitutional.loop:sft_examples",
}
PREFERENCE_SOURCES = {"constitutional": "datagen.constitutional.loop:preference_pairs"}

Row = dict[str, Any]


# --- reading inputs -------------------------------------------------------------------------


def read_jsonl(path: str | Path) -> Iterator[ObjectLine]:
    """The objects of a labels file or an exported split, with ``FILE:LINE`` errors (a JSON
    error reads "invalid JSON", as exports have always worded it)."""
    path = Path(path)
    return read_objects(path, read_utf8(path), empty_message=None, not_json="invalid JSON")


def check_messages(messages: Any, where: str) -> list[Row]:
    """Validate a chat as a non-empty list of {role, content} dicts and return a clean copy."""
    if not isinstance(messages, list) or not messages:
        raise UserInputError(f"{where}: messages must be a non-empty list")
    clean = []
    for message in messages:
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise UserInputError(f"{where}: each message needs exactly 'role' and 'content'")
        if message["role"] not in ROLES or not isinstance(message["content"], str):
            raise UserInputError(f"{where}: bad message role or content: {message!r:.80}")
        clean.append({"role": message["role"], "content": message["content"]})
    return clean


def as_prompt(prompt: Any, where: str) -> list[Row]:
    """A prompt (text or chat messages) as TRL's conversational prompt, ending with a user turn."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise UserInputError(f"{where}: empty prompt")
        return [{"role": "user", "content": prompt}]
    messages = check_messages(prompt, where)
    if messages[-1]["role"] != "user":
        raise UserInputError(f"{where}: a prompt must end with a user message")
    return messages


def as_completion(response: Any, where: str, field: str) -> list[Row]:
    """A response (text or one assistant message in a list) as TRL's completion."""
    if isinstance(response, str):
        return [{"role": "assistant", "content": response}]
    messages = check_messages(response, f"{where}: {field}")
    if [m["role"] for m in messages] != ["assistant"]:
        raise UserInputError(f"{where}: {field} must be text or one assistant message")
    return messages


def prompt_key(prompt: list[Row]) -> str:
    """Canonical text of a prompt, used to group rows for the train/test split."""
    return json.dumps(prompt, sort_keys=True, ensure_ascii=False)


# --- pairs from `rlaif label` output --------------------------------------------------------


def margin_from_p(p_chosen: float) -> float:
    """logit(p_chosen) with p_chosen clipped to [0.5, MARGIN_P_MAX] (see module docstring)."""
    p = min(max(p_chosen, 0.5), MARGIN_P_MAX)
    return math.log(p / (1 - p))


def _label_p_a(obj: Row, where: str) -> float | None:
    p_a = obj.get("p_a")
    if p_a is None:
        return None
    if isinstance(p_a, bool) or not isinstance(p_a, int | float) or not 0 <= p_a <= 1:
        raise UserInputError(f"{where}: p_a must be a number between 0 and 1, got {p_a!r}")
    return float(p_a)


def _label_reason(obj: Row, p_a: float | None, min_confidence: float | None) -> str | None:
    """Why a label line is dropped (the first reason that applies), or None to keep it."""
    if obj["preferred"] in ("error", "tie"):
        return obj["preferred"]
    if not obj["response_a"].strip() or not obj["response_b"].strip():
        return "empty"  # an empty reply is no answer: never chosen, and no useful rejected
    if obj["response_a"].strip() == obj["response_b"].strip():
        return "identical"
    # The 1e-9 keeps decimal boundaries as written: p_a 0.6 with C 0.2 passes (0.6 - 0.5 < 0.1 in
    # binary floating point).
    if min_confidence is not None and p_a is not None and (
        abs(p_a - 0.5) < min_confidence / 2 - 1e-9
    ):
        return "low_confidence"
    return None


def pairs_from_labels(
    path: str | Path, min_confidence: float | None = None
) -> tuple[list[Row], Counter]:
    """Preference rows from an ``rlaif label`` JSONL file, and the drop counts per reason.

    Rows: ``id``, ``prompt``, ``chosen``, ``rejected`` and, when any kept line has ``p_a``,
    ``margin``. Dropped: ``error`` and ``tie`` verdicts, pairs with an ``empty`` (blank) side,
    ``identical`` responses (after stripping whitespace) and, with ``min_confidence`` C, soft
    labels with |p_a - 0.5| < C/2 (``low_confidence``; lines without ``p_a`` are hard labels and
    pass).
    """
    rows, dropped = [], Counter({reason: 0 for reason in DROP_REASONS})
    for _, where, obj in read_jsonl(path):
        preferred = obj.get("preferred")
        if preferred not in ("a", "b", "tie", "error"):
            raise UserInputError(
                f"{where}: preferred must be a, b, tie or error, got {preferred!r}"
            )
        if preferred == "error":
            dropped["error"] += 1
            continue
        for field in ("response_a", "response_b"):
            if not isinstance(obj.get(field), str):
                raise UserInputError(f"{where}: {field} must be a string")
        prompt = as_prompt(obj.get("prompt"), where)
        p_a = _label_p_a(obj, where)
        reason = _label_reason(obj, p_a, min_confidence)
        if reason:
            dropped[reason] += 1
            continue
        a, b = obj["response_a"], obj["response_b"]
        chosen, rejected = (a, b) if preferred == "a" else (b, a)
        row = {
            # The id of the pair as its labels file names it: over the prompt as given.
            "id": str(obj["id"]) if obj.get("id") is not None else pair_id(obj["prompt"], [a, b]),
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
        }
        if p_a is not None:
            row["margin"] = margin_from_p(p_a if preferred == "a" else 1 - p_a)
        rows.append(row)
    if any("margin" in row for row in rows):
        for row in rows:
            row.setdefault("margin", 0.0)
    return rows, dropped


# --- rows from the project DB (provider functions written with each generator) --------------


def load_provider(target: str) -> Callable[[Any], Iterable[Row]]:
    """Import ``module:function`` lazily; a missing module is a clear user-facing error."""
    module_name, function = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise UserInputError(
            f"{module_name} is not available ({err.msg}); cannot read this source from the DB"
        ) from err
    return getattr(module, function)


def sft_rows(examples: Iterable[Row], origin: str) -> list[Row]:
    """Validated SFT rows ``{"id", "messages"}`` from provider dicts (last turn: assistant)."""
    rows = []
    for index, example in enumerate(examples):
        where = f"{origin}: row {example.get('id', index)}"
        messages = check_messages(example.get("messages"), where)
        if messages[-1]["role"] != "assistant" or "user" not in {m["role"] for m in messages}:
            raise UserInputError(
                f"{where}: SFT messages need a user turn and a final assistant turn"
            )
        row_id = example.get("id")
        rows.append({"id": str(row_id if row_id is not None else content_id(messages)),
                     "messages": messages})
    return rows


def preference_rows(pairs: Iterable[Row], origin: str) -> tuple[list[Row], Counter]:
    """Validated preference rows from provider dicts; pairs with a blank side and identical
    chosen/rejected are dropped."""
    rows, dropped = [], Counter({reason: 0 for reason in DROP_REASONS})
    for index, pair in enumerate(pairs):
        where = f"{origin}: row {pair.get('id', index)}"
        prompt = as_prompt(pair.get("prompt"), where)
        chosen = as_completion(pair.get("chosen"), where, "chosen")
        rejected = as_completion(pair.get("rejected"), where, "rejected")
        if not chosen[0]["content"].strip() or not rejected[0]["content"].strip():
            dropped["empty"] += 1
            continue
        if chosen[0]["content"].strip() == rejected[0]["content"].strip():
            dropped["identical"] += 1
            continue
        row_id = pair.get("id")
        row_id = str(row_id if row_id is not None else content_id(prompt, chosen, rejected))
        rows.append({"id": row_id, "prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows, dropped


def prompt_rows(rows: Iterable[Row]) -> list[Row]:
    """Unique prompt-only rows ``{"id", "prompt"}`` from SFT or preference rows, in order; a
    row's verifier ``constraints`` (a JSON string) travel with it, for online RL rewards."""
    seen, out = set(), []
    for row in rows:
        prompt = row["prompt"] if "prompt" in row else _sft_prompt(row["messages"])
        key = prompt_key(prompt)
        if key not in seen:
            seen.add(key)
            extra = {"constraints": row["constraints"]} if row.get("constraints") else {}
            out.append({"id": content_id(prompt), "prompt": prompt, **extra})
    return out


def _sft_prompt(messages: list[Row]) -> list[Row]:
    """The conversation before the final assistant turn."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last]


# --- split and write ------------------------------------------------------------------------


def split_by_prompt(rows: list[Row], test_size: float, seed: int) -> tuple[list[Row], list[Row]]:
    """Seeded train/test split over unique prompts (a fraction of prompts, not of rows)."""
    if not 0 < test_size < 1:
        raise UserInputError(f"--test-size must be between 0 and 1, got {test_size}")
    keys = sorted({_row_prompt_key(row) for row in rows})
    n_test = max(1, round(test_size * len(keys)))
    if n_test >= len(keys):
        raise UserInputError(
            f"--test-size {test_size}: {len(keys)} distinct prompts is too few to split"
        )
    random.Random(seed).shuffle(keys)
    test_keys = set(keys[:n_test])
    train = [row for row in rows if _row_prompt_key(row) not in test_keys]
    test = [row for row in rows if _row_prompt_key(row) in test_keys]
    return train, test


def _row_prompt_key(row: Row) -> str:
    return prompt_key(row["prompt"] if "prompt" in row else _sft_prompt(row["messages"]))


def sibling_test_path(out: str | Path) -> Path:
    """Where the test split of a JSONL export goes: ``X.jsonl`` -> ``X.test.jsonl``."""
    out = Path(out)
    return out.with_name(out.name.removesuffix(".jsonl") + ".test.jsonl")


def write_rows(splits: dict[str, list[Row]], out: str | Path) -> list[Path]:
    """Write ``{"train": rows}`` or ``{"train": ..., "test": ...}`` to JSONL or a dataset dir.

    ``X.jsonl`` gets the train rows and ``X.test.jsonl`` the test rows; any other path is a
    saved ``datasets.Dataset`` (one split) or ``DatasetDict`` (train/test). Every file is
    written to a temporary sibling first and renamed into place. Returns the paths written.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".jsonl":
        targets = {"train": out, "test": sibling_test_path(out)}
        # Every split is written before any is renamed into place.
        with ExitStack() as stack:
            for split, rows in splits.items():
                handle = stack.enter_context(atomic_write(targets[split]))
                for row in rows:
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        return [targets[split] for split in splits]
    _write_dataset_dir(splits, out)
    return [out]


def _write_dataset_dir(splits: dict[str, list[Row]], out: Path) -> None:
    from datasets import Dataset, DatasetDict

    if out.exists() and not out.is_dir():
        raise UserInputError(f"{out}: exists and is not a directory (use X.jsonl for a file)")
    if len(splits) == 1:
        data = Dataset.from_list(splits["train"])
    else:
        data = DatasetDict({name: Dataset.from_list(rows) for name, rows in splits.items()})
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    data.save_to_disk(str(tmp))
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def write_export(
    rows: list[Row], out: str | Path, test_size: float | None = None, seed: int = 0
) -> dict[str, Any]:
    """Split (when ``test_size`` is given) and write rows; returns counts and paths."""
    if not rows:
        raise UserInputError("nothing to export: no rows left")
    splits = {"train": rows}
    if test_size is not None:
        splits["train"], splits["test"] = split_by_prompt(rows, test_size, seed)
    paths = write_rows(splits, out)
    return {
        "rows": len(rows),
        **{split: len(split_rows) for split, split_rows in splits.items()},
        "paths": [str(path) for path in paths],
    }


# --- the three exports -----------------------------------------------------------------------


def db_rows(target: str, db_path: str | Path | None, **options: Any) -> list[Row]:
    """Rows from a provider function (``module:function``) over the project DB at ``db_path``
    (``options`` are passed on to the provider)."""
    from datagen import store

    if db_path is None:
        raise UserInputError("--db is required with this --source")
    if not Path(db_path).is_file():
        raise UserInputError(f"{db_path}: no such database")
    provider = load_provider(target)
    return list(provider(store.open_db(db_path), **options))


def export_sft(
    out: str | Path, *, source: str, db: str | Path | None,
    test_size: float | None = None, seed: int = 0,
) -> dict[str, Any]:
    """Write SFT rows (``messages``) from a generator's rows in the DB; returns the summary."""
    if source not in SFT_SOURCES:
        raise UserInputError(f"--source must be one of {', '.join(SFT_SOURCES)} for SFT")
    rows = sft_rows(db_rows(SFT_SOURCES[source], db), f"{db}:{source}")
    return write_export(rows, out, test_size, seed)


def export_preference(
    out: str | Path, *, labels: str | Path | None = None, source: str = "labels",
    db: str | Path | None = None, min_confidence: float | None = None,
    test_size: float | None = None, seed: int = 0, drop_judge_disagrees: bool = False,
) -> dict[str, Any]:
    """Write preference pairs from a labels file or the DB; the summary has ``dropped``.
    ``drop_judge_disagrees`` leaves out DB pairs whose judge check preferred the rejected side
    (``rlaif judge-revisions``), counted as ``judge_disagrees``."""
    if drop_judge_disagrees and source not in PREFERENCE_SOURCES:
        raise UserInputError(f"--drop-judge-disagrees: not for --source {source} (use one of "
                             f"{', '.join(PREFERENCE_SOURCES)})")
    if source == "labels":
        if labels is None:
            raise UserInputError("--labels FILE is required with --source labels")
        rows, dropped = pairs_from_labels(labels, min_confidence)
        read = len(rows) + sum(dropped.values())
    elif source in PREFERENCE_SOURCES:
        pairs = db_rows(PREFERENCE_SOURCES[source], db)
        kept = (db_rows(PREFERENCE_SOURCES[source], db, drop_judge_disagrees=True)
                if drop_judge_disagrees else pairs)
        rows, dropped = preference_rows(kept, f"{db}:{source}")
        if drop_judge_disagrees:
            dropped["judge_disagrees"] = len(pairs) - len(kept)
        read = len(pairs)
    else:
        choices = ", ".join(["labels", *PREFERENCE_SOURCES])
        raise UserInputError(f"--source must be one of {choices} for preference pairs")
    if not rows:
        raise UserInputError(f"no pairs left after hygiene (read {read}, dropped {dict(dropped)})")
    return {"read": read, "dropped": dict(dropped), **write_export(rows, out, test_size, seed)}


def constraints_json(constraints: Any, where: str) -> str | None:
    """A row's verifier constraints as one JSON string (None when it has none)."""
    if not constraints:
        return None
    if isinstance(constraints, str):
        try:
            constraints = json.loads(constraints)
        except ValueError:
            raise UserInputError(f"{where}: key 'constraints': not a JSON list") from None
    if not isinstance(constraints, list):
        raise UserInputError(f"{where}: key 'constraints': expected a list of specs")
    return json.dumps(constraints)


def export_prompts(
    out: str | Path, *, labels: str | Path | None = None, source: str = "labels",
    db: str | Path | None = None, test_size: float | None = None, seed: int = 0,
) -> dict[str, Any]:
    """Write unique prompts (``prompt``) from a labels file or a generator's rows in the DB."""
    if source == "labels":
        if labels is None:
            raise UserInputError("--labels FILE is required with --source labels")
        rows = prompt_rows(
            {"prompt": as_prompt(line.obj.get("prompt"), line.where),
             "constraints": constraints_json(line.obj.get("constraints"), line.where)}
            for line in read_jsonl(labels)
        )
    elif source in SFT_SOURCES:
        rows = prompt_rows(sft_rows(db_rows(SFT_SOURCES[source], db), f"{db}:{source}"))
    else:
        choices = ", ".join(["labels", *SFT_SOURCES])
        raise UserInputError(f"--source must be one of {choices} for prompts")
    return write_export(rows, out, test_size, seed)


# --- reading exports back for training and evaluation ---------------------------------------


def load_split(path: str | Path, split: str = "train"):
    """A ``datasets.Dataset`` from a JSONL file or a saved dataset dir (``split`` of a dict)."""
    from datasets import Dataset, DatasetDict, load_from_disk

    path = Path(path)
    if path.is_dir():
        try:
            data = load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as err:
            raise UserInputError(f"{path}: not a saved Hugging Face dataset ({err})") from err
        if isinstance(data, DatasetDict):
            if split not in data:
                raise UserInputError(f"{path}: no '{split}' split (has {', '.join(data)})")
            data = data[split]
        return data
    rows = [line.obj for line in read_jsonl(path)]
    if not rows:
        raise UserInputError(f"{path}: no rows")
    return Dataset.from_list(rows)


def require_columns(data, path: str | Path, *groups: tuple[str, ...]) -> None:
    """Raise a user error unless the dataset has all columns of at least one group."""
    columns = set(data.column_names)
    if not any(set(group) <= columns for group in groups):
        wanted = " or ".join("/".join(group) for group in groups)
        raise UserInputError(f"{path}: needs columns {wanted}; has {', '.join(sorted(columns))}")
