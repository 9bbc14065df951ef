"""The project report (`rlaif report`): one self-contained HTML page over everything made so far.

A person deciding whether a dataset is good enough to train on needs to see it whole: how
many rows each stage kept and why others were dropped, how long and how varied the
instructions are, how novel Self-Instruct candidates were (ROUGE-L against the pool), how
evenly FLAN templates were used, how biased the judge was (position, length) and how sure
(soft labels), what training did (loss, reward, KL), how the result evaluates (win rate with
its interval) and what it all cost. This module builds one section per question from what
``align.report.data`` reads (the project database, training output folders, label files and
eval JSON files), with the SVG charts of ``align.report.plots``, and renders the page through
``align.report.html``. A section without data is left out with a one-line note. Dataset cards
for exported datasets live in ``align.report.card``.
"""

from __future__ import annotations

import random
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from align.eval.intervals import wilson
from align.report import plots
from align.report.data import (
    CURVE_GROUPS,
    EVAL_PATTERNS,
    ReportInputs,
    check_inputs,
    column_rows,
    curves,
    db_label_sources,
    db_tables,
    eval_results,
    file_name,
    find_files,
    instruction_sources,
    judge_of,
    load_runs,
    per_instruction_table,
    run_models,
    run_name,
    text_stats,
    value_counts,
)
from align.report.html import (
    Section,
    clip,
    compact,
    esc,
    figure,
    heading,
    para,
    render_page,
    show,
    table,
    when,
    write_atomic,
)
from align.train.metrics import METRICS_FILE, read_metrics
from datagen import store
from datagen.store.tables import FLAN_EXAMPLES, REQUESTS, RUNS, SI_INSTRUCTIONS
from judges.report import build_report as judge_measures
from judges.report import read_labels

REASON_COLUMNS = ("reason", "drop_reason", "degenerate")
SAMPLES_PER_SOURCE = 5
MAX_TEXTS = 50_000  # instructions per source measured (a seeded sample beyond that)
TOP_VERBS = 15


# --- sections: stages, runs, usage ----------------------------------------------------------------


def stages_section(db: Any, tables: dict[str, list[str]]) -> Section:
    """Rows per table with their status and drop-reason counts."""
    rows, bars = [], []
    for name, columns in sorted(tables.items()):
        if name in (REQUESTS, RUNS):
            continue
        count = store.count_rows(db, name)
        statuses = value_counts(db, name, "status") if "status" in columns else {}
        reasons: Counter = Counter()
        for column in REASON_COLUMNS:
            if column in columns:
                reasons.update(value_counts(db, name, column))
        rows.append((name, count, statuses or None, dict(reasons.most_common()) or None))
        bars.append((name, count))
    if not rows:
        return Section("stages", "Stages", note="no generator tables in the database yet.")
    body = table(("table", "rows", "by status", "by reason"), rows)
    return Section("stages", "Stages", figure(plots.bar_chart(
        bars, title="Rows per table", xlabel="rows"), "Rows per table") + body)


def runs_section(runs: list[dict[str, Any]]) -> Section:
    """Every recorded run: kind, status, seed, models, time, summary counts."""
    if not runs:
        return Section("runs", "Runs", note="no runs recorded in the database.")
    rows = []
    for run in runs:
        took = (run["finished_at"] - run["started_at"]) if run.get("finished_at") else None
        rows.append((run["id"], run["kind"], run["status"], run.get("seed"),
                     ", ".join(run_models(run)) or None, when(run.get("started_at")),
                     f"{took:.1f} s" if took is not None else None, compact(run["summary"])))
    return Section("runs", "Runs", table(
        ("run", "kind", "status", "seed", "model", "started", "took", "summary"), rows))


