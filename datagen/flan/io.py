"""Files for FLAN-style conversion: dataset rows in, JSONL out.

Source datasets (JSONL, CSV, TSV, Parquet or a saved Hugging Face dataset folder) are read one
row at a time, so memory does not grow with the dataset, and each row is checked against its
task (through ``--field-map``) before it is rendered: a missing column, an empty value, a label
outside the options or an unreadable line becomes a one-line message naming the file, line, row
and column. Outputs are written to a temporary file that is renamed into place only when
everything succeeded. The template files themselves are loaded by ``datagen.flan.template_files``.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import yaml

from datagen.errors import UserInputError
from datagen.flan.template_files import MAX_OPTIONS, TaskTemplates
from datagen.jsonl import atomic_write

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv",
           ".parquet": "parquet"}


# --- reading datasets ----------------------------------------------------------------------


class Column(NamedTuple):
    """A template name and where it comes from in the file (``a.b`` reaches into a dict)."""

    name: str
    source: str

    @property
    def top(self) -> str:
        return self.source.split(".")[0]

    def describe(self) -> str:
        return repr(self.source) if self.source == self.name else f"{self.source!r} ({self.name})"


class RowSpec(NamedTuple):
    """What a row of one input must hold: fields, label, choices and maybe a rationale."""

    fields: tuple[Column, ...]
    label: Column
    options: tuple[str, ...]
    options_column: Column | None
    rationale: Column | None
    label_map: dict[str, str] | None = None  # dataset label -> the task's label (--label-map)

    @property
    def columns(self) -> list[Column]:
        extra = [c for c in (self.label, self.options_column, self.rationale) if c is not None]
        return [*self.fields, *extra]


class Row(NamedTuple):
    """A checked row: text values by field name, its choices and the gold answer."""

    index: int
    values: dict[str, str]
    options: tuple[str, ...]
    answer: str
    answer_index: int | None
    rationale: str | None


def parse_field_map(text: str | None) -> dict[str, str]:
    """``target=source,...`` as a dict (UserInputError when malformed)."""
    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        target, sep, source = (s.strip() for s in part.partition("="))
        if not sep or not target or not source:
            raise UserInputError(f"--field-map: expected target=source, got {part!r}")
        mapping[target] = source
    return mapping


def parse_label_map(text: str) -> dict[str, str]:
    """``--label-map``: ``a=b,c="d e"`` (quotes keep commas and spaces) or a YAML/JSON file
    mapping the dataset's labels to the task's."""
    path = Path(text)
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.is_file():
        try:
            # every value as text: `entailment: yes` maps to the label "yes", not True
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.BaseLoader)
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise UserInputError(f"--label-map {text}: cannot read: {exc}") from None
        if not isinstance(data, dict) or not data:
            raise UserInputError(f"--label-map {text}: expected a mapping of dataset labels to "
                                 "the task's labels")
        return {str(k): str(v) for k, v in data.items()}
    lexer = shlex.shlex(text, posix=True)
    lexer.whitespace, lexer.whitespace_split = ",", True
    mapping: dict[str, str] = {}
    try:
        parts = list(lexer)
    except ValueError as exc:
        raise UserInputError(f"--label-map: {exc} in {text!r}") from None
    for part in parts:
        source, sep, target = (s.strip() for s in part.partition("="))
        if not sep or not source or not target:
            raise UserInputError(f"--label-map: expected DATASET_LABEL=TASK_LABEL, got {part!r}")
        mapping[source] = target
    return mapping


def check_label_map(spec: TaskTemplates, label_map: dict[str, str]) -> None:
    """Every target of ``--label-map`` must be one of the task's labels."""
    if not label_map:
        return
    if not spec.options:
        raise UserInputError(f"--label-map: task {spec.task} has no fixed labels to map to")
    for source, target in label_map.items():
        if target not in spec.options:
            raise UserInputError(f"--label-map {source}={target}: {target!r} is not a label of "
                                 f"task {spec.task} (accepted: {', '.join(spec.options)})")


def row_spec(spec: TaskTemplates, field_map: dict[str, str], cot: bool,
             label_map: dict[str, str] | None = None) -> RowSpec:
    """Resolve the columns a task needs through ``--field-map`` (and its labels through
    ``--label-map``)."""
    names = [*spec.fields, spec.label_field]
    if spec.options_field:
        names.append(spec.options_field)
    if cot:
        if spec.rationale_field is None:
            raise UserInputError(f"--cot: task {spec.task} has no rationale_field")
        names.append(spec.rationale_field)
    unknown = sorted(set(field_map) - set(names))
    if unknown:
        raise UserInputError(f"--field-map: {unknown[0]!r} is not a column of task {spec.task} "
                             f"(columns: {', '.join(names)})")

    def column(name: str | None) -> Column | None:
        return None if name is None else Column(name, field_map.get(name, name))

    return RowSpec(
        fields=tuple(column(name) for name in spec.fields),
        label=column(spec.label_field),
        options=tuple(spec.options or ()),
        options_column=column(spec.options_field),
        rationale=column(spec.rationale_field if cot else None),
        label_map=label_map or None,
    )


