"""Files for FLAN-style conversion: template files in, dataset rows in, JSONL out.

Templates are data: one YAML file per task family, validated with pydantic and then checked
placeholder by placeholder, so a template that names an unknown field or whose target lacks
``{answer}`` is refused at load time with the file, line, template id and placeholder. Source
datasets (JSONL, CSV, TSV, Parquet or a saved Hugging Face dataset folder) are read one row at a
time, so memory does not grow with the dataset, and each row is checked against its task before
it is rendered: a missing column, an empty value, a label outside the options or an unreadable
line becomes a one-line message naming the file, line, row and column. Outputs are written to a
temporary file that is renamed into place only when everything succeeded.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import string
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from datagen.errors import UserInputError

TEMPLATE_DIR = Path(__file__).parent / "templates" / "flan"
OPTION_STYLES_FILE = TEMPLATE_DIR / "_option_styles.yaml"
RESERVED = ("options", "answer", "rationale")
MAX_OPTIONS = 26
NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv",
           ".parquet": "parquet"}


# --- template files --------------------------------------------------------------------------


class Template(BaseModel):
    """One phrasing of a task: ``input`` becomes the user turn, ``target`` the assistant turn."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, description="Unique id within the file, e.g. nli-01")
    input: str = Field(min_length=1, description="Fields, and {options} where choices are shown")
    target: str = Field(min_length=1, description="Must contain {answer}")


class FewShotFormat(BaseModel):
    """How k-shot exemplars are joined: prefix + x + delimiter + prefix + y + separator."""

    model_config = ConfigDict(extra="forbid")

    inputs_prefix: str = ""
    targets_prefix: str = ""
    x_y_delimiter: str = "\n\n"
    example_separator: str = "\n\n\n"


class TaskTemplates(BaseModel):
    """A template file: the task's columns, its answer choices and its phrasings.

    Example: ``TaskTemplates(task="nli", fields=["premise", "hypothesis"], options=["yes",
    "no"], templates=[Template(id="nli-01", input="{premise} {hypothesis}? {options}",
    target="{answer}")])``
    """

    model_config = ConfigDict(extra="forbid")

    task: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    fields: list[str] = Field(min_length=1, description="Columns usable as placeholders")
    label_field: str = Field(default="label", description="Option index or the answer text")
    options: list[str] | None = Field(default=None, min_length=2, max_length=MAX_OPTIONS)
    options_field: str | None = Field(default=None, description="Column holding per-row choices")
    rationale_field: str | None = Field(default=None, description="Column for --cot targets")
    cot_target: str | None = Field(default=None, description="Needs {rationale} and {answer}")
    few_shot: FewShotFormat = Field(default_factory=FewShotFormat)
    templates: list[Template] = Field(min_length=1)

    @property
    def has_options(self) -> bool:
        return self.options is not None or self.options_field is not None


def placeholders(text: str) -> list[str]:
    """The ``{name}`` placeholders of a template string, in order (ValueError if malformed)."""
    names = []
    for _, name, spec, conversion in string.Formatter().parse(text):
        if name is None:
            continue
        if not re.match(NAME, name) or spec or conversion:
            raise ValueError(f"placeholder {{{name}{'!' + conversion if conversion else ''}"
                             f"{':' + spec if spec else ''}}} must be a plain {{name}}")
        names.append(name)
    return names


def _check_string(text: str, allowed: set[str], required: tuple[str, ...]) -> str | None:
    try:
        names = placeholders(text)
    except ValueError as exc:
        return f"{exc} (write {{{{ or }}}} for a literal brace)"
    for name in names:
        if name not in allowed:
            return f"unknown placeholder {{{name}}} (allowed: {', '.join(sorted(allowed))})"
    for name in required:
        if name not in names:
            return f"missing placeholder {{{name}}}"
    return None


def template_problems(spec: TaskTemplates) -> list[tuple[int | None, str]]:
    """Everything wrong with a parsed file: (template index or None, message) pairs."""
    problems: list[tuple[int | None, str]] = []
    for name in spec.fields:
        if not re.match(NAME, name) or name in RESERVED:
            problems.append((None, f"fields: {name!r} is not usable as a field name"
                                   f" (reserved: {', '.join(RESERVED)})"))
    if spec.label_field in spec.fields:
        problems.append((None, f"label_field {spec.label_field!r} is also an input field"))
    if spec.options is not None and spec.options_field is not None:
        problems.append((None, "give options or options_field, not both"))
    if spec.options is not None and len(set(spec.options)) != len(spec.options):
        problems.append((None, "options must be distinct"))
    if (spec.cot_target is None) != (spec.rationale_field is None):
        problems.append((None, "rationale_field and cot_target go together"))
    fields = set(spec.fields)
    if spec.cot_target is not None:
        problem = _check_string(spec.cot_target, fields | {"answer", "rationale"},
                                ("rationale", "answer"))
        if problem:
            problems.append((None, f"cot_target: {problem}"))
    seen: set[str] = set()
    for index, template in enumerate(spec.templates):
        where = f"template {template.id}"
        if template.id in seen:
            problems.append((index, f"{where}: duplicate id"))
        seen.add(template.id)
        input_names = fields | ({"options"} if spec.has_options else set())
        for part, allowed, required in (("input", input_names, ()),
                                        ("target", fields | {"answer"}, ("answer",))):
            problem = _check_string(getattr(template, part), allowed, required)
            if problem:
                problems.append((index, f"{where}: {part}: {problem}"))
    return problems


