"""Command-line entry points of the data layer that need no model of their own (`rlaif batch`)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from datagen import store
from datagen.batch.file import (
    fill_model,
    read_batch_file,
    run_batch,
    summarise,
    write_output,
)
from datagen.batch.rules import hosted_problems
from datagen.cli_checks import OutputPath, db_option, output_option
from datagen.connect import (
    client_config,
    client_options,
    endpoint_url,
    executor_options,
    hosted_options,
    ledger_answers_all,
    open_client,
    pop_client_options,
)
from datagen.endpoint.client import LLMClient, run_async
from datagen.errors import HostedBatchError, UserInputError
from datagen.jsonl import read_utf8
from datagen.progress import track


@click.command()
@click.argument("input_file", metavar="INPUT.jsonl", required=False,
                type=click.Path(path_type=Path))
@output_option("Where to write the Batch API output JSONL.", required=False)
@click.option("--errors", type=OutputPath(),
              help="Write lines that did not succeed here (as the hosted API's error file); "
                   "default: every line goes to --output.")
@db_option("Project database holding the request ledger and hosted batches.", postgres=True)
@click.option("--check-hosted", is_flag=True,
              help="List every line the hosted Batch API would reject; send nothing.")
@click.option("--list", "list_batches", is_flag=True,
              help="With --hosted: list this database's hosted batches and their states.")
@click.option("--cancel", is_flag=True,
              help="With --hosted: cancel this database's open hosted batches (those of "
                   "INPUT.jsonl when given); a rerun keeps what they answered.")
@hosted_options
@client_options
@executor_options
def batch(input_file: Path | None, output: Path | None, errors: Path | None, db: Path,
          check_hosted: bool, list_batches: bool, cancel: bool,
          **kwargs) -> None:
    """Run an OpenAI Batch API file against any OpenAI-compatible endpoint, exactly once,
    or (--hosted) through the hosted Batch API at batch prices.

    Exit status: 0 when every request succeeded, 1 when some failed (their errors are in
    the output) or --check-hosted found problems, 2 on bad usage or bad input (nothing is
    sent).
    """
    options = pop_client_options(kwargs)
    if check_hosted:
        _check(_needs_input(input_file))
        return
    if list_batches or cancel:
        if not options.get("hosted"):
            raise UserInputError("--list and --cancel need --hosted")
        if list_batches:
            _list(db)
        else:
            _cancel(input_file, db, options)
        return
    input_file = _needs_input(input_file)
    if output is None:
        raise UserInputError("missing option -o/--output")
    for path in (output, errors):
        if path is not None and path.is_dir():
            raise UserInputError(f"{path}: is a directory")
    _run(input_file, output, errors, db, options)


def _needs_input(input_file: Path | None) -> Path:
    if input_file is None:
        raise UserInputError("missing argument INPUT.jsonl")
    return input_file


def _check(input_file: Path) -> None:
    text = read_utf8(input_file, expected="a JSONL file", reject_binary=True)
    problems = hosted_problems(input_file, text)
    for problem in problems:
        click.echo(problem)
    click.echo(f"{input_file}: {len(problems)} problem(s) for the hosted Batch API", err=True)
    if problems:
        sys.exit(1)


def _list(db: Path) -> None:
    if not store.database_exists(db):
        raise UserInputError(f"{db}: no such database")
    jobs = store.hosted_jobs(store.open_db(db))
    for job in jobs:
        click.echo(f"{job['batch_id'] or '(not created)'}\t{job['status']}\t"
                   f"{job['line_count']} requests\t{job['request_counts'] or '{}'}\t"
                   f"{'ingested' if job['ingested'] else 'open'}\t{job['label']}")
    click.echo(f"{len(jobs)} hosted batch(es) in {db}", err=True)


def _cancel(input_file: Path | None, db: Path, options: dict) -> None:
    keys = None
    if input_file is not None:
        keys = [line.key for line in read_batch_file(input_file, hosted=True)]
    config = client_config(options, options["base_url"] or os.environ["OPENAI_BASE_URL"])

    async def go():
        async with LLMClient(config, store.open_db(db)) as client:
            return await client.cancel_hosted(keys)

    try:
        cancelled = run_async(go())
    except HostedBatchError as exc:
        raise click.ClickException(f"hosted Batch API: {exc}") from None
    for batch_id, status in cancelled:
        click.echo(f"{batch_id}\t{status}")
    click.echo(f"cancelled {len(cancelled)} hosted batch(es); rerun the same command to keep "
               "what they answered and submit the rest", err=True)


def _run(input_file: Path, output: Path, errors: Path | None, db: Path,
         options: dict) -> None:
    hosted = bool(options.get("hosted"))
    auto_endpoint = not (options.get("base_url") or os.environ.get("OPENAI_BASE_URL"))
    lines = read_batch_file(input_file, default_model=options.get("model"),
                            require_model=not auto_endpoint, hosted=hosted)
    def answered(model: str) -> bool:
        fill_model(lines, model)
        return not hosted and ledger_answers_all(db, [line.key for line in lines])

    with endpoint_url(options.get("base_url"), options.get("model"), answered) as (url, model):
        if model:
            fill_model(lines, model)
        config = client_config(options, url)
        database = store.open_db(db)
        started = time.monotonic()

        async def go():
            async with open_client(config, database, options) as client, track(
                    client, "none" if hosted else options.get("progress")):
                results = await run_batch(client, lines)
                return results, summarise(results, client, started)

        try:
            results, summary = run_async(go())
        except HostedBatchError as exc:
            raise click.ClickException(
                f"hosted Batch API: {exc}; rerun the same command to resume") from None
    write_output(output, lines, results, errors)
    click.echo(
        f"batch: {summary.total} requests: {summary.ok} ok ({summary.from_ledger} from the "
        f"ledger), {summary.failed} failed, {summary.skipped} not sent (budget); "
        f"{summary.prompt_tokens + summary.completion_tokens:,} tokens, "
        f"${summary.cost_usd:.4f}{' at batch prices' if hosted else ''}, "
        f"{summary.seconds:.1f} s -> {output}", err=True)
    if summary.failed or summary.skipped:
        sys.exit(1)