def usage_section(db: Any, tables: dict[str, list[str]], runs: list[dict[str, Any]]) -> Section:
    """Requests, tokens and cost per model from the ledger, and per run where a run's summary
    recorded its own usage."""
    if REQUESTS not in tables or not store.count_rows(db, REQUESTS):
        return Section("usage", "Tokens and cost", note="the request ledger is empty.")
    per_model: dict[str, Counter] = defaultdict(Counter)
    columns = ("model", "status", "prompt_tokens", "completion_tokens", "cost_usd")
    for row in column_rows(db, REQUESTS, columns):
        counts = per_model[row["model"] or "(unnamed)"]
        counts["requests"] += 1
        counts[row["status"]] += 1
        for key in ("prompt_tokens", "completion_tokens", "cost_usd"):
            counts[key] += row[key] or 0
    totals = store.ledger_totals(db)
    rows = [(m, c["requests"], c["ok"], c["failed"], c["pending"], int(c["prompt_tokens"]),
             int(c["completion_tokens"]), round(float(c["cost_usd"]), 6))
            for m, c in sorted(per_model.items())]
    rows.append(("all models", sum(c["requests"] for c in per_model.values()), totals["ok"],
                 totals["failed"], totals["pending"], int(totals["prompt_tokens"]),
                 int(totals["completion_tokens"]), round(float(totals["cost_usd"]), 6)))
    body = [figure(plots.bar_chart(
        [(m, c["prompt_tokens"] + c["completion_tokens"]) for m, c in sorted(per_model.items())],
        title="Tokens per model (prompt + completion)", xlabel="tokens"), "Tokens per model")]
    if totals["cost_usd"]:
        body.append(figure(plots.bar_chart(
            [(m, float(c["cost_usd"])) for m, c in sorted(per_model.items())],
            title="Cost per model (USD)", xlabel="USD"), "Cost per model"))
    body.append(table(("model", "requests", "ok", "failed", "pending", "prompt tokens",
                       "completion tokens", "cost USD"), rows))
    usage_runs = [r for r in runs if "prompt_tokens" in r["summary"]]
    if usage_runs:
        body.append(heading("Usage recorded by runs"))
        body.append(table(("run", "kind", "prompt tokens", "completion tokens", "cost USD",
                           "requests sent", "from ledger"),
                          [(r["id"], r["kind"], *(r["summary"].get(k) for k in (
                              "prompt_tokens", "completion_tokens", "cost_usd", "requests_sent",
                              "from_ledger"))) for r in usage_runs]))
    return Section("usage", "Tokens and cost", "".join(body))


# --- sections: instructions -------------------------------------------------------------------


def instructions_section(db: Any, tables: dict[str, list[str]]) -> Section:
    """Length histograms, top first verbs and verb-noun pairs, and a sample per source."""
    sources = instruction_sources(db, tables)
    if not sources:
        return Section("instructions", "Instructions", note="no instructions or prompts stored.")
    stats = {label: text_stats(random.Random(0).sample(texts, MAX_TEXTS)
                               if len(texts) > MAX_TEXTS else texts)
             for label, texts in sources.items()}
    sampled = [label for label, texts in sources.items() if len(texts) > MAX_TEXTS]
    body = [table(("source", "distinct texts", "mean words", "median words", "max words",
                   "distinct first verbs", "distinct verb-noun pairs", "pairs per text"),
                  [(label, len(sources[label]), round(s["mean_words"], 1), s["median_words"],
                    s["max_words"], s["distinct_verbs"], s["distinct_verb_noun"],
                    round(s["verb_noun_per_text"], 3)) for label, s in stats.items()]),
            para("Verb: the first word (after 'please' and the like); noun: the first "
                 "following word that is not a function word. A crude heuristic, good for "
                 "spotting a collapse onto a few task types.", "note")]
    if sampled:
        body.append(para(f"Measured on a seeded sample of {MAX_TEXTS:,} texts: "
                         + ", ".join(sampled) + ".", "note"))
    for label, s in stats.items():
        body.append(heading(label))
        upper = max(sorted(s["lengths"])[int(0.99 * (len(s["lengths"]) - 1))], 1)
        body.append(figure(plots.histogram({"instructions": s["lengths"]},
                                           title=f"Length in words: {label}", xlabel="words",
                                           lo=0, hi=upper, integer=True),
                           f"Length histogram: {label}"))
        top = s["verbs"].most_common(TOP_VERBS)
        body.append(figure(plots.bar_chart(top, title=f"Most common first verbs: {label}",
                                           xlabel="instructions"), f"First verbs: {label}"))
        body.append(table(("verb-noun pair", "count"), s["combos"].most_common(10)))
        chosen = random.Random(0).sample(sources[label],
                                         min(SAMPLES_PER_SOURCE, len(sources[label])))
        body.append('<ul class="samples">' + "".join(
            f"<li>{esc(clip(t))}</li>" for t in chosen) + "</ul>")
    return Section("instructions", "Instructions", "".join(body))


