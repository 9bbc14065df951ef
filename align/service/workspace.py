"""A job request as the argv of its `rlaif` command, confined to the job's own workspace.

A job is a CLI run: the service maps the job's kind (``align.service.kinds``) to its click
command and has ``align.commands.ArgvBuilder`` (the builder pipeline stages use too) turn the
options, named as the CLI names them, into an argv checked by click's own parser, so the
service accepts exactly what the command line accepts and names the option it rejects.

A job reads and writes only inside its workspace (``DATA_DIR/jobs/JOB_ID``). Inputs arrive
as uploaded files named by id (``file-...``, linked into the workspace) or as a list of JSON
objects (written there as JSONL); every other path is relative to the workspace and checked
after following symlinks: absolute paths (``/etc/passwd``, ``/proc/self/environ``), ``..``,
symlinks that leave the workspace, device files, FIFOs, sockets and directories are refused.
Options that choose a database, a directory, a log, an endpoint URL or a key are not job
options. Mistakes are ``JobOptionError`` naming the kind or option at fault (HTTP 422).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
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

RESERVED = {
    "db": "the service runs every job on its own database",
    "base_url": 'name one of the service\'s endpoints ("endpoint": NAME) instead',
    "judge_base_url": "judges use the job's endpoint",
    "api_key_env": "the key of the job's endpoint is the service's to give",
    "help": "not a job option",
    "list_batches": "hosted batches are managed with the CLI, not by jobs",
    "cancel": "hosted batches are managed with the CLI, not by jobs",
    "check_hosted": "hosted batches are managed with the CLI, not by jobs",
}
PIPELINE_STAGES = ("generate", "label", "export", "train", "eval")
FILE_ID = re.compile(r"^file-[0-9a-f]{16}$")
OUTPUT_NAMES = frozenset({"output", "out", "errors"})  # where a command writes


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
    return str(path.relative_to(job_dir))


def refused_option(param: click.Parameter) -> str | None:
    """Why a job may not set this option (None: it may)."""
    if param.name in RESERVED:
        return RESERVED[param.name]
    if param.name.endswith("_dir") or "log" in param.name or (
            isinstance(param.type, click.Path) and not param.type.file_okay):
        return "a job does not choose directories or logs; it works in its own workspace"
    return None


class Workspace:
    """The paths of one job: uploaded files linked in, every value checked to stay inside."""

    def __init__(self, job_dir: Path, files: dict[str, Path]) -> None:
        self.root = job_dir.resolve()
        self.files = files  # file id -> stored upload the caller may read

    def value(self, param: click.Parameter, text: str, keys: Keys) -> tuple[str, str]:
        """The argv text of one option value (``ArgvBuilder``'s hook)."""
        name = str(keys[-1])
        if param.name == "judges" and text.startswith("rm:"):
            path = self.path(name, text[3:], output=False, model=True)
            return f"rm:{path}", f"rm:{path}"
        if not (is_path_param(param) or param.name in OUTPUT_NAMES):
            return text, text
        path = str(self.path(name, text, output=param.name in OUTPUT_NAMES))
        return path, path

    def path(self, name: str, text: str, output: bool, model: bool = False) -> Path:
        """An absolute path inside the workspace for ``text``, or a JobOptionError."""
        if FILE_ID.match(text) and not output:
            return self.link(name, text)
        if text.startswith(("/", "~", "\\")) or re.match(r"^[A-Za-z]:", text):
            raise JobOptionError(name, f"option {name!r}: absolute paths are not allowed; "
                                       "upload the file (POST /v1/files) and give its id", text)
        if ".." in Path(text).parts or "\x00" in text:
            raise JobOptionError(name, f"option {name!r}: '..' is not allowed in a path", text)
        path = self.root / text
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise JobOptionError(name, f"option {name!r}: {text} leaves the job's workspace "
                                       "(a symlink)", text)
        if os.path.lexists(resolved):
            mode = os.lstat(resolved).st_mode
            if not (stat.S_ISREG(mode) or (model and stat.S_ISDIR(mode))):
                raise JobOptionError(name, f"option {name!r}: {text} is not a regular file",
                                     text)
        elif not output:
            raise JobOptionError(name, f"option {name!r}: no file {text} in the job's "
                                       "workspace; upload it (POST /v1/files) and give its id",
                                 text)
        return resolved

    def link(self, name: str, file_id: str) -> Path:
        """An uploaded file, linked (or copied) into the workspace's inputs."""
        stored = self.files.get(file_id)
        if stored is None:
            raise JobOptionError(name, f"option {name!r}: no file {file_id} of yours", file_id)
        target = self.root / "inputs" / file_id
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            try:
                os.link(stored, target)
            except OSError:
                shutil.copyfile(stored, target)
        return target


def build_argv(kind: str, options: dict[str, Any], job_dir: Path, db_path: Path | str,
               files: dict[str, Path] | None = None) -> tuple[list[str], Path | None]:
    """The CLI argv of a job (after the command's path) and its output file, if any.

    Option names may be written as the flag (``--max-tokens``), without dashes
    (``max-tokens``) or as the parameter name (``max_tokens``); arguments by their parameter
    name (``input_file``). ``files`` are the uploads the caller may name by id."""
    command, parent = job_command(kind)
    space = Workspace(job_dir, files or {})
    tokens = ArgvBuilder(command, " ".join(("rlaif", *KINDS[kind].path)), ("options",),
                         space.value, _fail)
    args: dict[str, list[tuple[Keys, Any]]] = {}
    for key, value in options.items():
        keys: Keys = ("options", key)
        norm = key.lstrip("-").replace("-", "_")
        param = find_param(command, key, arguments=True)
        why = RESERVED.get(norm) or (refused_option(param) if param is not None else None)
        if why or (kind == "pipeline" and param is not None and param.name == "output"):
            why = why or "a pipeline job writes into its own workspace"
            raise JobOptionError(key, f"option {key!r} cannot be set: {why}", value)
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
    if kind == "pipeline":
        tokens.push(["--output", str(space.root / "run")])
    elif out_param is not None and out_param.name not in tokens.keys:
        output = space.root / "output.jsonl"
        tokens.push([long_opt(out_param), str(output)])
    elif out_param is not None:
        output = Path(tokens.argv[tokens.argv.index(long_opt(out_param)) + 1])
    ordered = [p for p in command.params if isinstance(p, click.Argument)]
    tokens.add_args([a for p in ordered for a in args.get(p.name, [])], ("options",))
    params = tokens.check(parent)
    if kind == "batch" and params.get("input_file") is None:
        raise JobOptionError("input_file", "a batch job needs input_file (an uploaded file id)")
    if kind == "pipeline":
        check_pipeline(params, space.root)
    return tokens.argv, output


def check_pipeline(params: dict[str, Any], root: Path) -> None:
    """Load a pipeline job's file as `rlaif run` will, held to the workspace: only generator,
    label, export, train and eval stages, each option and path checked as a job's are."""
    from align.pipeline.file import load_plan
    from align.pipeline.source import parse_sets
    from align.pipeline.stages import Confinement
    from datagen.errors import UserInputError

    confine = Confinement(root, PIPELINE_STAGES, refused_option)
    try:
        load_plan(params["pipeline_file"], output=params["output"], profile=params["profile"],
                  overrides=parse_sets(params["sets"]), confine=confine)
    except UserInputError as exc:
        raise JobOptionError("pipeline_file",
                             exc.message.replace(str(root) + os.sep, "")) from None


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
