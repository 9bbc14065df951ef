"""Job requests for `rlaif service` as CLI argv: the job kinds, option mapping and validation.

A job is a CLI run: the service maps the job's kind to its click command, turns the options
(named as the CLI names them) into an argv and checks it with click's own parser
(``make_context``, nothing invoked), so the service accepts exactly what the command line
accepts and names the option it rejects. A list of JSON objects given for a path option becomes
a JSONL file in the job's folder. Storing and running the jobs is ``align.service.jobs``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

RESERVED = {"db": "the service runs every job on its own database",
            "help": "not a job option"}


@dataclass(frozen=True)
class JobKind:
    """Where a kind's command sits under `rlaif`, and where its results are when it writes no
    output file (a table of the project database)."""

    path: tuple[str, ...]
    table: str | None = None
    pass_db: bool = True


KINDS: dict[str, JobKind] = {
    "batch": JobKind(("batch",)),
    "self-instruct": JobKind(("generate", "self-instruct"), table="si_instructions"),
    "flan": JobKind(("generate", "flan")),
    "constitutional": JobKind(("generate", "constitutional")),
    "responses": JobKind(("generate", "responses"), table="pairs"),
    "label": JobKind(("label",)),
    # offline, no ledger; it takes exactly one of -o and --db, and the service gives it -o
    "constrained": JobKind(("generate", "constrained"), pass_db=False),
    "pipeline": JobKind(("run",)),
}


class JobOptionError(ValueError):
    """A job request the CLI would refuse: ``name`` is the kind or option at fault."""

    def __init__(self, name: str, message: str, value: Any = None) -> None:
        super().__init__(message)
        self.name = name
        self.message = message
        self.value = value


# --- from a request to a validated argv ---------------------------------------------------------


def resolve_command(kind: str) -> click.Command:
    """The click command of a job kind (imported on demand)."""
    if kind not in KINDS:
        raise JobOptionError("kind", f"unknown kind {kind!r} (use {', '.join(KINDS)})", kind)
    from align.cli import main

    command: click.Command = main
    for name in KINDS[kind].path:
        sub = None
        if isinstance(command, click.Group):
            try:
                sub = command.get_command(click.Context(command), name)
            except ImportError:
                sub = None
        if sub is None:
            raise JobOptionError("kind", f"kind {kind!r} is not available here (no `rlaif "
                                         f"{' '.join(KINDS[kind].path)}` command)", kind)
        command = sub
    return command


def _norm(name: str) -> str:
    return name.lstrip("-").replace("-", "_")


def _param_index(command: click.Command) -> dict[str, click.Parameter]:
    index: dict[str, click.Parameter] = {}
    for param in command.params:
        index[param.name] = param
        for opt in param.opts:
            if opt.startswith("--"):
                index[_norm(opt)] = param
    return index


def _long_opt(param: click.Option) -> str:
    return max(param.opts, key=lambda o: (o.startswith("--"), len(o)))


def _scalar(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise JobOptionError(key, f"option {key!r}: expected a string, number or boolean", value)


def _is_path(param: click.Parameter) -> bool:
    return isinstance(param.type, click.Path | click.File)


def _values(key: str, param: click.Parameter, value: Any, inline: Callable[[str, list], str]
            ) -> list[str]:
    """The argv strings of one option value (a list of objects for a path: a JSONL file)."""
    many = getattr(param, "multiple", False) or param.nargs != 1
    if isinstance(value, list) and _is_path(param) and value and all(
            isinstance(v, dict) for v in value):
        return [inline(param.name, value)]
    if isinstance(value, list):
        if not many:
            raise JobOptionError(key, f"option {key!r} takes one value, got a list", value)
        return [_scalar(key, v) for v in value]
    return [_scalar(key, value)]


def build_argv(kind: str, options: dict[str, Any], job_dir: Path, db_path: Path
               ) -> tuple[list[str], Path | None]:
    """The CLI argv of a job (after the command's path) and its output file, if any.

    Option names may be written as the flag (``--base-url``), without dashes (``base-url``)
    or as the parameter name (``base_url``); arguments by their parameter name
    (``input_file``). A list of JSON objects given for a path becomes a JSONL file in the
    job's folder."""
    command = resolve_command(kind)
    index = _param_index(command)
    argv: list[str] = []
    positional: dict[str, list[str]] = {}
    given: set[str] = set()

    def inline(name: str, rows: list) -> str:
        path = job_dir / "inputs" / f"{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        return str(path)

    for key, value in options.items():
        norm = _norm(key)
        if norm in RESERVED:
            raise JobOptionError(key, f"option {key!r} cannot be set: {RESERVED[norm]}", value)
        param = index.get(norm)
        if param is None:
            raise JobOptionError(key, f"unknown option {key!r} for kind {kind!r}", value)
        if value is None:
            continue
        given.add(param.name)
        if isinstance(param, click.Argument):
            positional[param.name] = _values(key, param, value, inline)
        elif isinstance(param, click.Option) and param.is_flag and not param.count:
            if not isinstance(value, bool):
                raise JobOptionError(key, f"option {key!r} is a flag: use true or false", value)
            if value:
                argv.append(_long_opt(param))
            elif param.secondary_opts:
                argv.append(max(param.secondary_opts, key=len))
        else:
            for item in _values(key, param, value, inline):
                argv += [_long_opt(param), item]
    if KINDS[kind].pass_db and "db" in index:
        argv += ["--db", str(db_path)]
    output = None
    out_param = index.get("output")
    if out_param is not None and out_param.name not in given:
        output = job_dir / "output.jsonl"
        argv += [_long_opt(out_param), str(output)]
    elif out_param is not None:
        output = Path(_scalar("output", options_value(options, out_param)))
    args = [p for p in command.params if isinstance(p, click.Argument)]
    tail = [v for p in args for v in positional.get(p.name, [])]
    argv += (["--", *tail] if tail else [])
    check_argv(kind, command, argv)
    return argv, output


def options_value(options: dict[str, Any], param: click.Parameter) -> Any:
    """The value the request gave for a parameter, under whichever spelling it used."""
    names = {param.name, *(_norm(o) for o in param.opts)}
    return next(v for k, v in options.items() if _norm(k) in names)


def check_argv(kind: str, command: click.Command, argv: list[str]) -> None:
    """Parse the argv with the command's own parser, without running it."""
    name = "rlaif " + " ".join(KINDS[kind].path)
    try:
        command.make_context(name, list(argv))
    except click.exceptions.Exit:
        raise JobOptionError("options", "not a job option") from None
    except click.ClickException as exc:
        param = getattr(exc, "param", None)
        where = param.name if param is not None else "options"
        raise JobOptionError(where, exc.format_message()) from None


def batch_keys(argv: list[str]) -> list[str]:
    """The ledger keys of a batch job's requests (validates the input file too)."""
    from datagen.batch.file import read_batch_file

    input_file = argv[argv.index("--") + 1]
    model = argv[argv.index("--model") + 1] if "--model" in argv else None
    return [line.key for line in read_batch_file(input_file, default_model=model)]


def checked_batch_keys(argv: list[str]) -> list[str]:
    """``batch_keys``, with a bad input file reported as a JobOptionError on input_file."""
    from datagen.errors import UserInputError

    try:
        return batch_keys(argv)
    except UserInputError as exc:
        raise JobOptionError("input_file", exc.message) from None
