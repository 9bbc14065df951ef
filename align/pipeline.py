"""Pipelines: a YAML file of `rlaif` commands run in order, checked first, resumable after a kill.

A pipeline names its stages exactly as the command line does, so anything a person can type
can be put in a file, and nothing else can::

    name: tiny                  # optional, for messages
    output: runs/tiny           # folder for everything (default: ./<file stem>); relative
                                # stage paths resolve inside it, and stages run in it
    db: rlaif.db                # project database, relative to output (default rlaif.db)
    seed: 0                     # given as --seed to every stage that has one and sets none
    vars: {n: 8}                # ${n} in any value; a value that is exactly "${n}" keeps its type
    profiles: {quick: {n: 2}}   # named sets of vars (`rlaif run --profile quick`)
    stages:
      - stage: generate constrained       # a command path of `rlaif`
        options: {limit: "${n}", output: prompts.jsonl}
      - stage: judge-report
        name: report                      # optional, for --from
        options: {reference: verify}
        args: [labels.jsonl]              # positional arguments

Option keys are the long option names with or without the leading dashes (``max-tokens``,
``--max-tokens``, ``max_tokens`` or ``-o``); true/false switch a flag on or off, a list repeats
an option, null leaves it out. ``--db`` is added to every stage that always uses a database;
write ``db: ${db}`` where a database is optional (``generate flan``). Built-in variables:
``${output}``, ``${db}``, ``${seed}`` and ``${pipeline_dir}`` (the folder of the file, for data
shipped next to it).

Before anything runs, each stage is resolved to its click command through ``align.cli`` and its
arguments are parsed by click itself (``make_context``, nothing invoked); every input path must
exist or be written by an earlier stage. A mistake is one ``FILE:LINE: stages[3].options.key:
what is wrong`` message and exit status 2. Each stage then runs as its own process
(``python -m align.cli STAGE ARGS``) that dies with the runner, so a crash cannot corrupt the
runner, and each stage resumes through the request ledger. Stage status (start and end times,
exit status, the exact argv) goes to the ``pipeline_stages`` table of the project database,
keyed by the pipeline hash and the stage index: the hash covers the stage and every stage
before it, so editing a later stage keeps the finished work before it. Run again after a kill,
the runner skips finished stages and reruns the unfinished one; ``--from`` reruns from a stage
on. The module also holds the held-out evaluation the demo ends with (constraint satisfaction
of policies on constrained prompts, with Wilson intervals).
"""

from __future__ import annotations

import ctypes
import difflib
import hashlib
import json
import math
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import yaml

from datagen import store
from datagen.errors import UserInputError

TABLE = "pipeline_stages"
TOP_KEYS = ("name", "output", "db", "seed", "vars", "profiles", "stages")
STAGE_KEYS = ("stage", "name", "options", "args")
BUILTIN_VARS = ("output", "db", "seed", "pipeline_dir")
OUTPUT_PARAMS = frozenset({"output", "out", "db"})  # written by a stage, never required to exist
MODEL_DIR_PARAMS = frozenset({"model", "models", "policy", "reference", "reward_model",
                              "ref_model"})
MODEL_DIR_GROUPS = ("train", "eval")  # where those names mean a local model directory
NOT_STAGES = {
    "run": "a pipeline does not run pipelines",
    "demo": "a pipeline does not run pipelines",
    "serve": "it runs until stopped; start it beside the pipeline and give stages base-url",
}
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
PR_SET_PDEATHSIG = 1

Keys = tuple[str | int, ...]


# --- where in the file ----------------------------------------------------------------------


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


def dotted(keys: Keys) -> str:
    """``("stages", 3, "options", "n")`` -> ``stages[3].options.n``."""
    out = ""
    for key in keys:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out


# --- the plan ----------------------------------------------------------------------------------


@dataclass
class Stage:
    """One resolved, checked stage: the command path, its argv and the record key."""

    index: int
    name: str
    words: tuple[str, ...]
    argv: list[str]
    module: str
    key: str = ""
    outputs: list[Path] = field(default_factory=list)

    @property
    def label(self) -> str:
        return " ".join(self.words)

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, *self.words, *self.argv]

    @property
    def record_id(self) -> str:
        return f"{self.key}:{self.index}"