def _duplicate_key(node: yaml.Node) -> yaml.Node | None:
    """The first repeated mapping key anywhere under ``node`` (PyYAML keeps the last silently)."""
    if isinstance(node, yaml.MappingNode):
        keys = [key.value for key, _ in node.value]
        for key, value in node.value:
            if keys.count(key.value) > 1:
                return key
            found = _duplicate_key(value)
            if found is not None:
                return found
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            found = _duplicate_key(item)
            if found is not None:
                return found
    return None


def _yaml_lines(path: Path, text: str) -> dict[tuple[Any, ...], int]:
    """1-based line of each top-level key and of each item of ``templates``."""
    lines: dict[tuple[Any, ...], int] = {}
    root = yaml.compose(text)
    duplicate = _duplicate_key(root) if root is not None else None
    if duplicate is not None:
        raise UserInputError(f"{path}:{duplicate.start_mark.line + 1}: duplicate key "
                             f"{duplicate.value!r}")
    if not isinstance(root, yaml.MappingNode):
        return lines
    for key, value in root.value:
        lines[(key.value,)] = key.start_mark.line + 1
        if key.value == "templates" and isinstance(value, yaml.SequenceNode):
            for index, item in enumerate(value.value):
                lines[("templates", index)] = item.start_mark.line + 1
    return lines


def load_templates(path: str | Path) -> TaskTemplates:
    """Read and check a template file; any problem is a one-line UserInputError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except OSError as exc:
        raise UserInputError(f"{path}: cannot read template file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise UserInputError(f"{path}: cannot read template file (not UTF-8)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", exc)
        raise UserInputError(f"{path}{line}: invalid YAML ({problem})") from None
    lines = _yaml_lines(path, text)
    try:
        spec = TaskTemplates.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        line = lines.get(loc[:2]) or lines.get(loc[:1])
        where = f"{path}:{line}" if line else str(path)
        what = ".".join(str(part) for part in loc) or "file"
        raise UserInputError(f"{where}: {what}: {first['msg']}") from None
    problems = template_problems(spec)
    if problems:
        index, message = problems[0]
        line = lines.get(("templates", index)) if index is not None else None
        raise UserInputError(f"{path}:{line}: {message}" if line else f"{path}: {message}")
    return spec


def builtin_tasks() -> list[str]:
    """Names of the template files shipped with the package."""
    return sorted(p.stem for p in TEMPLATE_DIR.glob("*.yaml") if not p.name.startswith("_"))


def task_path(name: str) -> Path:
    """The built-in template file of a task family (UserInputError if there is none)."""
    if name not in builtin_tasks():
        known = ", ".join(builtin_tasks())
        raise UserInputError(f"--task: unknown task {name!r} (built in: {known})")
    return TEMPLATE_DIR / f"{name}.yaml"


class OptionStyles(BaseModel):
    """The option-list wordings: a fixed plain style and the pools --options-style random uses."""

    model_config = ConfigDict(extra="forbid")

    plain_start: str
    plain_item: str
    starts: list[str] = Field(min_length=1)
    items: list[str] = Field(min_length=1)
    endings: list[str] = Field(min_length=1)


ITEM_NAMES = ("letter", "LETTER", "number", "roman", "ROMAN")


def load_option_styles(path: Path = OPTION_STYLES_FILE) -> OptionStyles:
    """Read the option style file; item prefixes may name one of {letter} {LETTER} {number}
    {roman} {ROMAN}."""
    try:
        styles = OptionStyles.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise UserInputError(f"{path}: bad option style file ({exc})".splitlines()[0]) from None
    for item in [styles.plain_item, *styles.items]:
        problem = _check_string(item, set(ITEM_NAMES), ())
        if problem or len(placeholders(item)) > 1:
            raise UserInputError(f"{path}: item {item!r}: {problem or 'at most one item name'}")
    return styles


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


def row_spec(spec: TaskTemplates, field_map: dict[str, str], cot: bool) -> RowSpec:
    """Resolve the columns a task needs through ``--field-map``."""
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


def _label_index(value: Any, options: tuple[str, ...], column: Column) -> int:
    if isinstance(value, str) and value in options:
        return options.index(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadValue(column, f"{value!r} is neither an option nor an option index")
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
        answer_index: int | None = _label_index(label, options, spec.label)
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
    """A temporary text file (``handle.name`` is its path) that becomes ``out`` (or is copied to
    stdout for ``-``) only when the block finishes without an exception; else it is removed."""
    target = None if out == "-" else Path(out)
    if target is not None and target.is_dir():
        raise UserInputError(f"{out}: is a directory")
    folder = target.parent if target is not None else None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".flan-", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise UserInputError(f"{out}: cannot write ({exc.strerror})") from None
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; the output is an ordinary file
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
            yield handle
        if target is None:
            with open(tmp, encoding="utf-8") as src:
                shutil.copyfileobj(src, sys.stdout)
            sys.stdout.flush()
        else:
            os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
