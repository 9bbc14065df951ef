"""`rlaif report`: write the project report (one self-contained HTML page) and dataset cards.

Parse, call, print: the figures and the page come from ``align.report.build``, the cards from
``align.report.card``. Everything is read and rendered before anything is written; each
file then goes through a temporary sibling renamed into place.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import click

from align.report.build import build_report
from align.report.card import card_path, cards_section, dataset_card
from align.report.data import ReportInputs, check_inputs, recorded_outputs
from align.report.html import write_atomic
from datagen import store
from datagen.cli_checks import db_option, output_option
from datagen.errors import UserInputError


@click.command("report")
@db_option("Project database (left out when the default is absent).")
@output_option("The HTML page to write.")
@click.option("--runs-dir", "runs_dirs", multiple=True, type=click.Path(path_type=Path),
              help="Folder searched for training metrics.jsonl and eval*.json files "
                   "(repeatable).")
@click.option("--labels", multiple=True, type=click.Path(path_type=Path),
              help="`rlaif label` output JSONL to report on (repeatable).")
@click.option("--eval", "evals", multiple=True, type=click.Path(path_type=Path),
              help="Eval result JSON with win_rate / satisfaction_rate / accuracy and "
                   "optionally ci [low, high] and n (repeatable).")
@click.option("--dataset", "datasets", multiple=True, type=click.Path(path_type=Path),
              help="Exported dataset (JSONL or dataset directory) to write a card for "
                   "(repeatable).")
@click.option("--cards-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder for the NAME.card.md files. Default: the report's folder.")
@click.option("--title", default="rlaif report", show_default=True, help="Page title.")
@click.pass_context
def report(ctx: click.Context, db: Path, output: Path, runs_dirs: tuple[Path, ...],
           labels: tuple[Path, ...], evals: tuple[Path, ...], datasets: tuple[Path, ...],
           cards_dir: Path | None, title: str) -> None:
    """Write a self-contained HTML report of the data, labels, training and costs so far.

    Without --labels or --runs-dir, the label files and training folders recorded in the
    database (`rlaif label` runs, finished pipeline stages) are used. Sections without data
    are left out with a note. Each --dataset also gets a Markdown
    dataset card (rows, fields, runs, models, seeds, drop counts), shown on the page too.
    """
    defaulted = ctx.get_parameter_source("db") == click.core.ParameterSource.DEFAULT
    inputs = ReportInputs(db=None if defaulted and not db.is_file() else db,
                          runs_dirs=list(runs_dirs), labels=list(labels), evals=list(evals),
                          title=title)
    cards_dir = cards_dir or output.absolute().parent
    if datasets and not cards_dir.is_dir():
        raise UserInputError(f"{cards_dir}: no such directory (--cards-dir)")
    check_inputs(inputs)
    now = time.time()
    database = store.open_db(inputs.db) if inputs.db is not None else None
    if database is not None:  # what --labels / --runs-dir leave out, the database may know
        found_labels, found_runs = recorded_outputs(database)
        inputs = replace(inputs, labels=inputs.labels or found_labels,
                         runs_dirs=inputs.runs_dirs or found_runs)
    taken: set[Path] = set()
    cards = [(path, card_path(path, cards_dir, taken),
              dataset_card(path, database, inputs.db, now)) for path in datasets]
    sections = build_report(inputs, output, extra=[cards_section(cards)], now=now)
    for _, path, text in cards:
        write_atomic(path, text)
    shown = sum(bool(s.body) for s in sections)
    click.echo(f"report: {shown} sections ({len(sections) - shown} left out) -> {output}",
               err=True)
    for dataset, path, _ in cards:
        click.echo(f"report: dataset card for {dataset} -> {path}", err=True)
