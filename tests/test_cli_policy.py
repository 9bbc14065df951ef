"""Every command refuses the same mistakes the same way (issue 17): a missing output folder, an
output that is a directory, a --db that is not SQLite, locked or newer, a model directory that
is not one. Exit status 2, one line naming the option, no traceback, nothing sent, nothing
written. The commands are found by walking the click tree, so a new command is covered (or
fails the declaration test) without editing this file."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from align.cli import main
from datagen import cli_checks
from datagen.cli_checks import DatabasePath, ModelDir, OutputPath


def walk(group: click.Group = main, path: tuple[str, ...] = ()
         ) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """(words, command) of every command under ``group`` (a group that runs on its own, like
    `rlaif service`, is one too)."""
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            if command.invoke_without_command:
                yield (*path, name), command
            yield from walk(command, (*path, name))
        else:
            yield (*path, name), command


COMMANDS = dict(walk())


def params_of(kind: type) -> list[tuple[tuple[str, ...], click.Parameter]]:
    return [(words, p) for words, cmd in COMMANDS.items() for p in cmd.params
            if isinstance(p, click.Option) and isinstance(p.type, kind)]


def flag(param: click.Parameter) -> str:
    return max(param.opts, key=len)


def test_the_tree_is_walked():
    assert {("batch",), ("label",), ("train", "ppo"), ("export", "pairs"),
            ("generate", "responses"), ("eval", "winrate")} <= set(COMMANDS)
    assert len(COMMANDS) >= 30


def test_every_output_db_and_model_dir_is_declared_with_the_shared_types():
    for words, command in COMMANDS.items():
        for param in command.params:
            where = f"rlaif {' '.join(words)} {param.opts}"
            if "--db" in getattr(param, "opts", ()):
                assert isinstance(param.type, DatabasePath), where
                # flan and constrained write to --db only when it is given (a destination)
                if words not in (("generate", "flan"), ("generate", "constrained")):
                    assert param.default == cli_checks.DEFAULT_DB, where
            if "-o" in getattr(param, "opts", ()) or "--output" in getattr(param, "opts", ()):
                assert isinstance(param.type, OutputPath), where
                assert {"-o", "--output"} <= set(param.opts), where
            if param.name in ("policy", "reward_model", "reference", "model_dir") and not (
                    isinstance(param.type, click.Choice)):  # judge-report --reference verify
                assert isinstance(param.type, ModelDir), where


@pytest.fixture
def invoke(fake_llm, tmp_path, monkeypatch):
    """Run `rlaif WORDS ARGS` in-process against the fake endpoint; check the common promise:
    exit 2, one `Error:` line, no traceback, and return that line."""
    monkeypatch.setenv("OPENAI_BASE_URL", fake_llm.base_url)
    monkeypatch.setattr(cli_checks, "LOCK_WAIT_S", 0.05)  # a locked db fails fast here
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def run(words: tuple[str, ...], *args: str) -> str:
        before = sorted(p.name for p in tmp_path.rglob("*"))
        result = runner.invoke(main, [*words, *args], catch_exceptions=True)
        shown = f"rlaif {' '.join(words)} {' '.join(args)}: {result.output}"
        assert result.exit_code == 2, shown
        assert isinstance(result.exception, SystemExit), (shown, result.exception)
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and "Traceback" not in result.output, shown
        assert sorted(p.name for p in tmp_path.rglob("*")) == before, shown
        return errors[0]

    yield run
    assert fake_llm.requests == []


def test_output_mistakes_in_every_command(invoke, tmp_path):
    for words, param in params_of(OutputPath):
        missing = str(tmp_path / "no-such-folder" / "out")
        line = invoke(words, flag(param), missing)
        assert "no such folder" in line and flag(param) in line, (words, line)
        if param.type.directory:
            (tmp_path / "a-file").write_text("x")
            line = invoke(words, flag(param), str(tmp_path / "a-file"))
            (tmp_path / "a-file").unlink()
            assert "is a file" in line, (words, line)
        elif not param.type.dir_okay:
            line = invoke(words, flag(param), str(tmp_path))
            assert "is a directory" in line, (words, line)


@pytest.fixture
def bad_dbs(tmp_path):
    """A text file, a database migrated by a newer rlaif, and one locked by a writer."""
    folder = tmp_path.parent / f"{tmp_path.name}-dbs"
    folder.mkdir()
    text = folder / "requests.jsonl"
    text.write_text('{"custom_id": "a"}\n' * 50)
    newer = folder / "newer.db"
    with sqlite3.connect(newer) as conn:
        conn.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at REAL)")
        conn.execute("INSERT INTO _migrations VALUES ('0001_requests', 0), ('9999_future', 0)")
    locked = folder / "locked.db"
    holder = sqlite3.connect(locked, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    yield {"not an SQLite database": text, "newer rlaif": newer, "locked": locked}
    holder.execute("ROLLBACK")
    holder.close()


def test_db_mistakes_in_every_command(invoke, bad_dbs):
    for words, param in params_of(DatabasePath):
        for expected, path in bad_dbs.items():
            line = invoke(words, flag(param), str(path))
            assert expected in line and "--db" in line, (words, line)
        line = invoke(words, flag(param), str(bad_dbs["locked"].parent / "none" / "x.db"))
        assert "no such folder" in line, (words, line)


def test_model_dir_mistakes_in_every_command(invoke, tmp_path):
    (tmp_path / "empty-dir").mkdir()
    for words, param in params_of(ModelDir):
        line = invoke(words, flag(param), "typo")
        assert "typo: not a model directory" in line and flag(param) in line, (words, line)
        line = invoke(words, flag(param), str(tmp_path / "empty-dir"))
        assert "not a model directory (no config.json)" in line, (words, line)


def test_reward_model_judge_is_checked_before_any_request(invoke, tmp_path):
    judged = [words for words, cmd in COMMANDS.items()
              if any(p.name == "judges" for p in cmd.params)]
    assert {("label",), ("judge-audit",), ("eval", "winrate")} <= set(judged)
    (tmp_path / "pairs.jsonl").write_text(
        '{"prompt": "p", "response_a": "a", "response_b": "b"}\n')
    for words in judged:
        line = invoke(words, "--judge", "rm:typo", "--judge", "pairwise",
                      *(["--input", "pairs.jsonl", "-o", "l.jsonl"] if words == ("label",) else
                        ["--policy", "default", "--reference", "default", "--prompts",
                         "pairs.jsonl"] if words == ("eval", "winrate") else []))
        assert "--judge rm:typo: not a model directory" in line, (words, line)


def test_a_valid_db_passes_and_is_not_created(tmp_path):
    path = tmp_path / "fresh.db"
    assert cli_checks.DatabasePath().convert(str(path), None, None) == path
    assert not path.exists()