def novelty_section(db: Any, tables: dict[str, list[str]], runs: list[dict[str, Any]]) -> Section:
    """The ROUGE-L of each Self-Instruct candidate against the pool, kept vs rejected."""
    if SI_INSTRUCTIONS not in tables or "rouge_l" not in tables[SI_INSTRUCTIONS]:
        return Section("novelty", "ROUGE-L novelty", note="no rouge_l scores stored.")
    by_status: dict[str, list[float]] = defaultdict(list)
    texts, scored = {}, []
    for row in column_rows(db, SI_INSTRUCTIONS,
                           ("id", "instruction", "rouge_l", "status", "reason", "nearest")):
        texts[row["id"]] = row["instruction"]
        if isinstance(row["rouge_l"], int | float):
            by_status[str(row["status"] or "scored")].append(float(row["rouge_l"]))
            scored.append(row)
    if not by_status:
        return Section("novelty", "ROUGE-L novelty", note="no rouge_l scores stored.")
    thresholds = sorted({float(r["args"]["threshold"]) for r in runs
                         if r["kind"] == "self-instruct" and isinstance(
                             (r["args"] or {}).get("threshold"), int | float)})
    markers = [(t, f"threshold {plots.fmt(t)}") for t in thresholds]
    chart = plots.histogram(dict(sorted(by_status.items())),
                            title="ROUGE-L of candidates against the pool",
                            xlabel="ROUGE-L F (1 = a copy of an existing instruction)",
                            lo=0.0, hi=1.0, markers=markers)
    rows = [(status, len(v), statistics.fmean(v), statistics.median(v), max(v))
            for status, v in sorted(by_status.items())]
    closest = sorted(scored, key=lambda r: -r["rouge_l"])[:SAMPLES_PER_SOURCE]
    return Section("novelty", "ROUGE-L novelty", figure(chart, "ROUGE-L histogram") + table(
        ("status", "candidates", "mean ROUGE-L", "median", "max"), rows)
        + heading("Candidates closest to the pool") + table(
            ("candidate", "ROUGE-L", "status", "reason", "nearest pool member"),
            [(clip(r["instruction"] or "", 300), r["rouge_l"], r["status"], r["reason"],
              clip(texts.get(r["nearest"]) or r["nearest"] or "-", 300)) for r in closest]))


def flan_section(db: Any, tables: dict[str, list[str]]) -> Section:
    """Examples per task and template, and how evenly each task's templates were used."""
    if FLAN_EXAMPLES not in tables or "template_id" not in tables[FLAN_EXAMPLES]:
        return Section("flan", "FLAN templates", note="no FLAN examples stored.")
    per_template: Counter = Counter()
    shots: dict[str, Counter] = defaultdict(Counter)
    for row in column_rows(db, FLAN_EXAMPLES, ("task", "template_id", "shots")):
        per_template[(row["task"] or "-", row["template_id"] or "-")] += 1
        shots[row["task"] or "-"]["few-shot" if row["shots"] else "zero-shot"] += 1
    if not per_template:
        return Section("flan", "FLAN templates", note="no FLAN examples stored.")
    by_task: dict[str, list[int]] = defaultdict(list)
    for (task, _), n in per_template.items():
        by_task[task].append(n)
    rows = [(task, sum(ns), len(ns), min(ns), max(ns), shots[task]["zero-shot"],
             shots[task]["few-shot"]) for task, ns in sorted(by_task.items())]
    bars = [(f"{task} / {template}", n) for (task, template), n in sorted(per_template.items())]
    note = "" if len(bars) <= 40 else para(f"The 40 most used of {len(bars)} templates.", "note")
    bars = sorted(bars, key=lambda b: -b[1])[:40] if len(bars) > 40 else bars
    return Section("flan", "FLAN templates", figure(plots.bar_chart(
        bars, title="Examples per template", xlabel="examples"), "Examples per template")
        + note + table(("task", "examples", "templates used", "fewest per template",
                        "most per template", "zero-shot", "few-shot"), rows))


