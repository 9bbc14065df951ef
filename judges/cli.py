"""`rlaif label`, `rlaif judge-report`, `rlaif judge-audit` and `rlaif judge-revisions` (parse,
call, print): label pairs, measure judges, and judge constitutional revisions.

The judge options and setup they share are in ``judges.setup``. `judge-revisions` is the judge
check of `rlaif generate constitutional`, a command of its own because the generator lives in
``datagen`` and the judges build on it, never the reverse; it stores its verdicts in
``cai_samples.judge_agrees`` (``judges.revisions``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from datagen import store
from datagen.cli_checks import output_option
from datagen.connect import executor_options
from datagen.constitutional.loop import load_samples, record_judge_verdicts
from datagen.endpoint.client import Stats
from datagen.errors import UserInputError
from datagen.jsonl import write_jsonl
from datagen.responses.sample import load_pairs
from judges.audit import audit_metrics, format_audit, load_audit_set
from judges.constraints.verify import verify_pair
from judges.pairs import PairRow, pair_row, read_pairs
from judges.report import build_report, format_report, read_labels, record_label_file
from judges.revisions import revision_pairs, revision_verdicts
from judges.setup import judge_options, judge_setup, provenance, run_judges


def _summary(labels: list[dict[str, Any]], stats: Stats) -> str:
    counts = {k: sum(r["preferred"] == k for r in labels) for k in ("a", "b", "tie", "error")}
    return (f"{len(labels)} pairs: a {counts['a']}, b {counts['b']}, tie {counts['tie']}, "
            f"error {counts['error']}; {stats.ok + stats.failed + stats.skipped} requests "
            f"({stats.from_ledger} from the ledger, {stats.failed} failed)")


@click.command("label")
@click.option("--input", "input_path", type=click.Path(path_type=Path), default=None,
              help="Pairs JSONL: prompt, response_a, response_b, optional id, human, "
                   "constraints. Default: the pairs stored in --db.")
@output_option("Labels JSONL: each input line plus preferred, p_a, consistent, verdicts.")
@click.option("--on-bad-row", default="fail", show_default=True,
              type=click.Choice(["fail", "skip"]),
              help="fail: stop before any request; skip: leave bad lines out and say so.")
@judge_options()
@executor_options
def label(input_path: Path | None, output: Path, on_bad_row: str, **kwargs: Any) -> None:
    """Label response pairs with AI judges (both orders, soft labels, CoT, panels).

    Unreadable replies are asked again once, then labelled "error" (never a win). A rerun
    sends only what the ledger lacks. Exit status: 0; 1 when some requests failed (rerun to
    retry them); 2 on bad input, before any request.
    """
    specs, rubrics, settings, options, db = judge_setup(kwargs)
    rows, bad = _read_input(input_path, db, on_bad_row == "skip", "verify" in specs)
    for message in bad:
        click.echo(f"label: skipped {message}", err=True)
    if not rows:
        raise UserInputError("no pairs to label")
    labels, failed, stats = run_judges(rows, specs, rubrics, settings, options, db)
    meta = provenance(specs, rubrics, settings)
    write_jsonl(output, [row | {"judge": meta} for row in labels])
    if store.database_exists(db):
        record_label_file(db, output, meta, {"pairs": len(labels), "failed": failed})
    click.echo(f"label: {_summary(labels, stats)} -> {output}", err=True)
    if failed:
        sys.exit(1)


def _read_input(path: Path | None, db: Path, skip: bool,
                check_constraints: bool) -> tuple[list[PairRow], list[str]]:
    if path is not None:
        return read_pairs(path, skip, check_constraints)
    if not store.database_exists(db):
        raise UserInputError(f"{db}: no such database (give --input PAIRS.jsonl)")
    stored = load_pairs(store.open_db(db))
    if not stored:
        raise UserInputError(f"{db}: no pairs stored (run `rlaif generate responses` first)")
    return [pair_row(obj, f"{db}:pairs:{obj['id']}", check_constraints) for obj in stored], []


@click.command("judge-report")
@click.argument("labels_file", metavar="LABELS.jsonl", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--reference", type=click.Choice(["verify"]), default=None,
              help="Calibrate against the verifier on rows with constraints (without it, a "
                   "`reference` field is used when present).")
def judge_report(labels_file: Path, as_json: bool, reference: str | None) -> None:
    """Counts, agreement with human labels (accuracy, Cohen's kappa), position and length bias,
    the length-controlled win rate, and agreement with a reference labeller."""
    rows = read_labels(labels_file)
    report = build_report(rows, reference, verify_pair)
    click.echo(json.dumps(report, indent=2) if as_json else format_report(report))


@click.command("judge-audit")
@click.option("--json", "as_json", is_flag=True, help="Print the measures as one JSON object.")
@output_option("Also write the audit labels JSONL here.", required=False)
@judge_options()
def judge_audit(as_json: bool, output: Path | None, **kwargs: Any) -> None:
    """Run the judge over the built-in audit set: accuracy on pairs with a known better answer,
    position consistency, length bias and the injection flip rate."""
    specs, rubrics, settings, options, db = judge_setup(kwargs)
    labels, failed, stats = run_judges(load_audit_set(), specs, rubrics, settings, options, db)
    if output is not None:
        write_jsonl(output, labels)
    metrics = audit_metrics(labels)
    click.echo(json.dumps(metrics, indent=2) if as_json else format_audit(metrics))
    click.echo(f"judge-audit: {_summary(labels, stats)}", err=True)
    if failed:
        sys.exit(1)


@click.command("judge-revisions")
@click.option("--run-id", default=None,
              help="Judge one constitutional run's rows (default: every stored row).")
@judge_options()
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
    if not store.database_exists(db):
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
