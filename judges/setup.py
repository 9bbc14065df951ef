"""Judge options and judge setup: what every judging command shares.

`rlaif label`, `rlaif judge-audit`, `rlaif judge-revisions` and `rlaif eval winrate` all take the
same judge options (which judges, the judge endpoint and model, rubrics, the protocol), turn them
into the same judge functions, and record the same provenance with each label. Written once
here, outside any CLI module, so the commands cannot drift apart in help text or behaviour and
library code (``align.eval``, benchmarks) can judge pairs without importing a command.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import yaml

from datagen import store
from datagen.cli_checks import db_option, model_dir_problem
from datagen.connect import (
    client_config,
    client_options,
    endpoint_url,
    hosted_options,
    open_client,
    pop_client_options,
)
from datagen.distributed.blocks import Mapper, block_mapper, map_local
from datagen.endpoint.client import LLMClient, Stats, run_async
from datagen.errors import UserInputError
from datagen.progress import track
from judges.pairs import PairRow
from judges.pairwise import PairwiseSettings, judge_pairwise
from judges.panel import JudgeFn, judge_verify, label_pairs
from judges.pointwise import POINTWISE_FIELDS, PointwiseRubric, judge_score
from judges.rubric import PAIRWISE_FIELDS, PairwiseRubric, default_rubric_path, load_rubric

ENDPOINT_JUDGES = ("pairwise", "score")
RUBRIC_KINDS = {"pairwise": (PairwiseRubric, PAIRWISE_FIELDS),
                "pointwise": (PointwiseRubric, POINTWISE_FIELDS)}


def judge_options(*, protocol: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options every judging command shares, with the endpoint options; they arrive as
    keyword arguments for ``judge_setup``. ``protocol=False`` leaves out ``--orders``,
    ``--seed`` and ``--db`` for a command that fixes the first and has the others itself."""
    options = [
        click.option("--judge", "judges", multiple=True, default=("pairwise",), show_default=True,
                     help="pairwise (LLM compares the two), score (LLM rates each 1-10), verify "
                          "(check the constraints), rm:PATH (a trained reward model). "
                          "Repeat for a panel: p_a is the mean, each judge's verdicts are kept."),
        click.option("--judge-base-url", default=None,
                     help="Judge endpoint (same as --base-url). Default: $OPENAI_BASE_URL, else "
                          "the embedded model."),
        click.option("--judge-model", default=None, help="Judge model (same as --model)."),
        click.option("--rubric", "rubrics", multiple=True, type=click.Path(dir_okay=False),
                     help="Judge config YAML replacing the shipped one of its kind (pairwise or "
                          "pointwise); see judges/rubrics/."),
    ]
    if protocol:
        options.append(click.option(
            "--orders", default="both", show_default=True,
            type=click.Choice(["both", "random", "first"]),
            help="Show each pair in both orders, one random order, or as given."))
    options += [
        click.option("--soft", is_flag=True,
                     help="Read p_a from the verdict tokens' logprobs (softmax over the two)."),
        click.option("--cot", is_flag=True,
                     help="Ask for a rationale first, then the one-token verdict scored from "
                          "its logprobs (implies --soft)."),
        click.option("--tie-margin", default=0.05, show_default=True,
                     type=click.FloatRange(0, 0.5),
                     help="A pair is a tie when |p_a - 0.5| is at most this."),
    ]
    if protocol:
        options += [
            click.option("--seed", default=0, show_default=True, help="Seed of --orders random."),
            db_option("Project database (request ledger).", postgres=True),
        ]

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        return hosted_options(client_options(
            functools.reduce(lambda f, opt: opt(f), reversed(options), fn)))

    return decorate


def parse_judges(specs: tuple[str, ...]) -> list[str]:
    """Validated judge names, in order, without repeats."""
    out: list[str] = []
    for spec in specs:
        if spec not in ("pairwise", "score", "verify") and not (
                spec.startswith("rm:") and len(spec) > 3):
            raise UserInputError(
                f"--judge: unknown judge {spec!r} (use pairwise, score, verify or rm:PATH)")
        problem = spec.startswith("rm:") and model_dir_problem(Path(spec[3:]).expanduser())
        if problem:
            raise UserInputError(f"--judge {spec}: {problem}")
        if spec not in out:
            out.append(spec)
    return out


def load_rubrics(paths: tuple[str, ...]) -> dict[str, Any]:
    """The shipped rubric of each kind, replaced by the --rubric files given."""
    rubrics = {kind: load_rubric(default_rubric_path(kind), model, **fields)
               for kind, (model, fields) in RUBRIC_KINDS.items()}
    for path in paths:
        try:
            kind = (yaml.safe_load(Path(path).read_text()) or {}).get("kind", "pairwise")
        except (OSError, yaml.YAMLError, AttributeError) as exc:
            raise UserInputError(f"{path}: cannot read rubric: {exc}") from None
        if kind not in RUBRIC_KINDS:
            raise UserInputError(f"{path}: kind must be pairwise or pointwise, got {kind!r}")
        model, fields = RUBRIC_KINDS[kind]
        rubrics[kind] = load_rubric(path, model, **fields)
    return rubrics


