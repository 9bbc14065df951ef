"""Every `rlaif ...` command shown in the README names a real command and real options."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from align.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_commands() -> list[str]:
    text = README.read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    commands = []
    for block in blocks:
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("rlaif "):
                commands.append(line)
    return commands


COMMANDS = readme_commands()


def test_readme_shows_commands():
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize("line", COMMANDS)
def test_readme_command_parses(line):
    args = shlex.split(line)[1:]
    ctx = click.Context(main)
    command: click.Command = main
    while isinstance(command, click.Group) and not (
            command.invoke_without_command and (not args or args[0].startswith("-"))):
        name, command, args = command.resolve_command(ctx, args)
        assert command is not None, f"{line}: unknown command {name}"
        ctx = click.Context(command, parent=ctx, info_name=name)
    parser = command.make_parser(ctx)
    opts, rest, _ = parser.parse_args(args=list(args))  # raises on an unknown option
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    assert len(rest) <= sum(a.nargs if a.nargs > 0 else 99 for a in arguments), line
