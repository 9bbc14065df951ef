"""The `rlaif eval` group: `rm`, `winrate`, `constraints` and `ifeval` (parse, call, print).

`eval rm` measures a reward model's pairwise accuracy (``align.eval.reward_model``); `eval
constraints` the held-out constraint satisfaction of policies (``align.eval.heldout``); `eval
winrate` answers the prompts with both models, judges each pair and prints the win rate.
Its judging options are those of `rlaif label` (``--judge``, ``--judge-base-url``,
``--judge-model``, ``--rubric``, ``--soft``, ``--cot``, ``--tie-margin`` and the endpoint
limits, which also apply to URL models); pairs are always judged in both orders. The work is
in ``align.eval.winrate``. `eval ifeval` scores IFEval from a responses file or a policy's
greedy answers (``align.eval.ifeval``).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import click

from align.eval.heldout import constraint_eval, format_eval
from align.eval.policies import Sampling, answer, parse_source, served
from align.eval.winrate import (
    answer_both,
    build_pairs,
    check_constraints,
    format_table,
    merge_labels,
    satisfaction_report,
    summarise,
    write_result,
)
from datagen import store
from datagen.cli_checks import ModelDir, db_option, model_dir_option, output_option
from datagen.connect import block_executor_options, client_config, client_options, dump_options
from datagen.distributed.blocks import block_mapper
from datagen.errors import UserInputError
from datagen.jsonl import atomic_write, write_jsonl
from datagen.responses.sample import PromptItem, read_prompts
from judges.constraints.ifeval.evaluate import bundled_prompts_path as bundled_ifeval_path
from judges.constraints.ifeval.evaluate import read_ifeval_prompts
from judges.setup import judge_options, judge_setup, provenance, run_judges


@click.command("winrate")
@click.option("--policy", required=True, type=ModelDir(allow_url=True),
              help="The policy: a local model directory, 'default' (the embedded model) or an "
                   "OpenAI-compatible base URL (with --policy-model).")
@click.option("--policy-model", default=None, help="Model name at a URL --policy.")
@click.option("--reference", required=True, type=ModelDir(allow_url=True),
              help="The reference, as --policy (e.g. the model the policy was trained from).")
@click.option("--reference-model", default=None, help="Model name at a URL --reference.")
@click.option("--prompts", "prompts_path", required=True, type=click.Path(path_type=Path),
              help="JSONL: prompt (text or chat messages), optional id and constraints (from "
                   "`rlaif generate constrained`).")
@click.option("--n-prompts", default=None, type=click.IntRange(1),
              help="Use only the first N prompts.")
@click.option("--max-tokens", default=512, show_default=True, type=click.IntRange(1),
              help="Tokens per answer.")
@click.option("--temperature", default=0.7, show_default=True, type=click.FloatRange(0, 2),
              help="Sampling temperature of both models.")
@click.option("--seed", default=0, show_default=True,
              help="Sampling seed sent with every request; also seeds the bootstrap.")
@db_option("Project database (request ledger, run record).", postgres=True)
@output_option("Write the result JSON here and the labelled pairs to RESULT.pairs.jsonl "
               "(readable by `rlaif judge-report`).", required=False)
@judge_options(protocol=False)
def eval_winrate(policy: str, policy_model: str | None, reference: str,
                 reference_model: str | None, prompts_path: Path, n_prompts: int | None,
                 max_tokens: int, temperature: float, seed: int, db: Path,
                 output: Path | None, **kwargs: Any) -> None:
    """Win rate of a policy against a reference, judged on each prompt's two answers.

    Both models answer every prompt once with the same settings and seed; each pair is judged
    in both orders. A tie counts half a win and errors are left out of the rate. Exit status:
    0; 1 when some requests failed (rerun to retry them; answered ones are not sent again);
    2 on bad input, before any request.
    """
    specs, rubrics, settings, options, _ = judge_setup(kwargs, orders="both", seed=seed)
    sources = [parse_source("policy", policy, policy_model),
               parse_source("reference", reference, reference_model)]
    prompts = read_prompts(prompts_path)[:n_prompts]
    if "verify" in specs:
        check_constraints(prompts, prompts_path)
    sampling = Sampling(temperature=temperature, max_tokens=max_tokens, seed=seed)
    database = store.open_db(db)
    args = {"policy": policy, "policy_model": policy_model, "reference": reference,
            "reference_model": reference_model, "prompts": str(prompts_path),
            "n_prompts": len(prompts), "judges": specs, **sampling.model_dump()}
    run_id = "winrate-" + hashlib.sha256(dump_options(args).encode()).hexdigest()[:12]
    store.start_run(database, run_id, "winrate", args, seed)

    answers, endpoints = answer_both(sources, prompts, sampling, options, database)
    rows, failed_rows = build_pairs(prompts, answers["policy"], answers["reference"])
    judged, judge_failed, _ = (run_judges(rows, specs, rubrics, settings, options, db)
                               if rows else ([], 0, None))
    meta = provenance(specs, rubrics, settings)
    labels = [row | {"judge": meta}
              for row in merge_labels(len(prompts), judged, failed_rows)]

    result = summarise(labels, seed) | {
        "policy": {"source": policy, "model": endpoints[0].model},
        "reference": {"source": reference, "model": endpoints[1].model},
        "judge": meta, "prompts": str(prompts_path), "sampling": sampling.model_dump(),
        "satisfaction_rate": None, "satisfaction_ci": None}
    if "verify" in specs:
        result |= satisfaction_report(prompts, answers)
    failed = len(failed_rows) + judge_failed
    store.finish_run(database, run_id, "failed" if failed else "done",
                     {k: result[k] for k in ("win_rate", "n", "wins", "losses", "ties",
                                             "errors")})
    click.echo(format_table(result))
    if output is not None:
        pairs = write_result(output, result, labels)
        click.echo(f"eval winrate: {output}, labelled pairs {pairs}", err=True)
    if failed:
        click.echo(f"eval winrate: {failed} pairs had a failed request; rerun to retry them",
                   err=True)
        sys.exit(1)


@click.command("rm")
@model_dir_option("--reward-model", "model", "Reward model directory (from `rlaif train rm`).",
                  ModelDir(allow_default=False), required=True)
@click.option("--data", required=True, type=click.Path(exists=True),
              help="Preference export: JSONL, or a dataset directory (its 'test' split).")
@click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def eval_rm(model: str, data: str, batch_size: int, as_json: bool) -> None:
    """Pairwise accuracy of a reward model on held-out preference pairs."""
    from align.eval.reward_model import reward_accuracy

    result = reward_accuracy(model, data, batch_size=batch_size)
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"accuracy {result['accuracy']:.3f} ({result['correct']}/{result['count']} "
                   f"pairs), mean margin {result['mean_margin']:.3f}")


@click.command("constraints")
@click.option("--prompts", required=True, type=click.Path(exists=True, dir_okay=False,
                                                          path_type=Path),
              help="Held-out constrained prompts JSONL (from `rlaif generate constrained -o`).")
@model_dir_option("--policy", "models", multiple=True, required=True,
                  help="A policy: 'default' (the embedded model) or a model directory. "
                       "Repeat; the first is the baseline.")
@click.option("--temperature", default=0.7, show_default=True, type=click.FloatRange(0, 2),
              help="Sampling temperature (0: greedy), the same for every policy.")
@click.option("--max-tokens", default=128, show_default=True, type=click.IntRange(1),
              help="New tokens per answer.")
@click.option("--samples", default=1, show_default=True, type=click.IntRange(1),
              help="Answers per prompt.")
@click.option("--seed", default=0, show_default=True, help="Sampling and bootstrap seed.")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(1),
              help="Answers requested at once (the server batches them).")
@db_option("Project database (request ledger: a rerun samples nothing again).")
@output_option("Also write the report (with per-answer results) as JSON here.",
               required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@block_executor_options
def eval_constraints(prompts: Path, models: tuple[str, ...], temperature: float,
                     max_tokens: int, samples: int, seed: int, batch_size: int, db: Path,
                     output: Path | None, as_json: bool, executor: str,
                     ray_address: str | None) -> None:
    """Held-out constraint satisfaction of policies (all constraints met, per constraint kind)
    with Wilson 95% intervals, and each policy's difference from the first.

    Each policy is served by `rlaif serve` while it answers; every request goes through the
    ledger. Exit status: 0; 1 when some requests failed (their answers count as unsatisfied;
    rerun to retry them); 2 on bad input."""
    with block_mapper(executor, ray_address) as mapper:
        report = constraint_eval(list(models), prompts, db=db,
                                 temperature=temperature, max_new_tokens=max_tokens,
                                 samples=samples, seed=seed, batch_size=batch_size,
                                 mapper=mapper)
    if output is not None:
        with atomic_write(output) as fh:
            json.dump(report, fh, indent=1)
    if as_json:
        click.echo(json.dumps(report, indent=1))
    else:
        for line in format_eval(report):
            click.echo(line)
    if report.get("failed_requests"):
        click.echo(f"eval constraints: {report['failed_requests']} requests failed; rerun to "
                   "retry them", err=True)
        sys.exit(1)


@click.command("ifeval")
@click.option("--prompts", "prompts_path", default=None, type=click.Path(path_type=Path),
              help="IFEval prompts (input_data.jsonl form: key, prompt, instruction_id_list, "
                   "kwargs). Default: IFEval's 541 prompts, shipped with the package.")
@click.option("--responses", "responses_path", default=None, type=click.Path(path_type=Path),
              help='JSONL of {"prompt", "response"} lines, joined to the prompts on the text.')
@click.option("--policy", default=None, type=ModelDir(allow_url=True),
              help="Answer the prompts with this model instead: a local model directory, "
                   "'default' (the embedded model) or an OpenAI-compatible base URL (with "
                   "--policy-model). Requests go through the ledger of --db.")
@click.option("--policy-model", default=None, help="Model name at a URL --policy.")
@click.option("--max-tokens", default=1280, show_default=True, type=click.IntRange(1),
              help="Tokens per answer (--policy).")
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(0, 2),
              help="Sampling temperature (--policy; 0 is greedy).")
@click.option("--seed", default=0, show_default=True, help="Sampling seed (--policy).")
@click.option("--n-prompts", default=None, type=click.IntRange(1),
              help="Use only the first N prompts.")
@db_option("Project database (request ledger, run record) for --policy.")
@click.option("--check-train", "train_paths", multiple=True, type=click.Path(path_type=Path),
              help="Training prompts JSONL (prompt or instruction per line) to check for "
                   "prompts within ROUGE-L 0.7 of an evaluation prompt (repeatable).")
@output_option("Write one line per prompt: key, prompt, instruction_id_list, "
               "follow_instruction_list_strict, follow_instruction_list_loose, response.",
               required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@client_options
@block_executor_options
def eval_ifeval(prompts_path: Path | None, responses_path: Path | None, policy: str | None,
                policy_model: str | None, max_tokens: int, temperature: float, seed: int,
                n_prompts: int | None, db: Path, train_paths: tuple[Path, ...],
                output: Path | None, as_json: bool, executor: str, ray_address: str | None,
                **kwargs: Any) -> None:
    """IFEval: prompt- and instruction-level accuracy, strict and loose, with 95% intervals.

    Exit status: 0; 1 when some --policy requests failed (rerun: answered ones are not sent
    again) or when --check-train found training prompts too close to the evaluation prompts
    (the score is then not reported as clean); 2 on bad input, before any request.
    """
    from align.eval import ifeval

    if (responses_path is None) == (policy is None):
        raise UserInputError("give exactly one of --responses FILE or --policy MODEL")
    items = read_ifeval_prompts(prompts_path)[:n_prompts]
    close = ifeval.contamination(items, list(train_paths)) if train_paths else []
    if responses_path is not None:
        responses, by_prefix = ifeval.join_responses(
            items, ifeval.read_responses(responses_path), responses_path)
        source = {"responses": str(responses_path), "matched_by_prefix": by_prefix}
        if by_prefix:
            click.echo(f"eval ifeval: {len(by_prefix)} prompts matched a response by their first "
                       f"{ifeval.PREFIX_CHARS} characters (keys {by_prefix})", err=True)
    else:
        sampling = Sampling(temperature=temperature, max_tokens=max_tokens, seed=seed)
        args = {"policy": policy, "policy_model": policy_model, "n_prompts": len(items),
                "prompts": str(prompts_path or bundled_ifeval_path()), **sampling.model_dump()}
        run_id = "ifeval-" + hashlib.sha256(dump_options(args).encode()).hexdigest()[:12]
        database = store.open_db(db)
        store.start_run(database, run_id, "ifeval", args, seed)
        responses, source = _answer_ifeval(items, policy, policy_model, sampling, kwargs,
                                           database, run_id)
    with block_mapper(executor, ray_address) as mapper:
        rows = ifeval.score(items, responses, mapper)
    result = ifeval.summarise(rows) | source | {
        "prompts": str(prompts_path or bundled_ifeval_path()),
        "contamination": {"checked": [str(p) for p in train_paths], "close": close,
                          "clean": not close if train_paths else None}}
    if policy is not None:
        store.finish_run(database, run_id, "done", {k: result[k] for k in ifeval.METRICS})
    if output is not None:
        write_jsonl(output, rows)
    click.echo(json.dumps(result) if as_json else ifeval.format_summary(result))
    if close:
        click.echo(f"eval ifeval: NOT CLEAN: {len(close)} training prompts are within ROUGE-L "
                   f"0.7 of an evaluation prompt (first: {close[0]['where']}, key "
                   f"{close[0]['key']})", err=True)
        sys.exit(1)


def _answer_ifeval(items: list[Any], policy: str, policy_model: str | None, sampling: Sampling,
                   options: dict[str, Any], database: Any,
                   run_id: str) -> tuple[dict[str, str], dict[str, Any]]:
    """The policy's answer to each prompt, through the ledger; exits 1 (run recorded as
    failed) if any request failed."""
    source = parse_source("policy", policy, policy_model)
    prompts = [PromptItem(id=str(item.key), prompt=item.prompt) for item in items]
    with served([source]) as endpoints:
        config = client_config(options, endpoints[0].base_url, model=endpoints[0].model)
        (answers,) = answer(config, database, prompts, [sampling],
                            progress=options.get("progress"))
    failed = [a for a in answers if a.status != "ok"]
    if failed:
        store.finish_run(database, run_id, "failed", {"failed_requests": len(failed)})
        click.echo(f"eval ifeval: {len(failed)} of {len(answers)} requests failed (first: "
                   f"{failed[0].error}); rerun to retry them", err=True)
        sys.exit(1)
    responses = {item.prompt: answer.text for item, answer in zip(items, answers, strict=True)}
    return responses, {"policy": {"source": policy, "model": endpoints[0].model},
                       "sampling": sampling.model_dump()}
