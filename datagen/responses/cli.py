"""`rlaif generate responses` and `rlaif export pairs`: sample answers, pair them, write pairs."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import click

from datagen import store
from datagen.cli_checks import db_option, output_option
from datagen.connect import (
    client_config,
    client_options,
    dump_options,
    endpoint_url,
    executor_options,
    hosted_options,
    open_client,
    pop_client_options,
)
from datagen.endpoint.client import run_async
from datagen.errors import UserInputError
from datagen.jsonl import write_jsonl
from datagen.progress import track
from datagen.responses.sample import (
    form_pairs,
    load_pairs,
    read_prompts,
    sample_responses,
    save_responses,
)


@click.command("responses")
@click.option("--prompts", "prompts_path", required=True, type=click.Path(path_type=Path),
              help="JSONL: prompt (text or chat messages), optional id and constraints.")
@click.option("--n", default=2, show_default=True, type=click.IntRange(2),
              help="Responses per prompt, spread round-robin over the models.")
@click.option("--temperature", default=1.0, show_default=True, type=click.FloatRange(0),
              help="Sampling temperature.")
@click.option("--max-tokens", default=512, show_default=True, type=click.IntRange(1),
              help="Tokens per response.")
@click.option("--pairs", "pair_mode", default="random", show_default=True,
              type=click.Choice(["random", "all"]),
              help="One random pair per prompt, or every pair of its responses.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Run seed: sample j of each prompt is sent with a seed derived from it and j "
                   "(kept in the ledger's request body); also seeds the pair draw.")
@db_option("Project database (ledger, responses and pairs tables).", postgres=True)
@hosted_options
@client_options
@executor_options
def generate_responses(prompts_path: Path, n: int, temperature: float, max_tokens: int,
                       pair_mode: str, seed: int, db: Path, **kwargs) -> None:
    """Sample N responses per prompt from one or several models and store pairs of them.

    Several models: --model a,b (comma-separated). Exit status 1 when some requests failed
    (rerun to retry them; answered ones are not sent again), 2 on bad input.
    """
    options = pop_client_options(kwargs)
    if temperature == 0:
        raise UserInputError(f"--temperature 0 with --n {n}: greedy decoding gives {n} identical "
                             "responses, so every pair would be a tie; use a temperature above 0 "
                             "(default 1.0)")
    prompts = read_prompts(prompts_path)
    names = [m.strip() for m in (options.get("model") or "").split(",") if m.strip()]
    with endpoint_url(options.get("base_url"), names[0] if names else None) as (url, served):
        models = names or [served]
        config = client_config(options, url, model=models[0])
        database = store.open_db(db)
        args = {"prompts": str(prompts_path), "n": n, "models": models, "seed": seed,
                "temperature": temperature, "max_tokens": max_tokens, "pairs": pair_mode}
        run_id = "responses-" + hashlib.sha256(dump_options(args).encode()).hexdigest()[:12]
        store.start_run(database, run_id, "responses", args, seed)

        async def go():
            async with open_client(config, database, options) as client, track(
                    client, options.get("progress")):
                found = await sample_responses(client, prompts, models, n, temperature,
                                               max_tokens, seed)
                return found, client.stats

        responses, stats = run_async(go())
    pairs = form_pairs(prompts, responses, pair_mode, seed)
    new_pairs = save_responses(database, responses, pairs)
    failed = sum(r.status != "ok" for r in responses)
    summary = {"prompts": len(prompts), "responses": len(responses), "failed": failed,
               "pairs": len(pairs), "new_pairs": new_pairs, "from_ledger": stats.from_ledger}
    store.finish_run(database, run_id, "failed" if failed else "done", summary)
    click.echo(
        f"responses: {len(prompts)} prompts, {len(responses)} responses ({stats.from_ledger} "
        f"from the ledger, {failed} failed), {len(pairs)} pairs ({new_pairs} new) -> {db}",
        err=True)
    if failed:
        sys.exit(1)


@click.command("pairs")
@db_option("Project database holding the pairs table.", postgres=True)
@output_option("Where to write the pairs JSONL (input of `rlaif label`).")
def export_pairs(db: Path, output: Path) -> None:
    """Write the stored response pairs as JSONL: id, prompt, response_a, response_b, models,
    constraints."""
    if not store.database_exists(db):
        raise UserInputError(f"{db}: no such database")
    pairs = load_pairs(store.open_db(db))
    if not pairs:
        raise UserInputError(f"{db}: no pairs stored (run `rlaif generate responses` first)")
    write_jsonl(output, pairs)
    click.echo(f"export pairs: {len(pairs)} pairs -> {output}", err=True)

