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
    progress_printer,
    read_batch_file,
    run_batch,
    summarise,
    write_output,
)
from datagen.connect import (
    client_config,
    client_options,
    endpoint_url,
    executor_options,
    open_client,
    pop_client_options,
)
from datagen.endpoint.client import run_async
from datagen.errors import UserInputError


@click.command()
@click.argument("input_file", metavar="INPUT.jsonl", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Where to write the Batch API output JSONL.")
@click.option("--db", default="rlaif.db", show_default=True, type=click.Path(path_type=Path),
              help="Project database holding the request ledger.")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar (default: when stderr is a terminal).")
@client_options
@executor_options
def batch(input_file: Path, output: Path, db: Path, progress: bool | None, **kwargs) -> None:
    """Run an OpenAI Batch API file against any OpenAI-compatible endpoint, exactly once.

    Exit status: 0 when every request succeeded, 1 when some failed (their errors are in
    the output), 2 on bad usage or bad input (nothing is sent).
    """
    options = pop_client_options(kwargs)
    auto_endpoint = not (options.get("base_url") or os.environ.get("OPENAI_BASE_URL"))
    lines = read_batch_file(input_file, default_model=options.get("model"),
                            require_model=not auto_endpoint)
    if output.is_dir():
        raise UserInputError(f"{output}: is a directory")
    with endpoint_url(options.get("base_url"), options.get("model")) as (url, model):
        if model:
            fill_model(lines, model)
        config = client_config(options, url)
        database = store.open_db(db)
        on_terminal = progress is None and sys.stderr.isatty()
        show = progress_printer() if (progress or on_terminal) else None
        started = time.monotonic()

        async def go():
            async with open_client(config, database, options) as client:
                results = await run_batch(client, lines, show)
                return results, summarise(results, client, started)

        results, summary = run_async(go())
    write_output(output, lines, results)
    click.echo(
        f"batch: {summary.total} requests: {summary.ok} ok ({summary.from_ledger} from the "
        f"ledger), {summary.failed} failed, {summary.skipped} not sent (budget); "
        f"{summary.prompt_tokens + summary.completion_tokens:,} tokens, "
        f"${summary.cost_usd:.4f}, {summary.seconds:.1f} s -> {output}", err=True)
    if summary.failed or summary.skipped:
        sys.exit(1)