def input_format(path: Path) -> str:
    """jsonl, csv, tsv, parquet or hf (a folder), from the path; unreadable paths are errors."""
    if path.is_dir():
        return "hf"
    if not path.exists():
        raise UserInputError(f"{path}: no such file")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UserInputError(f"{path}: unknown input format (use .jsonl, .csv, .tsv, .parquet "
                             "or a saved Hugging Face dataset folder)")
    return fmt


Record = tuple[int, int | None, dict[str, Any] | None, str | None]  # index, line, row, problem


def _missing_columns(path: Path, have: list[str], spec: RowSpec, line: str = "") -> None:
    for col in spec.columns:
        if col.top not in have:
            raise UserInputError(
                f"{path}{line}: column {col.describe()} is missing (columns: {', '.join(have)}); "
                f"map one with --field-map {col.name}=COLUMN")


def _read_jsonl(path: Path, spec: RowSpec) -> Iterator[Record]:
    decode = json.JSONDecoder().decode
    with _open(path, "rb") as handle:
        for index, raw in enumerate(handle):
            if not raw.strip():
                yield index, index + 1, None, "empty row"
                continue
            try:
                record = decode(raw.decode("utf-8"))
            except UnicodeDecodeError:
                yield index, index + 1, None, "not UTF-8 text"
                continue
            except ValueError as exc:
                yield index, index + 1, None, f"invalid JSON ({getattr(exc, 'msg', exc)})"
                continue
            if not isinstance(record, dict):
                yield index, index + 1, None, "expected a JSON object"
                continue
            yield index, index + 1, record, None


def _read_delimited(path: Path, spec: RowSpec, delimiter: str) -> Iterator[Record]:
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    line = 1
    with _open(path, "r", encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter, quoting=quoting)
        try:
            header = next(reader, None)
            if header is None:
                return
            _missing_columns(path, header, spec, ":1")
            for index, cells in enumerate(reader):
                start, line = line + 1, reader.line_num
                if not any(cell.strip() for cell in cells):
                    yield index, start, None, "empty row"
                elif len(cells) != len(header):
                    yield index, start, None, f"expected {len(header)} cells, found {len(cells)}"
                else:
                    yield index, start, dict(zip(header, cells, strict=True)), None
        except UnicodeDecodeError:
            raise UserInputError(f"{path}:{line + 1}: cannot read (not UTF-8 text)") from None
        except csv.Error as exc:
            raise UserInputError(f"{path}:{reader.line_num}: cannot read ({exc})") from None


def _parquet_file(path: Path) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise UserInputError(f"{path}: cannot read Parquet ({exc})".splitlines()[0]) from None


def _saved_dataset(path: Path) -> Any:
    import datasets

    try:
        data = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise UserInputError(f"{path}: cannot read saved dataset ({exc})".splitlines()[0]) from None
    if isinstance(data, datasets.DatasetDict):
        splits = ", ".join(data)
        raise UserInputError(f"{path}: holds splits ({splits}); give one split's folder, "
                             f"e.g. {path / next(iter(data))}")
    return data


def _read_parquet(path: Path, spec: RowSpec) -> Iterator[Record]:
    handle = _parquet_file(path)
    _missing_columns(path, handle.schema_arrow.names, spec)
    columns = sorted({c.top for c in spec.columns})
    index = 0
    for batch in handle.iter_batches(batch_size=4096, columns=columns):
        for record in batch.to_pylist():
            yield index, None, record, None
            index += 1


def _read_hf(path: Path, spec: RowSpec) -> Iterator[Record]:
    data = _saved_dataset(path)
    _missing_columns(path, data.column_names, spec)
    data = data.select_columns(sorted({c.top for c in spec.columns}))
    index = 0
    for batch in data.iter(batch_size=1024):
        names = list(batch)
        for values in zip(*batch.values(), strict=True):
            yield index, None, dict(zip(names, values, strict=True)), None
            index += 1


def _open(path: Path, mode: str, **kwargs: Any) -> Any:
    try:
        return open(path, mode, **kwargs)  # noqa: SIM115 - the caller closes it
    except OSError as exc:
        raise UserInputError(f"{path}: cannot read ({exc.strerror})") from None


def read_records(path: Path, spec: RowSpec) -> Iterator[Record]:
    """Raw rows of any supported input, one at a time, with their index and line."""
    fmt = input_format(path)
    if fmt == "jsonl":
        return _read_jsonl(path, spec)
    if fmt in ("csv", "tsv"):
        return _read_delimited(path, spec, "," if fmt == "csv" else "\t")
    if fmt == "parquet":
        return _read_parquet(path, spec)
    return _read_hf(path, spec)


def count_rows(path: Path, spec: RowSpec) -> int:
    """Number of rows in an input (bad rows included), for the mixing rates."""
    fmt = input_format(path)
    if fmt == "jsonl":
        with _open(path, "rb") as handle:
            return sum(1 for _ in handle)
    if fmt == "parquet":
        return _parquet_file(path).metadata.num_rows
    if fmt == "hf":
        return len(_saved_dataset(path))
    return sum(1 for _ in _read_delimited(path, spec, "," if fmt == "csv" else "\t"))