@dataclass
class Plan:
    """A checked pipeline: where things go and the stages in order."""

    file: Path
    name: str
    output: Path
    db: Path
    seed: int | None
    stages: list[Stage]
    digest: str

    def find(self, spec: str) -> int:
        """Index of the stage named by ``spec``: its 1-based number, its name or its command."""
        if spec.isdigit():
            number = int(spec)
            if not 1 <= number <= len(self.stages):
                raise UserInputError(f"--from {spec}: the pipeline has {len(self.stages)} stages")
            return number - 1
        for matcher in (lambda s: s.name == spec, lambda s: s.label == spec):
            hits = [s.index for s in self.stages if matcher(s)]
            if len(hits) == 1:
                return hits[0]
            if hits:
                numbers = ", ".join(str(i + 1) for i in hits)
                raise UserInputError(f"--from {spec}: ambiguous (stages {numbers}); give the "
                                     "number or name the stages")
        names = ", ".join(f"{s.index + 1} {s.name}" for s in self.stages)
        raise UserInputError(f"--from {spec}: no such stage (stages: {names})")


def load_plan(path: str | Path, *, output: str | Path | None = None, profile: str | None = None,
              overrides: dict[str, Any] | None = None) -> Plan:
    """Read, resolve and check a pipeline file; any mistake raises a one-line UserInputError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{path}: cannot read pipeline: {exc}") from None
    src = Source(path, text)
    doc = src.data
    if not isinstance(doc, dict):
        raise src.error((), "expected a mapping with stages:")
    for key in doc:
        if key not in TOP_KEYS:
            raise src.error((key,), f"unknown key (expected {', '.join(TOP_KEYS)})")
    variables = user_vars(src, doc, profile, overrides or {})
    variables["pipeline_dir"] = str(path.resolve().parent)
    out_dir = Path(output) if output is not None else Path(
        substitute(src, ("output",), doc.get("output") or path.stem, variables))
    out_dir = out_dir.expanduser().resolve()
    variables["output"] = str(out_dir)
    db = out_dir / Path(substitute(src, ("db",), doc.get("db") or "rlaif.db", variables))
    variables["db"] = str(db)
    seed = doc.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise src.error(("seed",), f"expected an integer, got {seed!r}")
    variables["seed"] = seed
    stages_raw = doc.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise src.error(("stages",), "expected a non-empty list of stages")
    builder = StageBuilder(src, variables, out_dir, db, seed)
    with builder.scratch():
        stages = [builder.build(i, raw) for i, raw in enumerate(stages_raw)]
    return Plan(file=path, name=str(doc.get("name") or path.stem), output=out_dir, db=db,
                seed=seed, stages=stages, digest=chain_keys(stages, out_dir, db))


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
    if whole:
        return lookup(whole.group(1))

    def text(match: re.Match) -> str:
        found = lookup(match.group(1))
        if found is None or isinstance(found, dict | list):
            raise src.error(keys, f"${{{match.group(1)}}} is {found!r}; cannot put it in text")
        return str(found).lower() if isinstance(found, bool) else str(found)

    return VAR.sub(text, value)


def chain_keys(stages: list[Stage], output: Path, db: Path) -> str:
    """Give each stage its key (a hash of it and every stage before it); return the last."""
    digest = hashlib.sha256(json.dumps([str(output), str(db)]).encode()).hexdigest()
    for stage in stages:
        body = json.dumps([digest, stage.words, stage.argv])
        digest = hashlib.sha256(body.encode()).hexdigest()
        stage.key = digest[:16]
    return digest[:16]


# --- resolving and checking one stage --------------------------------------------------------


def resolve_command(words: tuple[str, ...]) -> tuple[click.Command, click.Context, str]:
    """(command, its parent context, module to run it with) for a command path; raises
    LookupError with the reason when there is none."""
    from align.cli import main

    if words[0] in NOT_STAGES:
        raise LookupError(f"'{words[0]}' cannot be a stage: {NOT_STAGES[words[0]]}")
    ctx = click.Context(main, info_name="rlaif")
    command: click.Command = main
    for depth, word in enumerate(words):
        if not isinstance(command, click.Group):
            raise LookupError(f"'{' '.join(words[:depth])}' has no subcommands")
        try:
            sub = command.get_command(ctx, word)
        except ImportError as exc:
            sub, why = None, f" (cannot load it: {exc})"
        else:
            why = ""
        if sub is None:
            choices = ", ".join(command.list_commands(ctx))
            place = f"under '{' '.join(words[:depth])}'" if depth else "in rlaif"
            raise LookupError(f"no such command '{' '.join(words)}'{why} "
                              f"(commands {place}: {choices})")
        if depth < len(words) - 1:
            ctx = click.Context(sub, info_name=word, parent=ctx)
        command = sub
    if isinstance(command, click.Group):
        choices = ", ".join(command.list_commands(ctx))
        raise LookupError(f"'{' '.join(words)}' needs a subcommand ({choices})")
    return command, ctx, "align.cli"


def find_param(command: click.Command, key: str) -> click.Parameter | None:
    """The option a pipeline key names: ``max-tokens``, ``--max-tokens``, ``max_tokens``, ``o``."""
    bare = key.lstrip("-")
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        names = [o.lstrip("-") for o in (*param.opts, *param.secondary_opts)]
        if bare in names or bare.replace("_", "-") in names or param.name == bare.replace(
                "-", "_"):
            return param
    return None


def option_names(command: click.Command) -> list[str]:
    return [max(p.opts, key=len).lstrip("-") for p in command.params
            if isinstance(p, click.Option) and p.name != "help"]


def is_path_param(param: click.Parameter) -> bool:
    return isinstance(param.type, click.Path)


class StageBuilder:
    """Turns the raw stage entries of a file into checked Stages, tracking what earlier
    stages write so that later inputs may name files that do not exist yet."""

    def __init__(self, src: Source, variables: dict[str, Any], output: Path, db: Path,
                 seed: int | None) -> None:
        self.src, self.variables, self.output, self.db, self.seed = (
            src, variables, output, db, seed)
        self.produced: list[Path] = [db]
        self.tmp: Path | None = None

    @contextmanager
    def scratch(self) -> Iterator[None]:
        """A temporary folder holding stand-ins for not-yet-written inputs while checking."""
        with tempfile.TemporaryDirectory(prefix="rlaif-pipeline-") as tmp:
            self.tmp = Path(tmp)
            yield
            self.tmp = None

    def build(self, index: int, raw: Any) -> Stage:
        src, here = self.src, ("stages", index)
        if not isinstance(raw, dict):
            raise src.error(here, "expected a mapping with stage: and options:")
        for key in raw:
            if key not in STAGE_KEYS:
                raise src.error((*here, key), f"unknown key (expected {', '.join(STAGE_KEYS)})")
        words = tuple(str(raw.get("stage") or "").split())
        if not words:
            raise src.error((*here, "stage"), "missing the command, e.g. stage: generate "
                                              "responses")
        try:
            command, parent, module = resolve_command(words)
        except LookupError as exc:
            raise src.error((*here, "stage"), str(exc)) from None
        stage = Stage(index=index, name=str(raw.get("name") or " ".join(words)), words=words,
                      argv=[], module=module)
        tokens = StageTokens(self, stage, command)
        options = raw.get("options") or {}
        if not isinstance(options, dict):
            raise src.error((*here, "options"), "expected a mapping of option names to values")
        for key, value in options.items():
            tokens.add_option(str(key), substitute(src, (*here, "options", key), value,
                                                   self.variables))
        args = raw.get("args") or []
        if not isinstance(args, list):
            raise src.error((*here, "args"), "expected a list of positional arguments")
        tokens.add_args(substitute(src, (*here, "args"), args, self.variables))
        tokens.add_defaults()
        tokens.check(parent)
        stage.argv = tokens.argv
        stage.outputs = tokens.outputs
        self.produced.extend(tokens.outputs)
        return stage

    def made_earlier(self, path: Path) -> bool:
        return any(path == p or p in path.parents or path == export_test_split(p)
                   for p in self.produced)

    def stand_in(self, param: click.Parameter) -> str:
        """An existing path of the kind ``param`` accepts, for click's checks."""
        assert self.tmp is not None
        if isinstance(param.type, click.Path) and not param.type.file_okay:
            return str(self.tmp)
        stand_in = self.tmp / "stand-in"
        stand_in.touch()
        return str(stand_in)


