"""Checking one pipeline stage against the `rlaif` command it names, before anything runs.

A stage is only as good as the command line it becomes, so each raw ``stages:`` entry is
resolved to its click command and built into an argv by ``align.commands`` (the builder the
service's jobs use too) and parsed by click itself: unknown options, bad values, missing
required options and flags given a non-boolean are caught with the key that holds them. Input paths
must exist or be written by an earlier stage (``StageBuilder`` tracks what each stage writes
and hands click stand-ins for files not written yet); ``--db`` and ``--seed`` are filled in
where a command takes them. The result is a ``Stage``: the command path and the exact argv the
runner (``align.pipeline.run``) will start.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from align.commands import (
    ArgvBuilder,
    Keys,
    find_param,
    is_path_param,
    resolve_command,
)
from align.pipeline.source import Source, substitute
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


@dataclass(frozen=True)
class Confinement:
    """Limits for a pipeline run on someone else's behalf (a service job): only these
    command groups, options ``refuse`` allows, and paths whose real location is a regular
    file (or, for models, a folder) inside ``root``."""

    root: Path
    commands: tuple[str, ...]
    refuse: Callable[[click.Parameter], str | None]

    def check_path(self, path: Path, what: str) -> str | None:
        """Why ``path`` may not be used (None: it may)."""
        real = Path(os.path.realpath(path))
        if not real.is_relative_to(self.root.resolve()):
            return f"{path} is outside the job's workspace"
        if os.path.lexists(real):
            mode = os.stat(real).st_mode
            if not (stat.S_ISREG(mode) or (what == "model directory" and stat.S_ISDIR(mode))):
                return f"{path} is not a regular file"
        return None


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


def stage_command(words: tuple[str, ...]) -> tuple[click.Command, click.Context]:
    """(command, its parent context) for a stage's command path; raises LookupError with the
    reason when it cannot be a stage."""
    if words[0] in NOT_STAGES:
        raise LookupError(f"'{words[0]}' cannot be a stage: {NOT_STAGES[words[0]]}")
    return resolve_command(words)


class StageBuilder:
    """Turns the raw stage entries of a file into checked Stages, tracking what earlier
    stages write so that later inputs may name files that do not exist yet."""

    def __init__(self, src: Source, variables: dict[str, Any], output: Path, db: Path,
                 seed: int | None, confine: Confinement | None = None,
                 cluster: dict[str, str] | None = None) -> None:
        self.src, self.variables, self.output, self.db, self.seed = (
            src, variables, output, db, seed)
        self.confine = confine
        self.cluster = cluster or {}  # top-level executor / ray_address, for stages taking them
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
        if self.confine is not None and words[0] not in self.confine.commands:
            raise src.error((*here, "stage"), f"'{' '.join(words)}' cannot be a stage here "
                                              f"(use {', '.join(self.confine.commands)})")
        try:
            command, parent = stage_command(words)
        except LookupError as exc:
            raise src.error((*here, "stage"), str(exc)) from None
        stage = Stage(index=index, name=str(raw.get("name") or " ".join(words)), words=words,
                      argv=[], module="align.cli")
        paths = StagePaths(self, stage)
        tokens = ArgvBuilder(command, stage.label, here, paths.value,
                             lambda keys, message, _param: src.error(keys, message))
        options = raw.get("options") or {}
        if not isinstance(options, dict):
            raise src.error((*here, "options"), "expected a mapping of option names to values")
        for key, value in options.items():
            keys = (*here, "options", key)
            tokens.add_option(str(key), substitute(src, keys, value, self.variables), keys)
        args = raw.get("args") or []
        if not isinstance(args, list):
            raise src.error((*here, "args"), "expected a list of positional arguments")
        args = substitute(src, (*here, "args"), args, self.variables)
        tokens.add_args([((*here, "args", i), a) for i, a in enumerate(args)], (*here, "args"))
        paths.add_defaults(tokens)
        tokens.check(parent)
        stage.argv = tokens.argv
        stage.outputs = paths.outputs
        self.produced.extend(paths.outputs)
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

    def stand_in_output(self, path: Path) -> Path:
        """A path named like ``path`` in an existing folder, for click's output checks."""
        assert self.tmp is not None
        folder = self.tmp / "outputs" / str(len(self.produced))
        folder.mkdir(parents=True, exist_ok=True)
        return folder / path.name

    def stand_in_model(self) -> str:
        """A folder that passes the model-directory check, for a model an earlier stage
        trains."""
        assert self.tmp is not None
        folder = self.tmp / "model"
        folder.mkdir(exist_ok=True)
        (folder / "config.json").touch()
        return str(folder)


