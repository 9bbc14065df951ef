"""`rlaif generate self-instruct`, `rlaif dedup` and `rlaif export self-instruct`.

Thin click layers over ``datagen.self_instruct.generate`` (the bootstrap generator) and
``datagen.self_instruct.rouge`` (the exact ROUGE-L novelty filter): parse options and files, call,
print one summary line. Outputs are written to a temporary file and renamed, so a failed command
leaves nothing half-written.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from datagen import store
from datagen.cli_checks import db_option, output_option
from datagen.connect import (
    client_config,
    client_options,
    endpoint_url,
    hosted_options,
    pop_client_options,
)
from datagen.endpoint.client import LLMClient, run_async
from datagen.errors import UserInputError
from datagen.jsonl import atomic_write, read_objects, read_utf8
from datagen.progress import track
from datagen.self_instruct.generate import (
    DEFAULT_SEED_FILE,
    SelfInstructConfig,
    instance_rows,
    load_seed_tasks,
    run_self_instruct,
    to_messages,
)
from datagen.self_instruct.rouge import NoveltyIndex


@click.command("self-instruct")
@db_option("Project database (ledger and generated rows).", postgres=True)
@click.option("--seed-tasks", default=str(DEFAULT_SEED_FILE), show_default="bundled set",
              type=click.Path(path_type=Path), help="Seed tasks JSONL.")
@click.option("--num-instructions", default=100, show_default=True, type=click.IntRange(1),
              help="Target number of kept instructions; a rerun with a larger value extends.")
@click.option("--seed", default=42, show_default=True, type=int, help="Random seed of the run.")
@click.option("--prompts-per-round", default=8, show_default=True, type=click.IntRange(1),
              help="Generation prompts sent together in each round.")
@click.option("--num-context", default=8, show_default=True, type=click.IntRange(1),
              help="In-context tasks per prompt.")
@click.option("--num-machine", default=2, show_default=True, type=click.IntRange(0),
              help="How many of them are machine-generated (once the pool has some).")
@click.option("--temperature", default=1.0, show_default=True, type=float,
              help="Sampling temperature of instruction generation (the paper used 0.7, which "
                   "makes small models copy their examples).")
@click.option("--top-p", default=0.95, show_default=True, type=float,
              help="Nucleus sampling of instruction generation (the paper used 0.5).")
@click.option("--presence-penalty", default=None, type=float,
              help="Sent only when given (the paper used 2).")
@click.option("--frequency-penalty", default=None, type=float,
              help="Sent only when given.")
@click.option("--max-tokens", default=1024, show_default=True, type=click.IntRange(1),
              help="Token limit of each instruction-generation reply.")
@click.option("--threshold", default=0.7, show_default=True, type=click.FloatRange(0, 1),
              help="Keep an instruction when its max ROUGE-L against the pool is at most this.")
@click.option("--max-instances", default=5, show_default=True, type=click.IntRange(1),
              help="Instances kept per task.")
@click.option("--patience", default=10, show_default=True, type=click.IntRange(1),
              help="Stop after this many consecutive rounds that keep nothing.")
@hosted_options
@client_options
def generate_self_instruct(db: Path, seed_tasks: Path, **kwargs: Any) -> None:
    """Bootstrap instructions and instances from seed tasks (Self-Instruct), resumably.

    A run that stalls (--patience rounds in a row keep nothing: the model keeps repeating
    itself) ends normally, says what to change, and is recorded as stalled, so a pipeline
    stage counts as done. Exit status: 0 when the run is complete or stalled, 1 when requests
    failed (rerun to continue), 2 on bad usage or a bad seed file.
    """
    options = pop_client_options(kwargs)
    seeds = load_seed_tasks(seed_tasks)
    with endpoint_url(options.get("base_url"), options.get("model")) as (url, model):
        config = SelfInstructConfig(model=model, **kwargs)
        client_cfg = client_config(options, url, model=model)
        database = store.open_db(db)

        async def go():
            async with LLMClient(client_cfg, database) as client, track(
                    client, options.get("progress")):
                return await run_self_instruct(client, database, config, seeds)

        summary = run_async(go())
    rejected = ", ".join(f"{k} {v}" for k, v in summary.rejected.items()) or "none"
    click.echo(
        f"self-instruct {summary.run_id}: {summary.status}; {summary.rounds} rounds, "
        f"{summary.candidates} candidates, {summary.kept} kept (rejected: {rejected}); "
        f"{summary.tasks} tasks ({summary.classification_tasks} classification), "
        f"{summary.instances} instances, {summary.tasks_dropped} tasks dropped, "
        f"{summary.failed_parses} unparseable replies, {summary.request_failures} request "
        f"failures -> {db}", err=True)
    if summary.status == "stalled":
        click.echo(stall_advice(summary.kept, kwargs["num_instructions"], kwargs["patience"]),
                   err=True)
    elif summary.status != "complete":
        sys.exit(1)


def stall_advice(kept: int, target: int, patience: int) -> str:
    """What a stalled run means and what to change (one line)."""
    return (f"self-instruct: stalled with {kept} of {target} instructions: {patience} rounds in "
            "a row kept nothing (near-duplicates of the pool). The run is recorded as stalled "
            "and a rerun with the same options does the same; for more, raise --temperature or "
            "--top-p, change --seed, raise --threshold, or use a stronger model "
            "(--base-url/--model).")


def read_jsonl_texts(path: Path, field: str) -> Iterator[tuple[int, dict[str, Any], str]]:
    """(0-based line, record, text of ``field``) for each non-blank line; errors name the line."""
    for line_no, where, record in read_objects(path, read_utf8(path), empty_message=None):
        if not isinstance(record.get(field), str):
            raise UserInputError(f"{where}: missing field {field!r} (a string)")
        yield line_no - 1, record, record[field]


@click.command()
@click.argument("input_file", metavar="INPUT.jsonl", type=click.Path(path_type=Path))
@output_option("Where to write the annotated JSONL.")
@click.option("--field", default="instruction", show_default=True,
              help="The text field to compare.")
@click.option("--threshold", default=0.7, show_default=True, type=click.FloatRange(0, 1),
              help="A line is novel when its max ROUGE-L against the pool is at most this.")
@click.option("--against", "against", default=None, type=click.Path(path_type=Path),
              help="JSONL whose lines start the pool (named against:K, K its 0-based line).")
def dedup(input_file: Path, output: Path, field: str, threshold: float,
          against: Path | None) -> None:
    """Mark each line novel or not by ROUGE-L against the --against lines and earlier novel lines.

    Every input line is written back, in order, with "novel", "rouge_l" (the max score
    against the pool when it was checked, exactly as rouge_score computes it) and "nearest"
    (0-based input line or "against:K" of the first pool member with that score; null when
    no member shares a word).
    """
    index = NoveltyIndex(threshold)
    labels: list[int | str] = []
    if against is not None:
        for line_no, _, text in read_jsonl_texts(against, field):
            index.add(text)
            labels.append(f"against:{line_no}")
    total = kept = 0
    with atomic_write(output) as out:
        for line_no, record, text in read_jsonl_texts(input_file, field):
            novel, score, member = index.offer(text)
            if novel:
                labels.append(line_no)
            total += 1
            kept += novel
            nearest = labels[member] if member is not None else None
            out.write(json.dumps({**record, "novel": novel, "rouge_l": score, "nearest": nearest},
                                 ensure_ascii=False) + "\n")
    click.echo(f"dedup: {total} lines, {kept} novel, {total - kept} near-duplicates "
               f"(ROUGE-L > {threshold}) -> {output}", err=True)


@click.command("self-instruct")
@db_option("Project database.", postgres=True)
@output_option("JSONL file to write.")
@click.option("--run-id", default=None, help="Only this run (default: every run).")
def export_self_instruct(db: Path, output: Path, run_id: str | None) -> None:
    """Write generated instances as instruction/input/output rows with chat messages."""
    if not store.database_exists(db):
        raise UserInputError(f"{db}: no such database")
    database = store.open_db(db)
    count = 0
    with atomic_write(output) as out:
        for row in instance_rows(database, run_id):
            row["messages"] = to_messages(row["instruction"], row["input"], row["output"])
            row["source"] = "self-instruct"
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    click.echo(f"export self-instruct: {count} rows -> {output}", err=True)
