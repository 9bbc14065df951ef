"""`rlaif judge-revisions`: ask AI judges whether each constitutional revision beats its initial
answer, and store the verdict in ``cai_samples.judge_agrees`` (parse, call, print).

This is the judge check of `rlaif generate constitutional` (issue 6). It is a command of its own,
run after the generator, because the generator lives in ``datagen`` and the judges in ``judges``,
which builds on ``datagen`` and never the reverse. The work is in ``judges.revisions`` and
``judges.cli.run_judges``; the judge options are those of `rlaif label`.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from datagen import store
from datagen.constitutional.loop import load_samples, record_judge_verdicts
from datagen.errors import UserInputError
from judges.cli import judge_options, judge_setup, run_judges
from judges.revisions import revision_pairs, revision_verdicts


@click.command("judge-revisions")
@click.option("--run-id", default=None,
              help="Judge one constitutional run's rows (default: every stored row).")
@judge_options
def judge_revisions(run_id: str | None, **kwargs: Any) -> None:
    """Ask AI judges whether each constitutional revision is better than the initial answer.

    Every row of `cai_samples` that would become a preference pair is judged as (final
    revision, initial answer), in both orders by default, and gets `judge_agrees`: true (the
    revision is better), false (the initial answer is better) or null (tie, inconsistent
    across orders, or error). `rlaif export preference --source constitutional
    --drop-judge-disagrees` then leaves out the pairs marked false. A rerun sends only what the
    ledger lacks. Exit status: 0; 1 when some requests failed (rerun to retry them); 2 on bad
    usage.
    """
    specs, rubrics, settings, options, db = judge_setup(kwargs)
    if "verify" in specs:
        raise UserInputError("--judge verify: revisions have no constraints to verify")
    if not db.is_file():
        raise UserInputError(f"{db}: no such database (give --db)")
    rows = revision_pairs(load_samples(store.open_db(db), run_id))
    if not rows:
        raise UserInputError(f"{db}: no constitutional revisions to judge "
                             "(run `rlaif generate constitutional` first)")
    labels, failed, stats = run_judges(rows, specs, rubrics, settings, options, db)
    verdicts = revision_verdicts(rows, labels)
    record_judge_verdicts(store.open_db(db), verdicts)
    values = list(verdicts.values())
    click.echo(
        f"judge-revisions: {len(values)} pairs: revision better {values.count(True)}, initial "
        f"better {values.count(False)}, undecided {values.count(None)}; "
        f"{stats.ok + stats.failed + stats.skipped} requests ({stats.from_ledger} from the "
        f"ledger, {stats.failed} failed)", err=True)
    if failed:
        sys.exit(1)
