"""Named options to a checked `rlaif` argv: the one builder behind service jobs and pipeline stages.

A service job and a pipeline stage are both a CLI run described as data (a command path and
options named as the command line names them), so both go through ``ArgvBuilder``: it finds the
click parameter each key names (``max-tokens``, ``--max-tokens``, ``max_tokens``, ``o``), turns
values into argv words (true/false switch a flag, a list repeats an option, null leaves it out),
and lets click parse the result with the command's own parser (``make_context``, nothing
invoked), so a job or stage accepts exactly what the command line accepts. What a value means
(a path inside a job's workspace, a file an earlier stage writes) is the caller's hook, and
every mistake is raised through the caller's ``fail`` with the key that holds it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any

import click

Keys = tuple[str | int, ...]
ValueHook = Callable[[click.Parameter, str, Keys], tuple[str, str]]
Fail = Callable[[Keys, str, "click.Parameter | None"], Exception]


def resolve_command(words: Sequence[str]) -> tuple[click.Command, click.Context]:
    """(command, its parent context) for a command path of `rlaif`; raises LookupError with
    the reason when there is none."""
    from align.cli import main

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
    return command, ctx


def find_param(command: click.Command, key: str, arguments: bool = False
               ) -> click.Parameter | None:
    """The parameter a key names: an option by any of its names (``max-tokens``,
    ``--max-tokens``, ``max_tokens``, ``o``), or with ``arguments`` a positional argument by
    its parameter name (``input_file``) or the name its --help shows (``input`` for
    INPUT.jsonl)."""
    bare = key.lstrip("-")
    for param in command.params:
        if isinstance(param, click.Argument):
            if arguments and bare.replace("-", "_") in (param.name, argument_name(param)):
                return param
            continue
        names = [o.lstrip("-") for o in (*param.opts, *param.secondary_opts)]
        if bare in names or bare.replace("_", "-") in names or param.name == bare.replace(
                "-", "_"):
            return param
    return None


def argument_name(param: click.Argument) -> str:
    """A positional argument as --help shows it, as a key: ``INPUT.jsonl`` -> ``input``."""
    return (param.metavar or param.name or "").split(".")[0].lower().replace("-", "_")


def option_names(command: click.Command) -> list[str]:
    """The long names of a command's options (for did-you-mean hints)."""
    return [max(p.opts, key=len).lstrip("-") for p in command.params
            if isinstance(p, click.Option) and p.name != "help"]


def long_opt(param: click.Parameter) -> str:
    """The flag an option is written with on a built argv."""
    return max(param.opts, key=len)


def is_path_param(param: click.Parameter) -> bool:
    """Whether click reads the parameter as a path or file."""
    return isinstance(param.type, click.Path | click.File)


def describe(param: click.Parameter | None) -> str:
    """A parameter as messages name it."""
    if param is None:
        return "an argument"
    if isinstance(param, click.Argument):
        return f"the argument {param.human_readable_name} (give it under args:)"
    return f"option {long_opt(param)}"


def plain_value(value: Any) -> str | None:
    """The argv text of a scalar (booleans as true/false); None for anything else."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    return None


class ArgvBuilder:
    """The argv of one command as it is built, with the key behind each parameter.

    ``argv`` is what runs; ``check_argv`` is what click parses in ``check`` (the two differ
    only where the value hook hands click a stand-in for a file not written yet)."""

    def __init__(self, command: click.Command, label: str, here: Keys, value: ValueHook,
                 fail: Fail) -> None:
        self.command, self.label, self.here = command, label, here
        self.value, self.fail = value, fail
        self.argv: list[str] = []
        self.check_argv: list[str] = []
        self.keys: dict[str, Keys] = {}  # param name -> where it was set

    def add_option(self, key: str, value: Any, keys: Keys) -> None:
        """One option given as ``key: value``."""
        param = find_param(self.command, key)
        if param is None or param.name == "help":
            close = difflib.get_close_matches(key.lstrip("-"), option_names(self.command), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise self.fail(keys, f"no such option for '{self.label}'{hint}", None)
        self.claim(param, keys)
        if value is None:
            return
        opt = long_opt(param)
        if param.is_flag and not param.count:
            if not isinstance(value, bool):
                raise self.fail(keys, f"{opt} is a switch: give true or false", param)
            if value:
                self.push([opt])
            elif param.secondary_opts:
                self.push([param.secondary_opts[0]])
            return
        if isinstance(value, list) and not (param.multiple or param.nargs != 1):
            raise self.fail(keys, f"{opt} takes one value, got a list", param)
        for item in value if isinstance(value, list) else [value]:
            real, check = self.item(param, item, keys)
            self.push([opt, real], [opt, check])

    def claim(self, param: click.Parameter, keys: Keys) -> None:
        """Note where a parameter is set; a second setting is a mistake."""
        if param.name in self.keys:
            raise self.fail(keys, f"given twice (also as {dotted(self.keys[param.name])})",
                            param)
        self.keys[param.name] = keys

    def item(self, param: click.Parameter, item: Any, keys: Keys) -> tuple[str, str]:
        text = plain_value(item)
        if text is None:
            raise self.fail(keys, f"expected a plain value, got {item!r}", param)
        return self.value(param, text, keys)

    def add_args(self, args: Sequence[tuple[Keys, Any]], where: Keys) -> None:
        """The positional arguments, in order, each with the key that holds it."""
        params = [p for p in self.command.params if isinstance(p, click.Argument)]
        if len(args) > sum(p.nargs if p.nargs > 0 else len(args) for p in params):
            raise self.fail(where, f"'{self.label}' takes {len(params)} positional arguments",
                            None)
        position = 0
        reals, checks = [], []
        for param in params:
            take = param.nargs if param.nargs > 0 else len(args) - position
            for keys, item in args[position:position + take]:
                if item is None:
                    raise self.fail(keys, f"expected a plain value, got {item!r}", param)
                real, check = self.item(param, item, keys)
                reals.append(real)
                checks.append(check)
                self.keys.setdefault(param.name, keys)
                position += 1
        dash = ["--"] if any(a.startswith("-") and a != "-" for a in reals) else []
        self.push(dash + reals, dash + checks)

    def push(self, real: list[str], check: list[str] | None = None) -> None:
        """Words for the argv (and, when they differ, for click's check)."""
        self.argv += real
        self.check_argv += real if check is None else check

    def check(self, parent: click.Context) -> dict[str, Any]:
        """Let click parse the argv (types, ranges, choices, required options); return the
        parsed parameters."""
        try:
            with self.command.make_context(self.label.split()[-1], list(self.check_argv),
                                           parent=parent) as ctx:
                return dict(ctx.params)
        except click.MissingParameter as exc:
            raise self.fail(self.here, f"'{self.label}' needs {describe(exc.param)}",
                            exc.param) from None
        except click.BadParameter as exc:
            where = self.keys.get(exc.param.name, self.here) if exc.param else self.here
            name = describe(exc.param) if exc.param else "a value"
            raise self.fail(where, f"invalid value for {name}: {exc.message}",
                            exc.param) from None
        except click.exceptions.Exit:
            raise self.fail(self.here, "--help/--version are not options here", None) from None
        except click.ClickException as exc:
            raise self.fail(self.here, exc.format_message(), None) from None


def dotted(keys: Keys) -> str:
    """``("stages", 3, "options", "n")`` -> ``stages[3].options.n``."""
    out = ""
    for key in keys:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out
