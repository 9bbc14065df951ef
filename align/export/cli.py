"""`rlaif export sft|preference|prompts`: write TRL-format training data (parse, call, print).

The work is done in ``align.export.datasets``; these commands only map options onto its functions
and print what was kept, dropped (per reason) and written where.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from align.export import datasets as ds
from datagen.cli_checks import db_option, output_option


def common_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by the three exports: output path, DB, train/test split."""
    options = [
        output_option("X.jsonl (test split goes to X.test.jsonl) or a dataset directory.",
                      name="out", dir_okay=True, path_type=str),
        db_option("Project database (for DB sources)."),
        click.option("--test-size", type=float, default=None,
                     help="Fraction of distinct prompts held out as a test split."),
        click.option("--seed", type=int, default=0, show_default=True, help="Split seed."),
    ]
    return functools.reduce(lambda f, opt: opt(f), reversed(options), fn)


def print_summary(summary: dict[str, Any]) -> None:
    """One line for hygiene (when pairs were filtered), one for what was written."""
    if "dropped" in summary:
        reasons = ", ".join(f"{reason} {n}" for reason, n in summary["dropped"].items())
        click.echo(f"read {summary['read']}, kept {summary['rows']}; dropped: {reasons}")
    counts = f"{summary['train']} train"
    if "test" in summary:
        counts += f" + {summary['test']} test"
    click.echo(f"wrote {counts} rows: {', '.join(summary['paths'])}")


@click.command("sft")
@click.option("--source", required=True, type=click.Choice(list(ds.SFT_SOURCES)))
@common_options
def export_sft(source: str, db: str | None, out: str, test_size: float | None, seed: int) -> None:
    """Export SFT conversations (`messages`) from the project DB."""
    print_summary(ds.export_sft(out, source=source, db=db, test_size=test_size, seed=seed))


@click.command("preference")
@click.option("--source", type=click.Choice(["labels", *ds.PREFERENCE_SOURCES]), default="labels",
              show_default=True)
@click.option("--labels", type=click.Path(dir_okay=False), help="`rlaif label` output (JSONL).")
@click.option("--min-confidence", type=click.FloatRange(0, 1), default=None,
              help="Drop soft labels with |p_a - 0.5| < C/2.")
@click.option("--drop-judge-disagrees", is_flag=True,
              help="Drop DB pairs whose judge check preferred the rejected side "
                   "(see `rlaif judge-revisions`).")
@common_options
def export_preference(
    source: str, labels: str | None, min_confidence: float | None, drop_judge_disagrees: bool,
    db: str | None, out: str, test_size: float | None, seed: int,
) -> None:
    """Export preference pairs (`prompt`/`chosen`/`rejected`, `margin` from soft labels)."""
    summary = ds.export_preference(
        out, labels=labels, source=source, db=db, min_confidence=min_confidence,
        test_size=test_size, seed=seed, drop_judge_disagrees=drop_judge_disagrees,
    )
    print_summary(summary)


@click.command("prompts")
@click.option("--source", type=click.Choice(["labels", *ds.SFT_SOURCES]), default="labels",
              show_default=True)
@click.option("--labels", type=click.Path(dir_okay=False), help="`rlaif label` output (JSONL).")
@common_options
def export_prompts(
    source: str, labels: str | None, db: str | None, out: str, test_size: float | None, seed: int
) -> None:
    """Export unique prompts (`prompt`) for online RL (PPO, GRPO, RLOO)."""
    summary = ds.export_prompts(
        out, labels=labels, source=source, db=db, test_size=test_size, seed=seed
    )
    print_summary(summary)
