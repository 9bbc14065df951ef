"""`rlaif generate constitutional`: critique and revise answers to red-team prompts (SL-CAI)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

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
from datagen.constitutional.constitution import (
    DEFAULT_CONSTITUTION,
    DEFAULT_PROMPTS,
    load_constitution,
    load_prompts,
)
from datagen.constitutional.loop import (
    CaiSummary,
    critique_and_revise,
    run_id_for,
    save_samples,
    summarise,
    write_jsonl,
)
from datagen.endpoint.client import LLMClient, run_async
from datagen.progress import track


@click.command()
@click.option("--prompts", "prompts_file", default=None, type=click.Path(path_type=Path),
              help="JSONL of {id, category, prompt: text or [messages]}. "
                   "Default: the bundled red-team prompts.")
@click.option("--constitution", "constitution_file", default=None,
              type=click.Path(path_type=Path),
              help="Constitution YAML/JSON (ours, or the public recipe's JSON layout). "
                   "Default: the bundled constitution.")
@click.option("--rounds", default=1, show_default=True, type=click.IntRange(1, 16),
              help="Critique/revision rounds per prompt, each with a newly drawn principle.")
@click.option("--limit", default=None, type=click.IntRange(1),
              help="Use only the first N prompts.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the principle draw (combined with each prompt's id).")
@click.option("--temperature", default=1.0, show_default=True, type=click.FloatRange(0, 2))
@click.option("--max-tokens", default=1024, show_default=True, type=click.IntRange(1),
              help="Most tokens per answer, critique or revision.")
@db_option("Project database (request ledger and the cai_samples table).", postgres=True)
@output_option("Also write every sample as JSONL here.", required=False)
@hosted_options
@client_options
def generate_constitutional(
    prompts_file: Path | None, constitution_file: Path | None, rounds: int, limit: int | None,
    seed: int, temperature: float, max_tokens: int, db: Path, output: Path | None, **kwargs,
) -> None:
    """Answer each prompt, then critique and revise the answer against principles drawn from
    a constitution; store every turn in the ledger and every prompt in `cai_samples`.

    Rerunning with the same arguments resumes: answered turns come from the ledger.
    To check each revision with an AI judge, run `rlaif judge-revisions --db DB` afterwards
    (the judges build on this package, so the check is their command, not an option here).
    Exit status: 0 when every request succeeded, 1 when some failed or were not sent
    (budget), 2 on bad usage or bad input files (nothing is sent).
    """
    options = pop_client_options(kwargs)
    constitution = load_constitution(constitution_file or DEFAULT_CONSTITUTION)
    prompts = load_prompts(prompts_file or DEFAULT_PROMPTS, limit=limit)
    settings = {"rounds": rounds, "seed": seed, "temperature": temperature,
                "max_tokens": max_tokens}
    with endpoint_url(options.get("base_url"), options.get("model")) as (url, model):
        config = client_config(options, url, model=model)
        database = store.open_db(db)
        run_id = run_id_for(constitution, config.model, **settings)
        store.start_run(database, run_id, "constitutional", {
            **settings, "prompts": str(prompts_file or DEFAULT_PROMPTS), "limit": limit,
            "constitution": str(constitution_file or DEFAULT_CONSTITUTION),
            "constitution_hash": constitution.content_hash, "model": config.model}, seed)
        started = time.monotonic()

        async def go():
            async with LLMClient(config, database) as client, track(
                    client, options.get("progress")):
                samples = await critique_and_revise(client, prompts, constitution, **settings)
                return samples, client.stats

        samples, stats = run_async(go())
        save_samples(database, samples)
        summary = summarise(samples, stats, run_id, time.monotonic() - started)
        incomplete = summary.status.get("failed", 0) + summary.status.get("skipped", 0)
        store.finish_run(database, run_id, "incomplete" if incomplete else "done",
                         summary.model_dump())
    if output is not None:
        write_jsonl(output, samples)
    click.echo(summary_line(summary, output), err=True)
    if incomplete:
        sys.exit(1)


def summary_line(summary: CaiSummary, output: Path | None = None) -> str:
    """The closing line of a run."""
    def counts(values: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(values.items())) or "none"

    target = f" -> {output}" if output else ""
    return (
        f"constitutional {summary.run_id}: {summary.prompts} prompts: {counts(summary.status)}; "
        f"degenerate: {counts(summary.degenerate)}; refusals: {counts(summary.refusals)}; "
        f"{summary.pairs} pairs; {summary.requests_sent} requests sent, "
        f"{summary.from_ledger} from the ledger; "
        f"{summary.prompt_tokens + summary.completion_tokens:,} tokens, "
        f"${summary.cost_usd:.4f}, {summary.seconds:.1f} s{target}"
    )