# --- checking rows ----------------------------------------------------------------------------


class BadValue(Exception):
    """A row-level problem: which column and what is wrong with it."""

    def __init__(self, column: Column | None, problem: str) -> None:
        super().__init__(problem)
        self.column = column
        self.problem = problem


def _get(record: dict[str, Any], column: Column) -> Any:
    if column.source in record:  # the common case: a top-level column
        return record[column.source]
    value: Any = record
    for part in column.source.split("."):
        if not isinstance(value, dict) or part not in value:
            raise BadValue(column, "missing")
        value = value[part]
    return value


def _text(record: dict[str, Any], column: Column) -> str:
    value = _get(record, column)
    if type(value) is str and not value.isspace() and value:
        return value
    if value is None:
        raise BadValue(column, "missing value")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise BadValue(column, f"expected text, found {type(value).__name__}")
    if isinstance(value, float) and math.isnan(value):
        raise BadValue(column, "missing value (NaN)")
    text = value if isinstance(value, str) else str(value)
    if not text.strip():
        raise BadValue(column, "empty")
    return text


def _row_options(record: dict[str, Any], column: Column) -> tuple[str, ...]:
    value = _get(record, column)
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            raise BadValue(column, "options are not a JSON list") from None
    if not isinstance(value, list | tuple) or len(value) < 2:
        raise BadValue(column, "expected a list of at least 2 options")
    if len(value) > MAX_OPTIONS:
        raise BadValue(column, f"{len(value)} options; at most {MAX_OPTIONS} can be shown")
    options = tuple(str(v) for v in value)
    if not all(o.strip() for o in options):
        raise BadValue(column, "an option is empty")
    return options


def _label_index(value: Any, options: tuple[str, ...], column: Column,
                 label_map: dict[str, str] | None = None) -> int:
    if label_map and str(value) in label_map:
        value = label_map[str(value)]
    if isinstance(value, str) and value in options:
        return options.index(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadValue(column, f"{value!r} is not an accepted label (accepted: "
                               f"{', '.join(options)}, or their index 0-{len(options) - 1}; "
                               f"map others with --label-map {value}=LABEL)")
    if not 0 <= value < len(options):
        raise BadValue(column, f"label {value} is out of range for {len(options)} options")
    return value


def check_row(index: int, record: dict[str, Any], spec: RowSpec) -> Row:
    """Turn a raw row into a Row, or raise BadValue naming the column at fault."""
    try:
        values = {col.name: _text(record, col) for col in spec.fields}
    except BadValue:
        if not any(v not in (None, "") for v in record.values()):
            raise BadValue(None, "empty row") from None
        raise
    options = _row_options(record, spec.options_column) if spec.options_column else spec.options
    if options:
        label = _get(record, spec.label)
        if label is None:
            raise BadValue(spec.label, "missing value")
        answer_index: int | None = _label_index(label, options, spec.label, spec.label_map)
        answer = options[answer_index]
    else:
        answer_index, answer = None, _text(record, spec.label)
    rationale = _text(record, spec.rationale) if spec.rationale else None
    return Row(index, values, options, answer, answer_index, rationale)


@dataclass
class BadRows:
    """Rows skipped under ``--on-bad-row skip``: how many, and the first few messages."""

    count: int = 0
    examples: list[str] = field(default_factory=list)
    keep: int = 5

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.examples) < self.keep:
            self.examples.append(message)


def checked_rows(path: Path, spec: RowSpec, on_bad_row: str, bad: BadRows) -> Iterator[Row]:
    """Checked rows of one input; a bad row raises UserInputError or is counted in ``bad``."""
    for index, line, record, problem in read_records(path, spec):
        column = None
        if problem is None:
            try:
                row = check_row(index, record, spec)
            except BadValue as exc:
                column, problem = exc.column, exc.problem
            else:
                yield row
                continue
        where = f"{path}:{line}" if line is not None else str(path)
        what = f"row {index}, column {column.describe()}" if column else f"row {index}"
        message = f"{where}: {what}: {problem}"
        if on_bad_row == "fail":
            raise UserInputError(message)
        bad.add(message)


# --- writing ----------------------------------------------------------------------------------


@contextmanager
def atomic_output(out: str) -> Iterator[TextIO]:
    """``datagen.jsonl.atomic_write`` to ``out``, or for ``-`` a temporary file copied to stdout
    when the block finishes without an exception (``handle.name`` is the file written, for
    reading it back before it is renamed)."""
    if out != "-":
        with atomic_write(out) as handle:
            yield handle
        return
    with tempfile.TemporaryDirectory(prefix="flan-") as folder:
        path = Path(folder) / "out.jsonl"
        with atomic_write(path) as handle:
            yield handle
        with path.open(encoding="utf-8") as src:
            shutil.copyfileobj(src, sys.stdout)
        sys.stdout.flush()
