"""A job request as the argv of its `rlaif` command, built inside the job's own folder.

A job is a CLI run: the service maps the job's kind (``align.service.kinds``) to its click
command and has ``align.commands.ArgvBuilder`` (the builder pipeline stages use too) turn the
options, named as the CLI names them, into an argv checked by click's own parser, so the
service accepts exactly what the command line accepts and names the option it rejects. Options
that would point a job at another database are refused; a list of JSON objects given for a
path option becomes a JSONL file in the job's folder; a job that names no output writes
``output.jsonl`` there. Mistakes are ``JobOptionError`` naming the kind or option at fault.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from align.commands import (
    ArgvBuilder,
    Keys,
    find_param,
    is_path_param,
    long_opt,
    resolve_command,
)
from align.service.kinds import KINDS

RESERVED = {"db": "the service runs every job on its own database",
            "help": "not a job option"}


class JobOptionError(ValueError):
    """A job request the CLI would refuse: ``name`` is the kind or option at fault."""

    def __init__(self, name: str, message: str, value: Any = None) -> None:
        super().__init__(message)
        self.name = name
        self.message = message
        self.value = value


def job_command(kind: str) -> tuple[click.Command, click.Context]:
    """The click command of a job kind and its parent context (imported on demand)."""
    if kind not in KINDS:
        raise JobOptionError("kind", f"unknown kind {kind!r} (use {', '.join(KINDS)})", kind)
    try:
        return resolve_command(KINDS[kind].path)
    except LookupError as exc:
        raise JobOptionError("kind", f"kind {kind!r} is not available here ({exc})",
                             kind) from None


def _fail(keys: Keys, message: str, param: click.Parameter | None) -> JobOptionError:
    name = str(keys[-1]) if len(keys) > 1 else (param.name if param else "options")
    return JobOptionError(name, message)


def _inline(name: str, rows: list, job_dir: Path) -> str:
    """A list of JSON objects given for a path, written as JSONL in the job's folder."""
    path = job_dir / "inputs" / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return str(path)


def build_argv(kind: str, options: dict[str, Any], job_dir: Path, db_path: Path
               ) -> tuple[list[str], Path | None]:
    """The CLI argv of a job (after the command's path) and its output file, if any.

    Option names may be written as the flag (``--base-url``), without dashes (``base-url``)
    or as the parameter name (``base_url``); arguments by their parameter name
    (``input_file``)."""
    command, parent = job_command(kind)
    tokens = ArgvBuilder(command, " ".join(("rlaif", *KINDS[kind].path)), ("options",),
                         lambda _param, text, _keys: (text, text), _fail)
    args: dict[str, list[tuple[Keys, Any]]] = {}
    for key, value in options.items():
        keys: Keys = ("options", key)
        norm = key.lstrip("-").replace("-", "_")
        if norm in RESERVED:
            raise JobOptionError(key, f"option {key!r} cannot be set: {RESERVED[norm]}", value)
        param = find_param(command, key, arguments=True)
        if param is not None and is_path_param(param) and isinstance(value, list) and value \
                and all(isinstance(v, dict) for v in value):
            value = _inline(param.name, value, job_dir)
        if isinstance(param, click.Argument):
            tokens.claim(param, keys)
            items = value if isinstance(value, list) else [value]
            args[param.name] = [(keys, v) for v in items if v is not None]
        else:
            tokens.add_option(key, value, keys)
    if KINDS[kind].pass_db and find_param(command, "db") is not None:
        tokens.push(["--db", str(db_path)])
    output = None
    out_param = find_param(command, "output")
    if out_param is not None and out_param.name not in tokens.keys:
        output = job_dir / "output.jsonl"
        tokens.push([long_opt(out_param), str(output)])
    elif out_param is not None:
        output = Path(tokens.argv[tokens.argv.index(long_opt(out_param)) + 1])
    ordered = [p for p in command.params if isinstance(p, click.Argument)]
    tokens.add_args([a for p in ordered for a in args.get(p.name, [])], ("options",))
    tokens.check(parent)
    return tokens.argv, output


def parsed_params(kind: str, argv: list[str]) -> dict[str, Any]:
    """A stored job argv parsed back by its command (its options by parameter name)."""
    command, parent = job_command(kind)
    with command.make_context(command.name, list(argv), parent=parent) as ctx:
        return dict(ctx.params)


def batch_keys(argv: list[str]) -> list[str]:
    """The ledger keys of a batch job's requests (validates the input file too)."""
    from datagen.batch.file import read_batch_file

    params = parsed_params("batch", argv)
    return [line.key for line in read_batch_file(params["input_file"],
                                                  default_model=params.get("model"))]


def checked_batch_keys(argv: list[str]) -> list[str]:
    """``batch_keys``, with a bad input file reported as a JobOptionError on input_file."""
    from datagen.errors import UserInputError

    try:
        return batch_keys(argv)
    except UserInputError as exc:
        raise JobOptionError("input_file", exc.message) from None
