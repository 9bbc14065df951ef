"""Template files for FLAN-style conversion: the schema, loading and the option-list styles.

Templates are data: one YAML file per task family under ``templates/flan/``, validated with
pydantic and then checked placeholder by placeholder, so a template that names an unknown field
or whose target lacks ``{answer}`` is refused at load time with the file, line, template id and
placeholder. The option style file holds the wordings the ``OPTIONS:`` list is shown in. The
source datasets these templates render are read by ``datagen.flan.io``.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from datagen.errors import UserInputError

TEMPLATE_DIR = Path(__file__).parent / "templates"
OPTION_STYLES_FILE = TEMPLATE_DIR / "_option_styles.yaml"
RESERVED = ("options", "answer", "rationale")
MAX_OPTIONS = 26
NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


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
