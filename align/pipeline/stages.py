"""Checking one pipeline stage against the `rlaif` command it names, before anything runs.

A stage is only as good as the command line it becomes, so each raw ``stages:`` entry is
resolved to its click command through ``align.cli`` and its arguments are parsed by click
itself (``make_context``, nothing invoked): unknown options, bad values, missing required
options and flags given a non-boolean are caught with the key that holds them. Input paths
must exist or be written by an earlier stage (``StageBuilder`` tracks what each stage writes
and hands click stand-ins for files not written yet); ``--db`` and ``--seed`` are filled in
where a command takes them. The result is a ``Stage``: the command path and the exact argv the
runner (``align.pipeline.run``) will start.
"""

from __future__ import annotations

import difflib
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from align.pipeline.source import Keys, Source, dotted, substitute
from datagen.errors import UserInputError

STAGE_KEYS = ("stage", "name", "options", "args")
OUTPUT_PARAMS = frozenset({"output", "out", "db"})  # written by a stage, never required to exist
MODEL_DIR_PARAMS = frozenset({"model", "models", "policy", "reference", "reward_model",
                              "ref_model"})
MODEL_DIR_GROUPS = ("train", "eval")  # where those names mean a local model directory
NOT_STAGES = {
    "run": "a pipeline does not run pipelines",
    "demo": "a pipeline does not run pipelines",
    "serve": "it runs until stopped; start it beside the pipeline and give stages base-url",
}


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
