"""What every command checks in its arguments, declared once as click types and options.

Commands declare their output files and folders, the project database and local model
directories with the types here, so click checks them while it parses the command line:
before any model loads, any request is sent or anything is written, every command refuses
the same mistake with the same one line (exit status 2, naming the option and the path).
The rule for outputs: the folder an output goes into must already exist; rlaif does not
create it (a mistyped folder name would otherwise quietly grow a new tree), and an output
file may not be a directory. `rlaif run` is the one exception: a pipeline owns its output
folder and creates the folders its stages write into. ``--db`` defaults to ``rlaif.db`` in
every command; an existing file must be SQLite, not locked by another process, and not
migrated by a newer rlaif. A model directory must hold a ``config.json`` (nothing is looked
up on a model hub). Names: ``--model`` is always a model name sent to an endpoint; a local model
directory is named by its role, ``--policy`` (a policy trained or evaluated), ``--reward-model``
or ``--model-dir`` (neither: `train rm`'s starting model, `rlaif serve`). Where ``--model``
named a directory before, it is still accepted as a hidden old spelling.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from datagen import store
from datagen.errors import UserInputError

DEFAULT_DB = "rlaif.db"
LOCK_WAIT_S = 2.0  # how long a locked database may stay locked before the check gives up


def param_label(param: click.Parameter | None) -> str:
    """How the user wrote a parameter: ``-o/--output`` or the argument's metavar."""
    if param is None:
        return "value"
    if isinstance(param, click.Argument):
        return param.human_readable_name
    if isinstance(param, RoleOption):
        return param.opts[0]
    return "/".join(param.opts)


def output_problem(path: Path, directory: bool | None = False) -> str | None:
    """Why ``path`` cannot be written as an output file (``directory=False``), folder (True)
    or either (None), or None."""
    if directory is False and path.is_dir():
        return "is a directory"
    if directory is True and path.exists() and not path.is_dir():
        return "is a file, not a folder"
    parent = path.absolute().parent
    if not parent.is_dir():
        return f"no such folder {parent} (rlaif does not create it: mkdir it first)"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"folder {parent} is not writable"
    return None


def model_dir_problem(path: Path) -> str | None:
    """Why ``path`` is not a local model directory, or None."""
    if not path.exists():
        return "not a model directory (no such folder; model hub names are not looked up)"
    if not (path / "config.json").is_file():
        return "not a model directory (no config.json)"
    return None


def check_model_dir(value: str, label: str) -> None:
    """Raise a one-line UserInputError when ``value`` is not a local model directory."""
    problem = model_dir_problem(Path(value).expanduser())
    if problem:
        raise UserInputError(f"{label} {value}: {problem}")


class OutputPath(click.Path):
    """An output file (or with ``directory=True`` an output folder) whose folder exists."""

    def __init__(self, *, directory: bool = False, dir_okay: bool = False,
                 allow_dash: bool = False, path_type: type = Path) -> None:
        super().__init__(file_okay=not directory, dir_okay=directory or dir_okay,
                         allow_dash=allow_dash, path_type=path_type)
        self.directory = directory
        self.either = dir_okay and not directory

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> Any:
        if self.allow_dash and str(value) == "-":
            return value
        path = Path(os.fsdecode(value)).expanduser()
        problem = output_problem(path, directory=None if self.either else self.directory)
        if problem:
            raise UserInputError(f"{param_label(param)} {path}: {problem}")
        return super().convert(value, param, ctx)


class DatabasePath(click.Path):
    """The project database: absent (it will be created) or a usable rlaif SQLite file, or a
    ``postgresql://`` URL (a ``str``; without a password)."""

    def __init__(self, postgres: bool = False) -> None:
        super().__init__(dir_okay=False, path_type=Path)
        self.postgres = postgres

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> Any:
        if store.is_postgres(value):  # a server: what is wrong shows when it is opened
            if not self.postgres:
                raise UserInputError(
                    f"{param_label(param)}: this command keeps its data in a SQLite file; a "
                    "postgresql:// database serves `rlaif batch`, the generators, `rlaif label`, "
                    "`rlaif service` and `rlaif db copy`")
            return store.database_target(value, param_label(param))
        path = Path(os.fsdecode(value)).expanduser()
        problem = store.database_problem(path, LOCK_WAIT_S)
        if problem is None and not path.exists():
            problem = output_problem(path)
        if problem:
            raise UserInputError(f"{param_label(param)} {path}: {problem}")
        return super().convert(value, param, ctx)


class ModelDir(click.ParamType):
    """A local model directory (with ``config.json``); optionally also ``default`` (the
    embedded model) or an endpoint URL. The value is passed on as the text given."""

    name = "DIR"

    def __init__(self, *, allow_default: bool = True, allow_url: bool = False) -> None:
        self.allow_default = allow_default
        self.allow_url = allow_url

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> Any:
        text = str(value)
        if (self.allow_default and text == "default") or (
                self.allow_url and text.startswith(("http://", "https://"))):
            return text
        check_model_dir(text, param_label(param))
        return text


class RoleOption(click.Option):
    """An option named by its role whose later names are old spellings: accepted, but left out
    of --help and messages."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        opts, self.opts = self.opts, self.opts[:1]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = opts


def model_dir_option(flag: str, dest: str, help: str, model_dir: ModelDir | None = None,
                     **extra: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A local model directory option named by its role (``--policy``, ``--reward-model``,
    ``--model-dir``); the old ``--model`` spelling still parses."""
    return click.option(flag, "--model", dest, cls=RoleOption, type=model_dir or ModelDir(),
                        help=help, **extra)


def db_option(help: str = "Project database (request ledger and stored rows).",
              postgres: bool = False,
              **extra: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--db``, the same default and checks in every command (``postgres``: a
    ``postgresql://`` URL is taken too, for commands that only open the database)."""
    if postgres:
        help += " A SQLite file or a postgresql:// URL."
    return click.option("--db", default=DEFAULT_DB, show_default=True,
                        type=DatabasePath(postgres), help=help, **extra)


def output_option(help: str, *, required: bool = True, directory: bool = False,
                  dir_okay: bool = False, allow_dash: bool = False, path_type: type = Path,
                  name: str = "output", **extra: Any
                  ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``-o/--output``, checked before any work (see the module docstring for the rule)."""
    kind = OutputPath(directory=directory, dir_okay=dir_okay, allow_dash=allow_dash,
                      path_type=path_type)
    return click.option("-o", "--output", name, required=required, type=kind, help=help,
                        **extra)