def export_test_split(path: Path) -> Path:
    """The test split an export writes next to ``X.jsonl``: ``X.test.jsonl``."""
    return path.with_name(f"{path.stem}.test{path.suffix}") if path.suffix else path


class StageTokens:
    """The argv of one stage as it is built, with the pipeline key behind each option."""

    def __init__(self, builder: StageBuilder, stage: Stage, command: click.Command) -> None:
        self.builder, self.stage, self.command = builder, stage, command
        self.here: Keys = ("stages", stage.index)
        self.argv: list[str] = []
        self.check_argv: list[str] = []
        self.keys: dict[str, Keys] = {}  # param name -> where it was set
        self.outputs: list[Path] = []

    def error(self, keys: Keys, message: str) -> UserInputError:
        return self.builder.src.error(keys, message)

    def add_option(self, key: str, value: Any) -> None:
        keys = (*self.here, "options", key)
        param = find_param(self.command, key)
        if param is None or param.name == "help":
            names = option_names(self.command)
            close = difflib.get_close_matches(key.lstrip("-"), names, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise self.error(keys, f"no such option for '{self.stage.label}'{hint}")
        if param.name in self.keys:
            raise self.error(keys, f"given twice (also as {dotted(self.keys[param.name])})")
        self.keys[param.name] = keys
        if value is None:
            return
        opt = max(param.opts, key=len)
        if param.is_flag and not param.count:
            if not isinstance(value, bool):
                raise self.error(keys, f"{opt} is a switch: give true or false")
            if value:
                self.push([opt], [opt])
            elif param.secondary_opts:
                self.push([param.secondary_opts[0]], [param.secondary_opts[0]])
            return
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and not (param.multiple or param.nargs != 1):
            raise self.error(keys, f"{opt} takes one value, got a list")
        for item in values:
            if isinstance(item, dict | list):
                raise self.error(keys, f"expected a plain value, got {item!r}")
            real, check = self.path_value(param, item, keys)
            self.push([opt, real], [opt, check])

    def push(self, real: list[str], check: list[str]) -> None:
        self.argv += real
        self.check_argv += check

    def add_args(self, args: list[Any]) -> None:
        params = [p for p in self.command.params if isinstance(p, click.Argument)]
        if len(args) > sum(p.nargs if p.nargs > 0 else len(args) for p in params):
            raise self.error((*self.here, "args"),
                             f"'{self.stage.label}' takes {len(params)} positional arguments")
        position = 0
        reals, checks = [], []
        for param in params:
            take = param.nargs if param.nargs > 0 else len(args) - position
            for item in args[position:position + take]:
                keys = (*self.here, "args", position)
                if isinstance(item, dict | list) or item is None:
                    raise self.error(keys, f"expected a plain value, got {item!r}")
                real, check = self.path_value(param, item, keys)
                reals.append(real)
                checks.append(check)
                self.keys.setdefault(param.name, keys)
                position += 1
        dash = ["--"] if any(a.startswith("-") and a != "-" for a in reals) else []
        self.argv += dash + reals
        self.check_argv += dash + checks

    def add_defaults(self) -> None:
        """--db for stages that always use a database, --seed from the top-level seed."""
        db = find_param(self.command, "db")
        if db is not None and "db" not in self.keys and (db.required or has_default(db)):
            self.keys["db"] = ("db",)
            self.argv += ["--db", str(self.builder.db)]
            self.check_argv += ["--db", str(self.builder.db)]
            self.outputs.append(self.builder.db)
        seed = find_param(self.command, "seed")
        if seed is not None and "seed" not in self.keys and self.builder.seed is not None:
            self.keys["seed"] = ("seed",)
            self.argv += ["--seed", str(self.builder.seed)]
            self.check_argv += ["--seed", str(self.builder.seed)]

    def role(self, param: click.Parameter) -> str:
        """'output', 'input' (a path that must exist) or '' for a plain value."""
        opts = (*getattr(param, "opts", ()),)
        if param.name in OUTPUT_PARAMS or "-o" in opts:
            return "output"
        if is_path_param(param):
            return "input"
        if self.stage.words[0] in MODEL_DIR_GROUPS and param.name in MODEL_DIR_PARAMS:
            return "model"
        if param.name == "judges":
            return "judge"
        return ""

    def path_value(self, param: click.Parameter, value: Any, keys: Keys) -> tuple[str, str]:
        """(value for the real run, value for click's check) of one option value."""
        text = str(value).lower() if isinstance(value, bool) else str(value)
        role = self.role(param)
        if role == "judge" and text.startswith("rm:"):
            path = self.resolve(text[3:])
            self.require(path, keys, "reward model")
            return f"rm:{path}", f"rm:{path}"
        if role in ("", "judge") or text == "-" or (
                role == "model" and (text == "default" or "://" in text)):
            return text, text
        path = self.resolve(text)
        if role == "output":
            self.outputs.append(path)
            return str(path), str(path)
        self.require(path, keys, "model directory" if role == "model" else "file")
        if path.exists() or role == "model":
            return str(path), str(path)
        return str(path), self.builder.stand_in(param)

    def resolve(self, text: str) -> Path:
        path = Path(text).expanduser()
        return path if path.is_absolute() else self.builder.output / path

    def require(self, path: Path, keys: Keys, what: str) -> None:
        if not path.exists() and not self.builder.made_earlier(path):
            raise self.error(keys, f"no such {what}: {path} (and no earlier stage writes it)")

    def check(self, parent: click.Context) -> None:
        """Let click parse the arguments (types, ranges, choices, required options)."""
        try:
            ctx = self.command.make_context(self.stage.words[-1], list(self.check_argv),
                                            parent=parent, resilient_parsing=False)
            ctx.close()
        except click.MissingParameter as exc:
            raise self.error(self.here, f"'{self.stage.label}' needs "
                             f"{describe(exc.param)}") from None
        except click.BadParameter as exc:
            where = self.keys.get(exc.param.name, self.here) if exc.param else self.here
            name = describe(exc.param) if exc.param else "a value"
            raise self.error(where, f"invalid value for {name}: {exc.message}") from None
        except click.exceptions.Exit:
            raise self.error(self.here, "--help/--version are not stage options") from None
        except click.ClickException as exc:
            raise self.error(self.here, exc.format_message()) from None


def has_default(param: click.Parameter) -> bool:
    """Whether the parameter has a default value (click 8.3+ marks none with a sentinel)."""
    default = param.default
    return default is not None and "UNSET" not in repr(default)


def describe(param: click.Parameter | None) -> str:
    if param is None:
        return "an argument"
    if isinstance(param, click.Argument):
        return f"the argument {param.human_readable_name} (give it under args:)"
    return f"option {max(param.opts, key=len)}"


# --- running -----------------------------------------------------------------------------------


Echo = Callable[[str], None]


def stage_record(db: Any, stage: Stage) -> dict[str, Any] | None:
    rows = store.load_rows(db, TABLE, id=stage.record_id)
    return rows[0] if rows else None


def save_record(db: Any, plan: Plan, stage: Stage, **fields: Any) -> None:
    """Write a stage's row: status, argv, pid, returncode, started_at, finished_at (unknown
    values are left out, not stored as null text, so each column gets its value's type)."""
    row = {"id": stage.record_id, "pipeline": plan.digest, "stage_key": stage.key,
           "stage_index": stage.index, "stage": stage.label, "name": stage.name,
           "argv": stage.command, "pipeline_file": str(plan.file), "status": "running", **fields}
    store.save_rows(db, TABLE, [{k: v for k, v in row.items() if v is not None}], pk="id",
                    replace=True)


def stage_states(plan: Plan) -> list[str]:
    """'done' or 'pending' per stage, from the database (without creating it)."""
    if not plan.db.is_file():
        return ["pending"] * len(plan.stages)
    db = store.open_db(plan.db)
    return [((stage_record(db, s) or {}).get("status") == "done") and "done" or "pending"
            for s in plan.stages]


def describe_plan(plan: Plan, start: int = 0) -> list[str]:
    """One line per stage for --dry-run: number, state and the command line."""
    lines = [f"pipeline {plan.name}: {len(plan.stages)} stages, output {plan.output}, "
             f"db {plan.db}"]
    for stage, state in zip(plan.stages, stage_states(plan), strict=True):
        if state == "done" and stage.index >= start:
            state = "rerun"
        cmd = shlex.join(["rlaif", *stage.words, *stage.argv])
        lines.append(f"[{stage.index + 1}/{len(plan.stages)}] {state:7} {stage.name}: {cmd}")
    return lines


def run_plan(plan: Plan, start: int | None = None, echo: Echo | None = None) -> int:
    """Run the stages in order, skipping finished ones before ``start`` (every finished one
    when ``start`` is None); returns 0, or the exit status of the stage that failed."""
    echo = echo or (lambda line: click.echo(line, err=True))
    plan.output.mkdir(parents=True, exist_ok=True)
    (plan.output / "logs").mkdir(exist_ok=True)
    db = store.open_db(plan.db)
    started = time.time()
    for stage in plan.stages:
        tag = f"[{stage.index + 1}/{len(plan.stages)}] {stage.name}"
        record = stage_record(db, stage)
        rerun = start is not None and stage.index >= start
        if record and record["status"] == "done" and not rerun:
            echo(f"{tag}: done earlier, skipped")
            continue
        if record and record["status"] == "running":
            echo(f"{tag}: resuming an unfinished run")
        echo(f"{tag}: {shlex.join(['rlaif', *stage.words, *stage.argv])}")
        began = time.time()
        code = run_stage(db, plan, stage)
        if code == 0:
            echo(f"{tag}: done in {time.time() - began:.0f} s")
        else:
            echo(f"{tag}: failed with exit status {code}; see {log_path(plan, stage)}; run "
                 "again to resume")
            return code if code > 0 else 1
    run_report(plan, echo)
    echo(f"pipeline {plan.name}: {len(plan.stages)} stages done in "
         f"{time.time() - started:.0f} s")
    return 0


def last_output(plan: Plan, stage: Stage) -> str:
    """What the stage printed the last time it ran (from its log)."""
    path = log_path(plan, stage)
    if not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace")
    return text.rsplit("\n$ ", 1)[-1].split("\n", 1)[-1] if "\n$ " in text else text


def log_path(plan: Plan, stage: Stage) -> Path:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", stage.name).strip("-") or "stage"
    return plan.output / "logs" / f"{stage.index + 1:02d}-{slug}.log"


def run_stage(db: Any, plan: Plan, stage: Stage) -> int:
    """Run one stage as a child process (that dies with us), teeing its output to its log."""
    began = time.time()
    command = stage.command
    save_record(db, plan, stage, status="running", started_at=began)
    with log_path(plan, stage).open("ab") as log:
        log.write(f"\n$ {shlex.join(command)}\n".encode())
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=plan.output, env=child_env(),
                                preexec_fn=die_with_parent())
        try:
            save_record(db, plan, stage, status="running", started_at=began, pid=proc.pid)
            tee(proc, log)
            code = proc.wait()
        finally:
            stop_child(proc)
    took = time.time()
    save_record(db, plan, stage, status="done" if code == 0 else "failed", returncode=code,
                pid=proc.pid, started_at=began, finished_at=took)
    return code


