"""`rlaif generate flan`: render datasets through FLAN-style templates (parse, call, print).

The work is in ``datagen.flan.render`` (rendering, mixing, paraphrasing),
``datagen.flan.template_files`` (template files) and ``datagen.flan.io`` (dataset files); this
command maps options onto it, writes the JSONL through a temporary file, saves the rows and the run
to the project database when ``--db`` is given, and prints a summary on stderr (stdout may carry
the data).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import click

from datagen import store
from datagen.cli_checks import DatabasePath, output_option
from datagen.connect import (
    block_executor_options,
    client_config,
    client_options,
    endpoint_url,
    pop_client_options,
)
from datagen.distributed.blocks import block_mapper
from datagen.endpoint.client import LLMClient, run_async
from datagen.errors import UserInputError
from datagen.flan.io import (
    BadRows,
    atomic_output,
    check_label_map,
    parse_field_map,
    parse_label_map,
)
from datagen.flan.render import (
    TaskInput,
    convert,
    dump_templates,
    paraphrase_templates,
    run_id,
    save_run,
)
from datagen.flan.template_files import TaskTemplates, builtin_tasks, load_templates, task_path
from datagen.progress import track


def _one_or_each(option: str, values: list[Any], count: int) -> list[Any]:
    if len(values) == 1:
        return values * count
    if len(values) != count:
        raise UserInputError(f"{option}: give it once, or once per --input ({count}); "
                             f"got {len(values)}")
    return values


def _specs(template_files: tuple[Path, ...], tasks: tuple[str, ...]) -> list[TaskTemplates]:
    if template_files and tasks:
        raise UserInputError("give --templates or --task, not both")
    if not template_files and not tasks:
        raise UserInputError("name the templates: --templates FILE.yaml or --task NAME "
                             f"(built in: {', '.join(builtin_tasks())})")
    return [load_templates(p) for p in template_files] or [load_templates(task_path(t))
                                                           for t in tasks]


def task_inputs(inputs: tuple[Path, ...], template_files: tuple[Path, ...],
                tasks: tuple[str, ...], field_maps: tuple[str, ...],
                label_maps: tuple[str, ...] = ()) -> list[TaskInput]:
    """Pair each --input with its templates, field map and label map (one for all, or one
    each)."""
    specs = _specs(template_files, tasks)
    if not inputs:
        raise UserInputError("--input: give at least one dataset file or folder")
    specs = _one_or_each("--templates/--task", specs, len(inputs))
    maps = _one_or_each("--field-map", [parse_field_map(m) for m in field_maps] or [{}],
                        len(inputs))
    labels = _one_or_each("--label-map", [parse_label_map(m) for m in label_maps] or [{}],
                          len(inputs))
    for spec, label_map in zip(specs, labels, strict=True):
        check_label_map(spec, label_map)
    return [TaskInput(*parts) for parts in zip(inputs, specs, maps, labels, strict=True)]


def describe_tasks() -> list[str]:
    """One line per built-in task: its columns and the labels it accepts."""
    lines = []
    for name in builtin_tasks():
        spec = load_templates(task_path(name))
        labels = (", ".join(repr(o) for o in spec.options) if spec.options else
                  f"per row, from column {spec.options_field!r}" if spec.options_field else
                  "free text")
        lines.append(f"{name}: columns {', '.join(spec.fields)}, label column "
                     f"{spec.label_field!r}; labels: {labels}")
    return lines


@click.command("flan")
@click.option("--input", "inputs", multiple=True, type=click.Path(path_type=Path),
              help="Dataset: .jsonl, .csv, .tsv, .parquet or a saved Hugging Face dataset "
                   "folder. Repeat to mix several.")
@click.option("--templates", "template_files", multiple=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Template file (YAML), once for all inputs or once per --input.")
@click.option("--task", "tasks", multiple=True,
              help="A built-in task family instead of --templates (once, or once per --input).")
@click.option("--field-map", "field_maps", multiple=True, metavar="TARGET=SOURCE,...",
              help="Rename columns: template field = dataset column (a.b reaches into a dict).")
@click.option("--label-map", "label_maps", multiple=True, metavar='A=B,C="D E"|FILE.yaml',
              help="Map the dataset's labels to the task's (see --list-tasks), e.g. "
                   'entailment=yes,neutral="it is not possible to tell",contradiction=no; or a '
                   "YAML file of the same mapping. Once for all inputs or once per --input.")
@click.option("--list-tasks", is_flag=True,
              help="List the built-in tasks with their columns and accepted labels, and exit.")
@click.option("--shots", default=0, show_default=True, type=click.IntRange(0),
              help="Exemplars per example, from other rows of the same dataset.")
@click.option("--options-style", default="plain", show_default=True,
              type=click.Choice(["plain", "random", "none"]),
              help="plain: 'OPTIONS:' and '- ' lines; random: a seeded style per example "
                   "(named items make the target the name); none: choices not shown.")
@click.option("--cot", is_flag=True,
              help="Chain-of-thought targets from the task's rationale column.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--limit", type=click.IntRange(1), help="At most this many examples in all.")
@click.option("--max-per-task", type=click.IntRange(1),
              help="Cap per input; inputs are mixed in proportion to min(rows, cap).")
@click.option("--on-bad-row", default="fail", show_default=True,
              type=click.Choice(["fail", "skip"]),
              help="fail: exit 2 and write nothing; skip: leave bad rows out and count them.")
@output_option("Output JSONL (with --paraphrase-templates: the new template file).",
               name="out", required=False, default="-", show_default=True, allow_dash=True,
               path_type=str)
@click.option("--db", type=DatabasePath(postgres=True),
              help="Project database: save rows to flan_examples and record the run "
                   "(default: none, the rows go only to -o).")
@click.option("--paraphrase-templates", "paraphrase", type=click.IntRange(1), metavar="N",
              help="Instead of converting, ask the endpoint for N new phrasings of each "
                   "template and write them to -o for review.")
@client_options
@block_executor_options
def generate_flan(
    inputs: tuple[Path, ...], template_files: tuple[Path, ...], tasks: tuple[str, ...],
    field_maps: tuple[str, ...], label_maps: tuple[str, ...], list_tasks: bool, shots: int,
    options_style: str, cot: bool, seed: int,
    limit: int | None, max_per_task: int | None, on_bad_row: str, out: str, db: Path | None,
    paraphrase: int | None, executor: str, ray_address: str | None, **kwargs: Any,
) -> None:
    """Turn labelled datasets into instruction examples with FLAN-style templates.

    Each row gets one template of its task (round-robin), zero-shot or --shots K; same
    arguments and seed give the same bytes. Exit status 2 on bad input (nothing written).
    """
    options = pop_client_options(kwargs)
    if list_tasks:
        for line in describe_tasks():
            click.echo(line)
        return
    if paraphrase:
        _paraphrase(paraphrase, _specs(template_files, tasks), out, db, options)
        return
    sources = task_inputs(inputs, template_files, tasks, field_maps, label_maps)
    args = {
        "inputs": [str(p) for p in inputs], "templates": [str(p) for p in template_files],
        "tasks": list(tasks), "field_maps": list(field_maps),
        **({"label_maps": list(label_maps)} if label_maps else {}), "shots": shots,
        "options_style": options_style, "cot": cot, "seed": seed, "limit": limit,
        "max_per_task": max_per_task, "on_bad_row": on_bad_row, "output": out,
    }
    bad = BadRows()
    counts: Counter[str] = Counter()
    saved = None
    with block_mapper(executor, ray_address) as mapper, atomic_output(out) as handle:
        examples = convert(sources, shots=shots, options_style=options_style, cot=cot,
                           seed=seed, limit=limit, max_per_task=max_per_task,
                           on_bad_row=on_bad_row, bad=bad, mapper=mapper)
        for example in examples:
            handle.write(example.model_dump_json() + "\n")
            counts[example.task] += 1
        handle.flush()
        summary = {"examples": sum(counts.values()), "tasks": dict(counts),
                   "skipped_bad_rows": bad.count}
        if db is not None:
            saved = save_run(store.open_db(db), handle.name, args, seed, summary)
    _report(summary, bad, out, saved, run_id(args) if db is not None else None)


def _report(summary: dict[str, Any], bad: BadRows, out: str, saved: int | None,
            rid: str | None) -> None:
    per_task = ", ".join(f"{task} {n:,}" for task, n in summary["tasks"].items())
    line = f"flan: {summary['examples']:,} examples ({per_task or 'none'}) -> {out}"
    if saved is not None:
        line += f"; {saved:,} new rows in the database (run {rid})"
    click.echo(line, err=True)
    if bad.count:
        click.echo(f"flan: skipped {bad.count:,} bad rows, e.g.:", err=True)
        for message in bad.examples:
            click.echo(f"  {message}", err=True)


def _paraphrase(n: int, specs: list[TaskTemplates], out: str, db: Path | None,
                options: dict[str, Any]) -> None:
    if len(specs) != 1:
        raise UserInputError("--paraphrase-templates: give one --templates file or --task")
    if out == "-":
        raise UserInputError("--paraphrase-templates: name the new template file with -o")
    if db is None:
        raise UserInputError("--paraphrase-templates needs --db (requests go through its ledger)")
    spec = specs[0]
    with endpoint_url(options.get("base_url"), options.get("model")) as (url, model):
        config = client_config(options, url, model=model)
        database = store.open_db(db)

        async def ask() -> tuple[list, list[str]]:
            async with LLMClient(config, database) as client, track(
                    client, options.get("progress")):
                return await paraphrase_templates(client, spec, n)

        templates, notes = run_async(ask())
    for note in notes:
        click.echo(f"flan: {note}", err=True)
    if not templates:
        raise click.ClickException(f"no usable phrasing for task {spec.task}; nothing written")
    with atomic_output(out) as handle:
        handle.write(dump_templates(spec.model_copy(update={"templates": templates})))
        handle.flush()
        load_templates(handle.name)
    click.echo(f"flan: {len(templates)} new templates for {spec.task} -> {out} (review them "
               f"before use)", err=True)
