"""Dataset cards: a Markdown description of each exported dataset, for `rlaif report --dataset`.

An exported file says nothing about where its rows came from, yet whoever trains on it, or
reads a model card built on it, needs to know: how many rows, which fields, and which runs,
models, parameters and seeds produced them, and how many rows those runs dropped and why.
Row ids survive export (``align.export.datasets`` keeps the generator's id), so the card matches the
dataset's ids against every table of the project database that has an ``id`` column, follows
the matched rows' ``run_id`` to the ``runs`` table and reads arguments, seed and summary
counts from there. Both export formats are read: JSONL (with its ``X.test.jsonl`` sibling) and
a saved Hugging Face dataset directory, the latter with pyarrow directly so that no
``datasets`` import is needed. Values are written inside code spans, so a stored string
cannot turn into markup when the card is rendered.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from align.export.datasets import read_jsonl, sibling_test_path
from align.report.data import column_rows, db_tables, load_runs, run_models
from align.report.html import Section, esc, show, when
from datagen.errors import UserInputError
from datagen.store.tables import REQUESTS, RUNS

DROP_KEYS = ("rejected", "dropped", "degenerate", "tasks_dropped", "failed", "failed_parses",
             "refusals", "skipped", "bad_rows")
MODEL_COLUMNS = ("model", "model_a", "model_b", "resolved_model")


# --- reading an export ------------------------------------------------------------------------


def read_export(path: Path) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    """(format, {split: rows}) of a JSONL export or a saved Hugging Face dataset directory."""
    if path.is_dir():
        return "Hugging Face dataset (save_to_disk)", _read_dataset_dir(path)
    if not path.is_file():
        raise UserInputError(f"{path}: no such dataset (--dataset)")
    splits = {"train": [line.obj for line in read_jsonl(path)]}
    test = sibling_test_path(path)
    if path.name.endswith(".jsonl") and test != path and test.is_file():
        splits["test"] = [line.obj for line in read_jsonl(test)]
    return "JSONL", splits


def _read_dataset_dir(path: Path) -> dict[str, list[dict[str, Any]]]:
    splits_file = path / "dataset_dict.json"
    if splits_file.is_file():
        names = _read_json(splits_file).get("splits", [])
        return {name: _read_arrow_dir(path / name) for name in names}
    return {"train": _read_arrow_dir(path)}


def _read_arrow_dir(path: Path) -> list[dict[str, Any]]:
    import pyarrow as pa

    state = _read_json(path / "state.json")
    files = [path / f["filename"] for f in state.get("_data_files", [])]
    if not files:
        raise UserInputError(f"{path}: not a saved Hugging Face dataset (no data files in "
                             "state.json)")
    rows: list[dict[str, Any]] = []
    for file in files:
        try:
            with pa.memory_map(str(file)) as source:
                rows += pa.ipc.open_stream(source).read_all().to_pylist()
        except (OSError, pa.ArrowInvalid) as exc:
            raise UserInputError(f"{file}: cannot read Arrow data: {exc}") from None
    return rows


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserInputError(f"{path}: cannot read: {exc}") from None
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: expected a JSON object")
    return data


# --- what the rows hold -------------------------------------------------------------------------


def dataset_kind(columns: set[str]) -> str:
    """The export kind from its columns."""
    if {"chosen", "rejected"} <= columns:
        return "preference pairs (prompt / chosen / rejected)"
    if "messages" in columns:
        return "SFT conversations (messages)"
    if "prompt" in columns:
        return "prompts (for online RL)"
    return "unknown"


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        inner = sorted({type_name(v) for v in value[:5]})
        if value and all(isinstance(v, dict) for v in value):
            keys = sorted({k for v in value for k in v})
            return "list of {" + ", ".join(keys) + "}"
        return f"list of {'/'.join(inner) or 'values'}"
    if isinstance(value, dict):
        return "object {" + ", ".join(sorted(value)) + "}"
    return type(value).__name__


def field_rows(rows: list[dict[str, Any]]) -> list[tuple[str, str, int, str]]:
    """(field, types, rows having it, summary) for each field of the rows."""
    present: Counter = Counter()
    types: dict[str, Counter] = defaultdict(Counter)
    values: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        for key, value in row.items():
            present[key] += 1
            types[key][type_name(value)] += 1
            values[key].append(value)
    out = []
    for key in present:
        summary = _value_summary(values[key], lengths=key != "id")
        out.append((key, " | ".join(t for t, _ in types[key].most_common()), present[key],
                    summary))
    return out


def _value_summary(values: list[Any], lengths: bool = True) -> str:
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if numbers:
        return (f"min {show(float(min(numbers)))}, mean {show(statistics.fmean(numbers))}, "
                f"max {show(float(max(numbers)))}")
    words = [n for n in map(_text_length, values) if n is not None] if lengths else []
    turns = [len(v) for v in values if isinstance(v, list)]
    parts = []
    if turns:
        spread = f"{min(turns)}" if min(turns) == max(turns) else f"{min(turns)}-{max(turns)}"
        parts.append(f"{spread} item{'' if spread == '1' else 's'}")
    if words:
        parts.append(f"text words: median {show(statistics.median(words))}, max {max(words)}")
    distinct = len({json.dumps(v, sort_keys=True, default=str) for v in values})
    parts.append(f"{distinct} distinct")
    return "; ".join(parts)


def _text_length(value: Any) -> int | None:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        return sum(len(str(m.get("content", "")).split()) for m in value)
    return None


# --- provenance ---------------------------------------------------------------------------------


def provenance(db: Any, ids: set[str]) -> dict[str, Any]:
    """Which tables hold the dataset's ids, from which runs and models."""
    matched: Counter = Counter()
    run_ids: Counter = Counter()
    models: Counter = Counter()
    for name, columns in db_tables(db).items():
        if name in (REQUESTS, RUNS) or "id" not in columns:
            continue
        wanted = ["id", *(c for c in ("run_id", *MODEL_COLUMNS) if c in columns)]
        for row in column_rows(db, name, wanted):
            if str(row["id"]) not in ids:
                continue
            matched[name] += 1
            if row.get("run_id"):
                run_ids[row["run_id"]] += 1
            for column in MODEL_COLUMNS:
                if row.get(column):
                    models[str(row[column])] += 1
    runs = [r | {"rows": run_ids[r["id"]]} for r in load_runs(db) if r["id"] in run_ids]
    return {"tables": matched, "runs": runs, "models": models}