def tee(proc: subprocess.Popen, log: Any) -> None:
    """Copy the child's output to its log and to our stderr as it comes."""
    out = getattr(sys.stderr, "buffer", None)
    while chunk := proc.stdout.read1(65536):
        log.write(chunk)
        log.flush()
        if out is not None:
            out.write(chunk)
            out.flush()
        else:
            sys.stderr.write(chunk.decode(errors="replace"))


def stop_child(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def child_env() -> dict[str, str]:
    """Our environment, unbuffered, with this package importable from the output folder."""
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def die_with_parent() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to kill the child when this process dies (even by
    SIGKILL), so a killed runner leaves no stage running; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the runner died before the hook ran
            os._exit(1)

    return hook


def run_report(plan: Plan, echo: Echo) -> Path | None:
    """Run `rlaif report --db DB -o OUTPUT/report.html` when that command exists, giving it
    the output folder, label files and exports too when it takes them."""
    try:
        command, parent, module = resolve_command(("report",))
    except LookupError:
        return None
    target = plan.output / "report.html"
    argv = ["--db", str(plan.db), "-o", str(target), *report_extras(plan, command)]
    try:
        command.make_context("report", list(argv), parent=parent).close()
    except click.ClickException as exc:
        echo(f"report: not run (`rlaif report` does not take these options: "
             f"{exc.format_message()})")
        return None
    code = subprocess.call([sys.executable, "-m", module, "report", *argv], cwd=plan.output,
                           env=child_env(), stdin=subprocess.DEVNULL,
                           preexec_fn=die_with_parent())
    if code != 0:
        echo(f"report: `rlaif report` failed with exit status {code}")
        return None
    echo(f"report: {target}")
    return target


def report_extras(plan: Plan, command: click.Command) -> list[str]:
    """--runs-dir OUTPUT, --labels for label outputs, --dataset for exports (as supported)."""
    extras: list[str] = []
    if find_param(command, "runs-dir") is not None:
        extras += ["--runs-dir", str(plan.output)]
    wanted = (("labels", lambda s: s.words == ("label",)),
              ("dataset", lambda s: s.words[0] == "export"))
    for option, chosen in wanted:
        if find_param(command, option) is None:
            continue
        for stage in filter(chosen, plan.stages):
            for path in stage.outputs:
                if path != plan.db and path.exists():
                    extras += [f"--{option}", str(path)]
    return extras


# --- held-out constraint satisfaction ------------------------------------------------------


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (0..1 when n is 0)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_bootstrap(base: list[float], other: list[float], rounds: int = 2000,
                     seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of mean(other) - mean(base), resampling the paired items."""
    rng = random.Random(seed)
    n = len(base)
    if n == 0:
        return 0.0, 0.0
    diffs = [o - b for b, o in zip(base, other, strict=True)]
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(rounds))
    tail = (1 - level) / 2
    return means[int(tail * rounds)], means[min(rounds - 1, int((1 - tail) * rounds))]


def read_constrained(path: str | Path) -> list[Any]:
    """Constrained prompts (``prompt`` and ``constraints`` per line), each with constraints."""
    from datagen.responses import read_prompts

    items = read_prompts(path)
    for item in items:
        if not item.constraints:
            raise UserInputError(f"{path}: prompt {item.id!r} has no constraints to check")
    return items


def sample_policy(model: str, prompts: list[Any], *, temperature: float, max_new_tokens: int,
                  seed: int, batch_size: int = 16) -> list[str]:
    """One sampled answer per prompt (text or chat messages) from a local causal LM; the
    same arguments give every policy the same sampling settings and seeds."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from align.train import resolve_model
    from datagen.responses import as_messages

    model_dir = resolve_model(model)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    network = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    texts: list[str] = []
    for start in range(0, len(prompts), batch_size):
        batch = [as_messages(p) for p in prompts[start:start + batch_size]]
        encoded = tokenizer.apply_chat_template(batch, add_generation_prompt=True, padding=True,
                                                return_dict=True, return_tensors="pt")
        torch.manual_seed(seed + start)
        sampling = ({"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0}
                    if temperature > 0 else {"do_sample": False})
        with torch.inference_mode():
            out = network.generate(**encoded, max_new_tokens=max_new_tokens,
                                   pad_token_id=tokenizer.pad_token_id, **sampling)
        texts += tokenizer.batch_decode(out[:, encoded["input_ids"].shape[1]:],
                                        skip_special_tokens=True)
    return texts


def satisfaction(items: list[Any], texts: list[str]) -> dict[str, Any]:
    """How many answers satisfy all their constraints, and each constraint kind's pass rate."""
    from judges.verify import verify_response

    per_item: list[int] = []
    kinds: dict[str, list[int]] = {}
    for item, text in zip(items, texts, strict=True):
        result = verify_response(item.constraints, text)
        per_item.append(int(all(result.passed)))
        for kind, passed in zip(result.kinds, result.passed, strict=True):
            kinds.setdefault(kind, []).append(int(passed))
    checks = [p for values in kinds.values() for p in values]
    return {
        **rate(sum(per_item), len(per_item)),
        "constraints": rate(sum(checks), len(checks)),
        "by_kind": {kind: rate(sum(v), len(v)) for kind, v in sorted(kinds.items())},
        "per_item": per_item,
    }


def rate(k: int, n: int) -> dict[str, Any]:
    low, high = wilson_interval(k, n)
    return {"passed": k, "n": n, "rate": k / n if n else 0.0, "ci95": [low, high]}


def constraint_eval(models: list[str], prompts_path: str | Path, *, temperature: float = 0.7,
                    max_new_tokens: int = 128, samples: int = 1, seed: int = 0,
                    batch_size: int = 16,
                    sampler: Callable[..., list[str]] = sample_policy) -> dict[str, Any]:
    """Held-out constraint satisfaction of each policy on the same constrained prompts and
    sampling settings; the first model is the baseline the others are compared with (paired
    bootstrap interval of the difference in the all-satisfied rate)."""
    if len(set(models)) != len(models):
        raise UserInputError("--model: each policy once (the first is the baseline)")
    items = read_constrained(prompts_path) * samples
    prompts = [item.prompt for item in items]
    results: dict[str, Any] = {}
    for model in models:
        texts = sampler(model, prompts, temperature=temperature, max_new_tokens=max_new_tokens,
                        seed=seed, batch_size=batch_size)
        results[model] = satisfaction(items, texts)
    base = results[models[0]]["per_item"]
    for model in models[1:]:
        mine = results[model]["per_item"]
        results[model]["vs_baseline"] = {
            "baseline": models[0],
            "diff": (sum(mine) - sum(base)) / len(base),
            "ci95": list(paired_bootstrap([float(x) for x in base], [float(x) for x in mine],
                                          seed=seed)),
        }
    flat = {}  # top-level rates in the shape `rlaif report` reads (``<name>_rate``, ``_ci``)
    names = [short(m) for m in models]
    for number, (model, name) in enumerate(zip(models, names, strict=True)):
        key = name if names.count(name) == 1 else f"{name}{number + 1}"
        flat[f"{key}_satisfaction_rate"] = results[model]["rate"]
        flat[f"{key}_satisfaction_rate_ci"] = results[model]["ci95"]
    return {"prompts": str(prompts_path), "n": len(items), "items": len(items),
            "samples": samples, "temperature": temperature, "max_new_tokens": max_new_tokens,
            "seed": seed, **flat, "models": results}


def format_eval(report: dict[str, Any]) -> list[str]:
    """The evaluation as a few aligned lines: overall rates, then per constraint kind."""
    def pct(r: dict[str, Any]) -> str:
        low, high = r["ci95"]
        return f"{r['passed']:>3}/{r['n']:<3} {100 * r['rate']:5.1f}% [{100 * low:4.1f}, " \
               f"{100 * high:5.1f}]"

    lines = [f"held-out constraint satisfaction: {report['items']} answers per model "
             f"({report['prompts']}), temperature {report['temperature']}, "
             f"{report['max_new_tokens']} new tokens, seed {report['seed']}; 95% intervals",
             f"{'model':<28} {'all satisfied':<28} {'constraints passed':<28} vs baseline"]
    for model, r in report["models"].items():
        vs = r.get("vs_baseline")
        diff = (f"{100 * vs['diff']:+5.1f} pts [{100 * vs['ci95'][0]:+.1f}, "
                f"{100 * vs['ci95'][1]:+.1f}]") if vs else "(baseline)"
        lines.append(f"{short(model):<28} {pct(r):<28} {pct(r['constraints']):<28} {diff}")
    kinds = sorted({k for r in report["models"].values() for k in r["by_kind"]})
    if kinds:
        lines.append("by constraint kind (passed/checked, rate [95% CI]):")
        for kind in kinds:
            cells = [pct(r["by_kind"][kind]) if kind in r["by_kind"] else "-"
                     for r in report["models"].values()]
            lines.append(f"  {kind:<26} " + "  ".join(f"{c:<28}" for c in cells))
    return lines


def short(model: str) -> str:
    return model if model == "default" else Path(model).name or model