def make_judges(specs: list[str], client: LLMClient | None, rubrics: dict[str, Any],
                settings: PairwiseSettings, mapper: Mapper = map_local) -> dict[str, JudgeFn]:
    """One async labelling function per judge name (the verifier's rows go through
    ``mapper``: in this process, or in blocks on a Ray cluster)."""
    judges: dict[str, JudgeFn] = {}
    for spec in specs:
        if spec == "pairwise":
            judges[spec] = functools.partial(
                judge_pairwise, client, rubric=rubrics["pairwise"], settings=settings)
        elif spec == "score":
            judges[spec] = functools.partial(
                judge_score, client, rubric=rubrics["pointwise"], model=settings.model,
                tie_margin=settings.tie_margin)
        elif spec == "verify":
            judges[spec] = functools.partial(asyncio.to_thread, mapper, judge_verify)
        else:
            from judges.reward_judge import judge_reward_model  # imports torch: only when used

            judges[spec] = functools.partial(
                asyncio.to_thread, judge_reward_model, path=spec[3:],
                tie_margin=settings.tie_margin)
    return judges


def run_judges(rows: list[PairRow], specs: list[str], rubrics: dict[str, Any],
               settings: PairwiseSettings, options: dict[str, Any],
               db: Path) -> tuple[list[dict[str, Any]], int, Stats]:
    """Label rows with the judges; start or reach the endpoint only when a judge needs one.
    With ``--executor ray`` the verifier runs in blocks on the cluster, as the requests do."""
    executor = options.get("executor") if "verify" in specs else None
    with block_mapper(executor, options.get("ray_address")) as mapper:
        return _run_judges(rows, specs, rubrics, settings, options, db, mapper)


def _run_judges(rows: list[PairRow], specs: list[str], rubrics: dict[str, Any],
                settings: PairwiseSettings, options: dict[str, Any], db: Path,
                mapper: Mapper) -> tuple[list[dict[str, Any]], int, Stats]:
    if not any(spec in ENDPOINT_JUDGES for spec in specs):
        judges = make_judges(specs, None, rubrics, settings, mapper)
        labels, failed = run_async(label_pairs(rows, judges, settings.tie_margin))
        return labels, failed, Stats()
    with endpoint_url(options.get("base_url"), options.get("model")) as (url, model):
        config = client_config(options, url, model=model)
        database = store.open_db(db)
        settings = settings.model_copy(update={"model": model})

        async def go():
            async with open_client(config, database, options) as client, track(
                    client, options.get("progress")):
                judges = make_judges(specs, client, rubrics, settings, mapper)
                labels, failed = await label_pairs(rows, judges, settings.tie_margin)
                return labels, failed, client.stats

        return run_async(go())


def judge_setup(
    kwargs: dict[str, Any], *, orders: str | None = None, seed: int | None = None
) -> tuple[list[str], dict, PairwiseSettings, dict, Path | None]:
    """Split a judging command's options into (judges, rubrics, settings, endpoint options, db).

    A command without ``--orders``/``--seed``/``--db`` of its own passes ``orders`` and ``seed``
    and gets None for the database."""
    options = pop_client_options(kwargs)
    for ours, theirs in (("judge_base_url", "base_url"), ("judge_model", "model")):
        value = kwargs.pop(ours)
        if value and options.get(theirs) and value != options[theirs]:
            raise UserInputError(f"--{ours.replace('_', '-')} and --{theirs.replace('_', '-')} "
                                 "disagree; give one")
        options[theirs] = value or options.get(theirs)
    specs = parse_judges(kwargs.pop("judges"))
    rubrics = load_rubrics(kwargs.pop("rubrics"))
    cot = kwargs.pop("cot")
    settings = PairwiseSettings(orders=orders or kwargs.pop("orders"),
                                soft=kwargs.pop("soft") or cot, cot=cot,
                                seed=kwargs.pop("seed") if seed is None else seed,
                                tie_margin=kwargs.pop("tie_margin"), model=options.get("model"))
    return specs, rubrics, settings, options, kwargs.pop("db", None)


def provenance(specs: list[str], rubrics: dict[str, Any], settings: PairwiseSettings) -> dict:
    """What produced a label: judges, model, rubric names and hashes, protocol."""
    used = {"pairwise": "pairwise", "score": "pointwise"}
    return {
        "judges": specs, "model": settings.model,
        "rubrics": {used[s]: f"{rubrics[used[s]].name}@{rubrics[used[s]].sha}"
                    for s in specs if s in used},
        "orders": settings.orders, "soft": settings.soft, "cot": settings.cot,
        "tie_margin": settings.tie_margin,
    }
