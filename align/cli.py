"""The `rlaif` command: one click group whose subcommands live next to the code they drive.

Commands are loaded lazily from the dict literals below, so `rlaif --help` and `rlaif batch`
never import torch; each subcommand module is a thin parse -> call -> print layer. Every
command's --help ends with examples, kept as data in ``align/cli_examples.yaml``.
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib import resources

import click
import yaml

COMMANDS = {
    "batch": "datagen.batch.cli:batch",
    "serve": "datagen.serve.cli:serve",
    "dedup": "datagen.self_instruct.cli:dedup",
    "label": "judges.cli:label",
    "judge-report": "judges.cli:judge_report",
    "judge-audit": "judges.cli:judge_audit",
    "judge-revisions": "judges.cli:judge_revisions",
    "report": "align.report.cli:report",
    "service": "align.service.cli:service",
    "label-queue": "align.service.cli:label_queue",
    "label-export": "align.service.cli:label_export",
    "run": "align.pipeline.cli:run",
    "demo": "align.pipeline.cli:demo",
}

GENERATE_COMMANDS = {
    "self-instruct": "datagen.self_instruct.cli:generate_self_instruct",
    "flan": "datagen.flan.cli:generate_flan",
    "constitutional": "datagen.constitutional.cli:generate_constitutional",
    "responses": "datagen.responses.cli:generate_responses",
    "constrained": "judges.constraints.cli:generate_constrained",
}

EXPORT_COMMANDS = {
    "self-instruct": "datagen.self_instruct.cli:export_self_instruct",
    "pairs": "datagen.responses.cli:export_pairs",
    "sft": "align.export.cli:export_sft",
    "preference": "align.export.cli:export_preference",
    "prompts": "align.export.cli:export_prompts",
}

TRAIN_COMMANDS = {
    "sft": "align.train.cli:train_sft",
    "rm": "align.train.cli:train_rm",
    "dpo": "align.train.cli:train_dpo",
    "ppo": "align.ppo.cli:train_ppo",
    "grpo": "align.rl.cli:train_grpo",
    "rloo": "align.rl.cli:train_rloo",
    "online-dpo": "align.rl.cli:train_online_dpo",
}

DB_COMMANDS = {
    "copy": "datagen.store.cli:copy",
}

EVAL_COMMANDS = {
    "rm": "align.eval.cli:eval_rm",
    "winrate": "align.eval.cli:eval_winrate",
    "ifeval": "align.eval.cli:eval_ifeval",
    "constraints": "align.eval.cli:eval_constraints",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, words: str = "",
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})
        self.words = words  # this group's words under `rlaif` (keys of the examples file)

    def list_commands(self, ctx: click.Context) -> list[str]:
        present = {
            name for name, target in self.lazy.items()
            if importlib.util.find_spec(target.split(":")[0]) is not None
        }
        return sorted(set(super().list_commands(ctx)) | present)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module_name, attr = self.lazy[name].split(":")
            command = getattr(importlib.import_module(module_name), attr)
            attach_examples(command, f"{self.words} {name}".strip())
            return command
        return super().get_command(ctx, name)


def attach_examples(command: click.Command, words: str) -> None:
    """End the help of ``command`` (and of the commands of a plain click group) with its
    examples."""
    command.epilog = command.epilog or examples_epilog(words)
    if isinstance(command, click.Group) and not isinstance(command, LazyGroup):
        for name, sub in command.commands.items():
            attach_examples(sub, f"{words} {name}")


def examples_epilog(words: str) -> str | None:
    """The "Examples:" block that ends `rlaif WORDS --help` (None when the file has none)."""
    text = (resources.files("align") / "cli_examples.yaml").read_text(encoding="utf-8")
    examples = (yaml.safe_load(text) or {}).get(words)
    if not examples:
        return None
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in examples)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rlaif")
def main() -> None:
    """Make alignment data with LLMs and train on it."""


@main.group(cls=LazyGroup, lazy=GENERATE_COMMANDS, words="generate")
def generate() -> None:
    """Generate instruction data, responses or AI-feedback data."""


@main.group(cls=LazyGroup, lazy=EXPORT_COMMANDS, words="export")
def export() -> None:
    """Export stored rows as training datasets (JSONL or a Hugging Face dataset directory)."""


@main.group(cls=LazyGroup, lazy=TRAIN_COMMANDS, words="train")
def train() -> None:
    """Train a policy or reward model (TRL SFT/reward/DPO/GRPO/RLOO/online DPO, project PPO)."""


@main.group(cls=LazyGroup, lazy=DB_COMMANDS, words="db")
def db() -> None:
    """Manage project databases (SQLite files or PostgreSQL)."""


@main.group(name="eval", cls=LazyGroup, lazy=EVAL_COMMANDS, words="eval")
def evaluate() -> None:
    """Evaluate a reward model or a trained policy."""


if __name__ == "__main__":
    main()