# --- the card -----------------------------------------------------------------------------------


def plain(value: Any) -> str:
    """A value written exactly (no thousands separators or rounding), dicts as "k v, ..."."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {plain(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(plain(v) for v in value) or "-"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return show(value)


def code(value: Any) -> str:
    """A value as a Markdown code span (backticks removed, so it cannot end the span)."""
    text = " ".join(plain(value).replace("`", "'").split())
    return f"`{text}`" if text else "`-`"


def cell(value: Any) -> str:
    return code(value).replace("|", "\\|")


def render_card(path: Path, fmt: str, splits: dict[str, list[dict[str, Any]]],
                origin: dict[str, Any] | None, db_path: Path | None, now: float) -> str:
    """The Markdown card of one dataset."""
    rows = [row for split in splits.values() for row in split]
    columns = {k for row in rows for k in row}
    lines = [
        f"# Dataset card: {code(_name(path))}", "",
        f"- Path: {code(path)}",
        f"- Format: {fmt}",
        f"- Kind: {dataset_kind(columns)}",
        "- Rows: " + ", ".join(f"{split} {code(len(r))}" for split, r in splits.items())
        + f" (total {code(len(rows))})",
        f"- Card written: {when(now)} by `rlaif report`", "",
        "## Fields", "",
        "| field | type | rows with it | values |", "|---|---|---|---|",
        *(f"| {cell(f)} | {cell(t)} | {n} | {cell(s)} |" for f, t, n, s in field_rows(rows)),
        "", "## Provenance", "",
    ]
    lines += _provenance_lines(origin, db_path, len({str(r.get('id')) for r in rows}))
    return "\n".join(lines) + "\n"


def _name(path: Path) -> str:
    return path.name.removesuffix(".jsonl") if path.is_file() else path.name


def _provenance_lines(origin: dict[str, Any] | None, db_path: Path | None,
                      distinct_ids: int) -> list[str]:
    if origin is None:
        return ["No project database was given, so the rows are not traced to runs."]
    lines = [f"Project database: {code(db_path)}. Dataset ids found in its tables: "
             + (", ".join(f"{code(t)} {n} of {distinct_ids}" for t, n in origin["tables"].items())
                or "none (rows made outside this database, or ids rebuilt on export)") + "."]
    if origin["models"]:
        lines.append("Models named on the matched rows: " + ", ".join(
            f"{code(m)} ({n} rows)" for m, n in origin["models"].most_common()) + ".")
    for run in origin["runs"]:
        lines += ["", f"### Run {code(run['id'])}", "",
                  f"- Kind: {code(run['kind'])}, status {code(run['status'])}, "
                  f"seed {code(run.get('seed'))}, started {when(run.get('started_at'))}",
                  f"- Rows of this dataset from it: {run['rows']}",
                  f"- Models: {', '.join(code(m) for m in run_models(run)) or '`-`'}",
                  "- Parameters: " + (", ".join(
                      f"{code(k)} = {code(v)}" for k, v in sorted(run["args"].items())
                      if v is not None and not isinstance(v, dict)) or "`-`")]
        summary = run["summary"] if isinstance(run["summary"], dict) else {}
        counts = {k: v for k, v in summary.items() if k != "run_id" and k not in DROP_KEYS}
        dropped = {k: v for k, v in summary.items() if k in DROP_KEYS}
        lines.append("- Counts: " + (", ".join(f"{code(k)} {code(v)}" for k, v in counts.items())
                                     or "`-`"))
        lines.append("- Dropped per reason: " + (", ".join(
            f"{code(k)} {code(v)}" for k, v in dropped.items()) or "none recorded"))
    return lines


def dataset_card(path: Path, db: Any | None, db_path: Path | None, now: float) -> str:
    """Read one export and return its card."""
    fmt, splits = read_export(path)
    ids = {str(row["id"]) for split in splits.values() for row in split if "id" in row}
    origin = provenance(db, ids) if db is not None else None
    return render_card(path, fmt, splits, origin, db_path, now)


def card_path(dataset: Path, cards_dir: Path, taken: set[Path]) -> Path:
    """Where a dataset's card goes: ``CARDS_DIR/NAME.card.md`` (NAME-2... when taken)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", _name(dataset)) or "dataset"
    candidate, number = cards_dir / f"{stem}.card.md", 2
    while candidate in taken:
        candidate, number = cards_dir / f"{stem}-{number}.card.md", number + 1
    taken.add(candidate)
    return candidate


def cards_section(cards: list[tuple[Path, Path, str]]) -> Section:
    """The cards shown on the page as escaped Markdown text: (dataset, card file, text)."""
    if not cards:
        return Section("datasets", "Dataset cards", note="no --dataset given.")
    body = "".join(
        f"<h3>{esc(dataset)}</h3><p class=\"note\">Written to {esc(card)}</p>"
        f'<pre class="card">{esc(text)}</pre>' for dataset, card, text in cards)
    return Section("datasets", "Dataset cards", body)
