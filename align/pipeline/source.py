"""Where a pipeline file says what: ``FILE:LINE: stages[3].options.key`` and ``${name}`` values.

A mistake in a pipeline file is only useful to a person when it points at the line and the key
that holds it, so the file is kept both as data and as YAML's node tree (``Source``), and every
error names the key path (``dotted``). Variables come from the file's ``vars:``, then the
chosen profile, then ``--set`` (``user_vars``), and are put into values by ``substitute``,
where a value that is exactly ``"${name}"`` keeps its type. Used by ``align.pipeline.stages``
to check stages and by ``align.pipeline.file`` to load the whole file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from align.commands import Keys, dotted
from datagen.errors import UserInputError

BUILTIN_VARS = ("output", "db", "seed", "pipeline_dir")
# ``$${NAME}`` is a literal ``${NAME}`` (for values the command fills in itself, such as an
# --endpoint-per-node template filled from each node's environment).
VAR = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")

class Source:
    """The pipeline file's text and node tree, to name a key as ``FILE:LINE: a.b[2].c``."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        try:
            self.root = yaml.compose(text, Loader=yaml.SafeLoader)
            self.data = yaml.safe_load(text)
        except yaml.MarkedYAMLError as exc:
            line = exc.problem_mark.line + 1 if exc.problem_mark else 1
            raise UserInputError(f"{path}:{line}: invalid YAML ({exc.problem})") from None
        except yaml.YAMLError as exc:
            raise UserInputError(f"{path}: invalid YAML ({exc})") from None

    def line(self, keys: Keys) -> int:
        """Line of the deepest node of ``keys`` that exists (1 for the file itself)."""
        node, line = self.root, 1
        for key in keys:
            if isinstance(node, yaml.MappingNode):
                found = [(k, v) for k, v in node.value if k.value == key]
                if not found:
                    break
                line, node = found[0][0].start_mark.line + 1, found[0][1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) \
                    and key < len(node.value):
                node = node.value[key]
                line = node.start_mark.line + 1
            else:
                break
        return line

    def error(self, keys: Keys, message: str) -> UserInputError:
        where = dotted(keys)
        return UserInputError(f"{self.path}:{self.line(keys)}: "
                              f"{where + ': ' if where else ''}{message}")


def user_vars(src: Source, doc: dict, profile: str | None,
              overrides: dict[str, Any]) -> dict[str, Any]:
    """The file's vars, then the chosen profile's, then command-line ``--set`` values."""
    variables = doc.get("vars") or {}
    if not isinstance(variables, dict):
        raise src.error(("vars",), "expected a mapping of names to values")
    variables = dict(variables)
    profiles = doc.get("profiles") or {}
    if not isinstance(profiles, dict):
        raise src.error(("profiles",), "expected a mapping of profile names to vars")
    if profile is not None:
        if profile not in profiles:
            known = ", ".join(map(str, profiles)) or "none"
            raise UserInputError(f"{src.path}: --profile {profile}: no such profile "
                                 f"(has: {known})")
        if not isinstance(profiles[profile], dict):
            raise src.error(("profiles", profile), "expected a mapping of names to values")
        variables.update(profiles[profile])
    variables.update(overrides)
    for name in variables:
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise src.error(("vars",), f"bad variable name {name!r}")
        if name in BUILTIN_VARS:
            raise src.error(("vars", name), f"{name} is built in; set it at the top level")
    return variables


def substitute(src: Source, keys: Keys, value: Any, variables: dict[str, Any]) -> Any:
    """Replace ``${name}`` in strings (and lists of them); "${name}" alone keeps the type."""
    if isinstance(value, list):
        return [substitute(src, (*keys, i), v, variables) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def lookup(name: str) -> Any:
        if name not in variables:
            known = ", ".join(sorted(variables)) or "none"
            raise src.error(keys, f"unknown variable ${{{name}}} (known: {known})")
        return variables[name]

    whole = VAR.fullmatch(value)
    if whole and not whole.group(1):
        return lookup(whole.group(2))

    def text(match: re.Match) -> str:
        if match.group(1):
            return match.group(0)[1:]
        found = lookup(match.group(2))
        if found is None or isinstance(found, dict | list):
            raise src.error(keys, f"${{{match.group(2)}}} is {found!r}; cannot put it in text")
        return str(found).lower() if isinstance(found, bool) else str(found)

    return VAR.sub(text, value)


def parse_sets(sets: tuple[str, ...]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs; the value is read as YAML (``8`` is a number, ``null`` is null)."""
    values: dict[str, Any] = {}
    for item in sets:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise UserInputError(f"--set {item}: expected NAME=VALUE")
        try:
            values[name.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            values[name.strip()] = raw
    return values
