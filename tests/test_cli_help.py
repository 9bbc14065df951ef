"""Every command's --help ends with one or two examples that parse with its own options, and
the option names are the same across the whole click tree (issue 17)."""

from __future__ import annotations

import shlex

import click
from click.testing import CliRunner
from test_cli_policy import COMMANDS

from align.cli import main


def parse_example(line: str) -> tuple[str, ...]:
    """Resolve an example's command and parse its options (raises on an unknown option)."""
    words = [w for w in shlex.split(line) if "=" not in w or w.startswith("-")]
    assert words[0] == "rlaif", line
    args, ctx, command, path = words[1:], click.Context(main), main, []
    while isinstance(command, click.Group) and args and not args[0].startswith("-"):
        name, command, args = command.resolve_command(ctx, args)
        path.append(name)
        ctx = click.Context(command, parent=ctx, info_name=name)
    command.make_parser(ctx).parse_args(args=list(args))
    return tuple(path)


def test_every_help_ends_with_examples_that_parse():
    runner = CliRunner()
    for words in COMMANDS:
        result = runner.invoke(main, [*words, "--help"])
        assert result.exit_code == 0, (words, result.output)
        head, _, tail = result.output.rpartition("Examples:\n")
        lines = [line.strip() for line in tail.splitlines() if line.strip()]
        assert head and 1 <= len(lines) <= 2, (words, result.output)
        for line in lines:
            assert parse_example(line) == words, (words, line)


def test_option_names_mean_the_same_everywhere():
    seen: dict[str, set[str]] = {}
    for words, command in COMMANDS.items():
        names = {opt for p in command.params for opt in getattr(p, "opts", ())}
        assert "--out" not in names, words
        if "--output" in names:
            assert "-o" in names, words
        for param in command.params:
            for opt in getattr(param, "opts", ()):
                seen.setdefault(opt, set()).add(param.name)
    # one flag, one parameter name (--reference is judge-report's labeller or winrate's model)
    assert seen["--db"] == {"db"} and seen["-o"] <= {"output", "out"}
    assert seen["--seed"] == {"seed"}
    assert all(isinstance(p.type, click.types.IntParamType)
               for cmd in COMMANDS.values() for p in cmd.params if p.name == "seed"), \
        "--seed is an integer everywhere"


def test_model_names_an_endpoint_model_and_local_directories_are_named_by_role():
    from datagen.cli_checks import ModelDir

    for words, command in COMMANDS.items():
        ctx = click.Context(command, info_name=words[-1])
        for param in command.params:
            record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
            shown = record[0] if record else ""
            if isinstance(param.type, ModelDir):
                assert shown.split()[0].rstrip(",") in (
                    "--policy", "--reward-model", "--model-dir", "--reference"), (words, shown)
            elif "--model " in shown + " ":
                assert not isinstance(param.type, ModelDir), (words, shown)