# --- sections: judge labels ---------------------------------------------------------------------


def judge_section(sources: dict[str, list[dict[str, Any]]],
                  judges: dict[str, dict[str, Any] | None]) -> Section:
    """Label counts, position consistency, position and length bias, and soft labels."""
    if not sources:
        return Section("judge", "Judge labels",
                       note="no stored labels and no --labels file given.")
    body = []
    for name, rows in sources.items():
        m = judge_measures(rows)
        counts, position, length = m["counts"], m["position"], m["length"]
        body.append(heading(f"Labels from {name}"))
        if judges.get(name):
            body.append(para("Judge: " + show(judges[name]), "note"))
        body.append(table(("measure", "value", "over"), [
            ("pairs (a / b / tie / error)", f"{counts['a']} / {counts['b']} / {counts['tie']} / "
             f"{counts['error']}", counts["pairs"]),
            ("win rate of A, raw", length["raw_win_rate_a"], "judged pairs"),
            ("win rate of A, length-controlled", length["lc_win_rate_a"], "judged pairs"),
            ("position consistency (both orders agree)", position["consistency"],
             f"{position['pairs_in_both_orders']} pairs in both orders"),
            ("first-shown response wins", position["first_position_win_rate"],
             f"{position['verdicts']} verdicts"),
            ("longer response wins", length["longer_win_rate"],
             f"{length['decided_pairs_of_unequal_length']} decided pairs"),
        ]))
        gauges = _bias_gauges(position, length)
        if gauges:
            body.append(figure(plots.interval_chart(
                gauges, title="Judge consistency and bias (95% Wilson intervals)"),
                f"Judge bias: {name}"))
            body.append(para("0.5 on the bias rows means no position or length preference; "
                             "consistency should be near 1.", "note"))
        soft = [float(r["p_a"]) for r in rows if isinstance(r["p_a"], int | float)]
        if soft:
            body.append(figure(plots.histogram(
                {"p_a": soft}, title="Soft labels: P(A is better)", xlabel="p_a", lo=0.0,
                hi=1.0, markers=[(0.5, "no preference")]), f"Soft-label histogram: {name}"))
        else:
            body.append(para("No soft labels (p_a) in these labels.", "note"))
    return Section("judge", "Judge labels", "".join(body))


def _bias_gauges(position: dict, length: dict) -> list[tuple[str, float, float, float]]:
    gauges = []
    for label, value, n in (
        ("position consistency", position["consistency"], position["pairs_in_both_orders"]),
        ("first-shown wins", position["first_position_win_rate"], position["verdicts"]),
        ("longer wins", length["longer_win_rate"], length["decided_pairs_of_unequal_length"]),
    ):
        if value is not None and n:
            low, high = wilson(value * n, n)
            gauges.append((f"{label} (n={n})", value, low, high))
    return gauges


# --- sections: training curves and evaluations --------------------------------------------------


