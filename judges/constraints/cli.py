"""`rlaif generate constrained`: attach verifiable constraints to a file of prompts.

A thin layer over ``judges.constraints.prompts``: read the prompts (the bundled set by default),
draw constraints with a seed, and write the rows to a JSONL file (through a temporary file
that is renamed into place; ``--format ifeval`` writes IFEval's ``instruction_id_list`` +
``kwargs`` form, each constraint kind as its instruction id) or to the ``constrained_prompts``
table of a project database.
Bad input stops the command with a one-line ``FILE:LINE: ...`` message and exit code 2
before anything is written.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import click

from datagen import store
from datagen.cli_checks import DatabasePath, output_option
from datagen.connect import block_executor_options
from datagen.distributed.blocks import block_mapper
from datagen.errors import UserInputError
from datagen.jsonl import atomic_write
from datagen.store.tables import CONSTRAINED_PROMPTS
from judges.constraints.prompts import (
    MAX_CONSTRAINTS,
    ConstrainedPrompt,
    add_constraints,
    bundled_prompts_path,
    ifeval_row,
    load_base_prompts,
)


def parse_range(value: str) -> tuple[int, int]:
    """Parse "--constraints" as "MIN-MAX" or "N" with 1 <= MIN <= MAX <= MAX_CONSTRAINTS."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", value)
    low, high = (int(match.group(1)), int(match.group(2) or match.group(1))) if match else (0, 0)
    if not match or not 1 <= low <= high <= MAX_CONSTRAINTS:
        raise UserInputError(
            f"--constraints: expected N or MIN-MAX with 1 <= MIN <= MAX <= {MAX_CONSTRAINTS}, "
            f"got {value!r}"
        )
    return low, high


def write_jsonl(path: Path, rows: list[ConstrainedPrompt], form: str = "rlaif") -> None:
    """Write rows to ``path`` through a temporary file in the same folder, then rename;
    ``form="ifeval"`` writes IFEval's fields instead (``ifeval_row``)."""
    with atomic_write(path) as out:
        for row in rows:
            line = row.model_dump_json() if form == "rlaif" else json.dumps(ifeval_row(row))
            out.write(line + "\n")


@click.command("constrained")
@click.option(
    "--prompts",
    "prompts_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help='JSONL file, one {"prompt": ..., "id": ...} object a line (id optional). '
    "Default: the bundled everyday prompts.",
)
@click.option(
    "--constraints",
    "constraint_range",
    default="1-3",
    show_default=True,
    help="How many constraints per prompt: N or MIN-MAX.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Random seed; the same seed gives the same constraints.",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="Use only the first N prompts."
)
@output_option("Write the rows to this JSONL file.", required=False)
@click.option(
    "--format",
    "form",
    type=click.Choice(["rlaif", "ifeval"]),
    default="rlaif",
    show_default=True,
    help="-o file form: ours (constraints list, base prompt, seed) or IFEval's (key, prompt, "
    "instruction_id_list, kwargs), which `rlaif generate responses` and `rlaif label` also read.",
)
@click.option(
    "--db",
    type=DatabasePath(postgres=True),
    default=None,
    help=f"Save the rows to the {CONSTRAINED_PROMPTS} table of this project database instead.",
)
@block_executor_options
def generate_constrained(
    prompts_path: Path | None,
    constraint_range: str,
    seed: int,
    limit: int | None,
    output: Path | None,
    form: str,
    db: Path | None,
    executor: str,
    ray_address: str | None,
) -> None:
    """Attach 1..K verifiable constraints to each prompt and render the final prompt text."""
    if (output is None) == (db is None):
        raise UserInputError("give exactly one of -o/--output FILE.jsonl or --db PATH")
    if form != "rlaif" and db is not None:
        raise UserInputError("--format: only for -o/--output files (the table keeps our form)")
    k_min, k_max = parse_range(constraint_range)
    prompts = load_base_prompts(prompts_path)[:limit]
    # each prompt's constraints are seeded by the prompt alone, so blocks of prompts can be
    # rendered anywhere and give the same rows
    with block_mapper(executor, ray_address) as mapper:
        rows = mapper(functools.partial(add_constraints, k_min=k_min, k_max=k_max, seed=seed),
                      prompts)
    source = prompts_path or bundled_prompts_path()
    if output is not None:
        write_jsonl(output, rows, form)
        click.echo(
            f"wrote {len(rows)} constrained prompts from {source} to {output} "
            f"({k_min}-{k_max} constraints each, seed {seed})"
        )
        return
    database = store.open_db(db)
    added = store.save_rows(database, CONSTRAINED_PROMPTS, rows, pk="id")
    click.echo(
        f"saved {added} new of {len(rows)} constrained prompts from {source} to "
        f"{db} table {CONSTRAINED_PROMPTS} ({k_min}-{k_max} constraints each, seed {seed})"
    )
