"""The `rlaif` command: one click group whose subcommands live next to the code they drive.

Commands are loaded lazily from the dict literals below, so `rlaif --help` and `rlaif batch`
never import torch; each subcommand module is a thin parse -> call -> print layer.
"""

from __future__ import annotations

import importlib

import click

COMMANDS = {
    "batch": "datagen.cli:batch",
}

GENERATE_COMMANDS: dict[str, str] = {}

EXPORT_COMMANDS: dict[str, str] = {}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module_name, attr = self.lazy[name].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rlaif")
def main() -> None:
    """Make alignment data with LLMs and train on it."""


@main.group(cls=LazyGroup, lazy=GENERATE_COMMANDS)
def generate() -> None:
    """Generate instruction data, responses or AI-feedback data."""


@main.group(cls=LazyGroup, lazy=EXPORT_COMMANDS)
def export() -> None:
    """Export stored rows as training datasets (JSONL or a Hugging Face dataset directory)."""