def training_section(runs_dirs: Sequence[Path]) -> Section:
    """Loss, reward and KL curves of every metrics.jsonl under the run folders."""
    files = find_files(runs_dirs, (METRICS_FILE,))
    if not files:
        note = "no --runs-dir given." if not runs_dirs else f"no {METRICS_FILE} found."
        return Section("training", "Training curves", note=note)
    body = []
    for path in files:
        skipped: list[str] = []
        rows = read_metrics(path, skipped)
        name = run_name(path, runs_dirs)
        body.append(heading(name))
        x_key, groups = curves(rows)
        if skipped:
            body.append(para(f"{len(skipped)} unreadable line(s) skipped.", "note"))
        if not groups:
            body.append(para(f"No loss, reward or KL values in {len(rows)} log line(s).",
                             "note"))
            continue
        final = []
        for group, title, _ in CURVE_GROUPS:
            if group in groups:
                body.append(figure(plots.line_chart(groups[group], title=f"{title}: {name}",
                                                    xlabel=x_key), f"{title}: {name}"))
                final += [(key, len(ys), ys[-1], min(ys), max(ys))
                          for key, (_, ys) in groups[group].items()]
        body.append(table(("metric", "points", "last", "min", "max"), final))
        raised = [(row.get("step", row.get("update")), message) for row in rows
                  for message in row.get("alarms") or []]
        if raised:
            body.append(para(f"{len(raised)} reward-hacking alarm(s):", "note"))
            body.append(table(("step", "alarm"), raised))
    return Section("training", "Training curves", "".join(body))


def eval_section(runs_dirs: Sequence[Path], eval_files: Sequence[Path]) -> Section:
    """Win / satisfaction rates (and reward-model accuracy, IFEval's accuracies) with their
    intervals, then each IFEval result's per-instruction table."""
    results = [r for p in eval_files for r in eval_results(p, strict=True)]
    results += [r for p in find_files(runs_dirs, EVAL_PATTERNS) if p not in eval_files
                for r in eval_results(p, strict=False)]
    if not results:
        return Section("eval", "Evaluation", note="no eval result JSON found or given.")
    names = [file_name(r["file"], runs_dirs) for r in results]
    items = [(f"{name}: {r['metric']}", r["value"], r["low"], r["high"])
             for name, r in zip(names, results, strict=True)]
    rows = [(name, r["metric"], r["value"], r["low"], r["high"], r["n"], r["interval"])
            for name, r in zip(names, results, strict=True)]
    body = figure(plots.interval_chart(items, title="Rates with 95% intervals"),
                  "Evaluation rates") + table(
        ("file", "metric", "value", "low", "high", "n", "interval"), rows)
    for path in dict.fromkeys(r["file"] for r in results):
        per_id = per_instruction_table(path)
        if per_id:
            body += f"<h3>IFEval per instruction: {esc(file_name(path, runs_dirs))}</h3>" + table(
                ("instruction id", "n", "strict", "loose"),
                [(key, row["n"], row["strict"], row["loose"]) for key, row in per_id.items()])
    return Section("eval", "Evaluation", body)


# --- the page -----------------------------------------------------------------------------------


def gather(inputs: ReportInputs) -> list[Section]:
    """Every section of the report, in page order (sections without data carry a note)."""
    sections: list[Section] = []
    label_sources: dict[str, list[dict[str, Any]]] = {}
    judges: dict[str, dict[str, Any] | None] = {}
    if inputs.db is not None:
        db = store.open_db(inputs.db)
        tables = db_tables(db)
        runs = load_runs(db)
        sections += [stages_section(db, tables), runs_section(runs),
                     usage_section(db, tables, runs), instructions_section(db, tables),
                     novelty_section(db, tables, runs), flan_section(db, tables)]
        label_sources |= db_label_sources(db, tables)
    else:
        sections.append(Section("database", "Project database",
                                note="no database given (and none at the default path)."))
    for path in inputs.labels:
        label_sources[str(path)] = read_labels(path)
        judges[str(path)] = judge_of(path)
    sections += [judge_section(label_sources, judges), training_section(inputs.runs_dirs),
                 eval_section(inputs.runs_dirs, inputs.evals)]
    return sections


def build_report(inputs: ReportInputs, output: Path, extra: Sequence[Section] = (),
                 now: float | None = None) -> list[Section]:
    """Gather every section, render the page and write it atomically to ``output``;
    ``extra`` sections (dataset cards) go last. Returns the sections."""
    check_inputs(inputs)
    sections = [*gather(inputs), *extra]
    source = f"database {inputs.db}" if inputs.db else "no database"
    subtitle = f"Generated {when(now if now is not None else time.time())} from {source}."
    write_atomic(output, render_page(inputs.title, subtitle, sections))
    return sections