def export_test_split(path: Path) -> Path:
    """The test split an export writes next to ``X.jsonl``: ``X.test.jsonl``."""
    return path.with_name(f"{path.stem}.test{path.suffix}") if path.suffix else path


class StagePaths:
    """What the path values of one stage mean: outputs it writes, inputs that must exist or
    be written by an earlier stage (click is handed a stand-in for those), model folders."""

    def __init__(self, builder: StageBuilder, stage: Stage) -> None:
        self.builder, self.stage = builder, stage
        self.outputs: list[Path] = []

    def error(self, keys: Keys, message: str) -> UserInputError:
        return self.builder.src.error(keys, message)

    def add_defaults(self, tokens: ArgvBuilder) -> None:
        """--db for stages that always use a database, --seed from the top-level seed,
        --executor and --ray-address from the top-level settings where the command takes them
        and the stage chooses no executor itself."""
        db = find_param(tokens.command, "db")
        if db is not None and "db" not in tokens.keys and (db.required or has_default(db)):
            tokens.claim(db, ("db",))
            db_path = self.builder.db
            checked = db_path if db_path.parent.is_dir() else self.builder.stand_in_output(db_path)
            tokens.push(["--db", str(db_path)], ["--db", str(checked)])
            self.outputs.append(self.builder.db)
        seed = find_param(tokens.command, "seed")
        if seed is not None and "seed" not in tokens.keys and self.builder.seed is not None:
            tokens.claim(seed, ("seed",))
            tokens.push(["--seed", str(self.builder.seed)])
        own = "executor" in tokens.keys  # a stage that chooses its executor keeps its choice
        for name, value in self.builder.cluster.items():
            if find_param(tokens.command, name) is not None and not own and (
                    name not in tokens.keys):
                tokens.add_option(name, value, (name,))

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

    def value(self, param: click.Parameter, text: str, keys: Keys) -> tuple[str, str]:
        """(value for the real run, value for click's check) of one option value."""
        role = self.role(param)
        confine = self.builder.confine
        if confine is not None and (why := confine.refuse(param)):
            raise self.error(keys, f"not allowed here: {why}")
        if role == "judge" and text.startswith("rm:"):
            path = self.resolve(text[3:], keys, "model directory")
            self.require(path, keys, "reward model")
            return f"rm:{path}", f"rm:{path}"
        if role in ("", "judge") or text == "-" or (
                role == "model" and (text == "default" or (
                    "://" in text and confine is None))):
            return text, text
        what = "model directory" if role == "model" else "file"
        path = self.resolve(text, keys, what)
        if role == "output":
            self.outputs.append(path)
            # run_stage creates the output's folder; until then click checks a stand-in
            checked = path if path.parent.is_dir() else self.builder.stand_in_output(path)
            return str(path), str(checked)
        self.require(path, keys, what)
        if path.exists():
            return str(path), str(path)
        if role == "model":
            return str(path), self.builder.stand_in_model()
        return str(path), self.builder.stand_in(param)

    def resolve(self, text: str, keys: Keys, what: str = "file") -> Path:
        path = Path(text).expanduser()
        path = path if path.is_absolute() else self.builder.output / path
        confine = self.builder.confine
        if confine is not None and (why := confine.check_path(path, what)):
            raise self.error(keys, why)
        return path

    def require(self, path: Path, keys: Keys, what: str) -> None:
        if not path.exists() and not self.builder.made_earlier(path):
            raise self.error(keys, f"no such {what}: {path} (and no earlier stage writes it)")


def has_default(param: click.Parameter) -> bool:
    """Whether the parameter has a default value (click 8.3+ marks none with a sentinel)."""
    default = param.default
    return default is not None and "UNSET" not in repr(default)
