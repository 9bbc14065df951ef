"""The project report (`rlaif report`): one self-contained HTML page over everything made so far.

A person deciding whether a dataset is good enough to train on needs to see it whole: how
many rows each stage kept and why others were dropped, how long and how varied the
instructions are, how novel Self-Instruct candidates were (ROUGE-L against the pool), how
evenly FLAN templates were used, how biased the judge was (position, length) and how sure
(soft labels), what training did (loss, reward, KL), how the result evaluates (win rate with
its interval) and what it all cost. This module gathers those figures from the project
database, training output folders, label files and eval JSON files, and renders them through
``align/templates/report.html`` with the SVG charts of ``align.report_plots``. A section
without data is left out with a one-line note. Every shown text is HTML-escaped (stored
model output may hold markup or script) and the page carries a Content-Security-Policy that
forbids script and remote loads, so it stays inert and self-contained. Dataset cards for
exported datasets live in ``align.report_card``.
"""

from __future__ import annotations

import html
import json
import math
import random
import re
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from string import Template
from typing import Any

from align import report_plots as plots
from datagen import store
from datagen.constitutional import TABLE as CAI_TABLE
from datagen.errors import UserInputError
from datagen.flan import TABLE as FLAN_TABLE
from datagen.jsonl import atomic_write
from datagen.self_instruct import INSTRUCTIONS as SI_INSTRUCTIONS
from judges.cli_constrained import TABLE as CONSTRAINED_TABLE
from judges.report import LABEL_FIELDS, PREFERRED, read_labels
from judges.report import build_report as judge_measures

TEMPLATE = Path(__file__).parent / "templates" / "report.html"
LEDGER, RUNS = "requests", "runs"
REASON_COLUMNS = ("reason", "drop_reason", "degenerate")
SAMPLES_PER_SOURCE = 5
MAX_TEXTS = 50_000  # instructions per source measured (a seeded sample beyond that)
TOP_VERBS = 15
METRICS_FILE = "metrics.jsonl"
EVAL_PATTERNS = ("eval*.json", "*winrate*.json", "*win_rate*.json", "*satisfaction*.json")
RATE_KEY = re.compile(r"(win_rate|satisfaction_rate|satisfaction|accuracy|_rate)$")
COUNT_KEYS = ("n", "count", "total", "pairs", "prompts", "num_examples")
X_KEYS = ("step", "update", "global_step")
CURVE_GROUPS = (
    ("loss", "Loss", re.compile(r"loss")),
    ("reward", "Reward, score and accuracy", re.compile(r"reward|score|margin|accurac")),
    ("kl", "KL divergence", re.compile(r"(^|[/_])kl($|[/_])")),
)

# Leading words that are not the task's verb ("Please write ...", "Now list ...").
LEAD_WORDS = frozenset({"please", "kindly", "now", "also", "then", "first", "next", "so", "ok",
                        "okay", "hey", "hi"})
# Words skipped when looking for the verb's object ("Write a short poem" -> poem).
FUNCTION_WORDS = frozenset(re.findall(r"\S+", """
a an the this that these those my your our their his her its me us you it them him i we they
some any each every all both few many several one two three four five no not of to for in on
at by with about from into onto over under between as than and or but if whether how what
why which who whom whose when where there here is are be was were do does did can could would
should will shall may might must short brief simple new following given next other same own
more most less least very quite just only also up down out off again further then once such
"""))


@dataclass(frozen=True)
class Section:
    """One part of the page: an id for links, a title, the HTML body (empty: left out, with
    ``note`` saying why)."""

    key: str
    title: str
    body: str = ""
    note: str = ""


@dataclass
class ReportInputs:
    """Everything a report reads. Example: ``ReportInputs(db=Path("rlaif.db"))``"""

    db: Path | None = None
    runs_dirs: list[Path] = field(default_factory=list)
    labels: list[Path] = field(default_factory=list)
    evals: list[Path] = field(default_factory=list)
    title: str = "rlaif report"


# --- HTML pieces ----------------------------------------------------------------------------


def esc(value: Any) -> str:
    """Text made safe for HTML content and attribute values."""
    return html.escape(str(value), quote=True)


def show(value: Any) -> str:
    """A value as short display text (numbers rounded, dicts as "k v, ...", None as "-")."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return plots.fmt(value) if math.isfinite(value) else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {show(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(show(v) for v in value) or "-"
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """An HTML table; every cell is escaped, numbers are right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{esc(show(v))}</td>' if isinstance(v, int | float)
            and not isinstance(v, bool) else f"<td>{esc(show(v))}</td>" for v in row)
        body.append(f"<tr>{cells}</tr>")
    return f'<table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def para(text: str, css: str = "") -> str:
    return f'<p class="{css}">{esc(text)}</p>' if css else f"<p>{esc(text)}</p>"


def heading(text: str) -> str:
    return f"<h3>{esc(text)}</h3>"


def figure(svg: str, alt: str) -> str:
    return f"<figure>{plots.img(svg, alt)}</figure>"


def rate(hits: float, total: int) -> float | None:
    return hits / total if total else None


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """The Wilson score interval (95% by default) of a proportion; None when n is 0."""
    if n <= 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


# --- reading the database ---------------------------------------------------------------------


def db_tables(db: Any) -> dict[str, list[str]]:
    """Every table of the database with its column names (SQLite's own tables left out)."""
    return {name: store.table_columns(db, name) for name in store.table_names(db)
            if not name.startswith(("sqlite_", "_"))}


def column_rows(db: Any, table_name: str, columns: Sequence[str]) -> Iterator[dict[str, Any]]:
    """Rows of a few columns only (missing columns read as None), streamed; the ledger's
    bodies and responses are never loaded."""
    return store.load_columns(db, table_name, columns)


def load_runs(db: Any) -> list[dict[str, Any]]:
    """The runs table, oldest first, with args and summary decoded."""
    runs = []
    for row in store.load_rows(db, RUNS, order_by="started_at"):
        for key in ("args", "summary"):
            row[key] = _json_or(row.get(key), {})
        runs.append(row)
    return runs


def _json_or(text: Any, default: Any) -> Any:
    if not isinstance(text, str):
        return text if text is not None else default
    try:
        return json.loads(text)
    except ValueError:
        return default


def run_models(run: dict[str, Any]) -> list[str]:
    """The model names a run's arguments mention (``model`` or ``models``)."""
    args = run.get("args") or {}
    found = [args.get("model")] + list(args.get("models") or [])
    return [str(m) for m in found if m]


def compact(summary: Any, limit: int = 240) -> str:
    """A run summary as one short line of its numbers and counts."""
    if not isinstance(summary, dict):
        return show(summary)
    parts = [f"{k} {show(v)}" if not isinstance(v, dict) else f"{k}: {show(v)}"
             for k, v in summary.items()
             if k != "run_id" and isinstance(v, int | float | dict | str) and v != {}]
    text = "; ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- sections: stages, runs, usage ----------------------------------------------------------------


def stages_section(db: Any, tables: dict[str, list[str]]) -> Section:
    """Rows per table with their status and drop-reason counts."""
    rows, bars = [], []
    for name, columns in sorted(tables.items()):
        if name in (LEDGER, RUNS):
            continue
        count = store.count_rows(db, name)
        statuses = _counts(db, name, "status") if "status" in columns else {}
        reasons: Counter = Counter()
        for column in REASON_COLUMNS:
            if column in columns:
                reasons.update(_counts(db, name, column))
        rows.append((name, count, statuses or None, dict(reasons.most_common()) or None))
        bars.append((name, count))
    if not rows:
        return Section("stages", "Stages", note="no generator tables in the database yet.")
    body = table(("table", "rows", "by status", "by reason"), rows)
    return Section("stages", "Stages", figure(plots.bar_chart(
        bars, title="Rows per table", xlabel="rows"), "Rows per table") + body)


def _counts(db: Any, table_name: str, column: str) -> dict[str, int]:
    counts = Counter(row[column] for row in column_rows(db, table_name, [column]))
    counts.pop(None, None)
    return {str(k): v for k, v in counts.most_common()}


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
    if LEDGER not in tables or not store.count_rows(db, LEDGER):
        return Section("usage", "Tokens and cost", note="the request ledger is empty.")
    per_model: dict[str, Counter] = defaultdict(Counter)
    columns = ("model", "status", "prompt_tokens", "completion_tokens", "cost_usd")
    for row in column_rows(db, LEDGER, columns):
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


def message_text(value: Any, role: str = "user", last: bool = False) -> str | None:
    """The text of a stored prompt: a string, or the first (last) ``role`` message of a chat
    stored as JSON text or a list."""
    value = _json_or(value, value) if isinstance(value, str) and value[:1] in "[{\"" else value
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = [m.get("content") for m in value if isinstance(m, dict) and m.get("role") == role]
        texts = [t for t in texts if isinstance(t, str)]
        if texts:
            return texts[-1] if last else texts[0]
    return None


def instruction_sources(db: Any, tables: dict[str, list[str]]) -> dict[str, list[str]]:
    """Distinct instruction texts per source table, in stored order."""
    wanted = {
        f"Self-Instruct ({SI_INSTRUCTIONS}, kept)": (
            SI_INSTRUCTIONS, ("instruction", "status"),
            lambda r: r["instruction"] if r["status"] in ("kept", None) else None),
        f"FLAN ({FLAN_TABLE})": (FLAN_TABLE, ("messages",),
                                 lambda r: message_text(r["messages"])),
        f"Constitutional AI ({CAI_TABLE})": (CAI_TABLE, ("prompt",),
                                             lambda r: message_text(r["prompt"], last=True)),
        f"Constrained prompts ({CONSTRAINED_TABLE})": (CONSTRAINED_TABLE, ("prompt",),
                                                       lambda r: message_text(r["prompt"])),
        "Response pairs (pairs)": ("pairs", ("prompt",),
                                   lambda r: message_text(r["prompt"], last=True)),
    }
    found = {}
    for label, (name, columns, text_of) in wanted.items():
        if name not in tables or not set(columns) & set(tables[name]):
            continue
        texts = dict.fromkeys(t for t in map(text_of, column_rows(db, name, columns))
                              if isinstance(t, str) and t.strip())
        if texts:
            found[label] = list(texts)
    return found


def verb_noun(text: str) -> tuple[str | None, str | None]:
    """A crude (verb, object noun) of an instruction: its first word (after "please"
    and the like) and the first following word that is not a function word."""
    words = re.findall(r"[a-z][a-z'-]*", text.lower())
    while words and words[0] in LEAD_WORDS:
        words = words[1:]
    if not words:
        return None, None
    noun = next((w for w in words[1:8] if w not in FUNCTION_WORDS and len(w) > 1), None)
    return words[0], noun


def text_stats(texts: list[str]) -> dict[str, Any]:
    """Length and verb/noun diversity figures of a list of instructions."""
    lengths = [len(t.split()) for t in texts]
    pairs = [verb_noun(t) for t in texts]
    verbs = Counter(v for v, _ in pairs if v)
    combos = Counter(f"{v} {n}" for v, n in pairs if v and n)
    return {
        "texts": len(texts), "lengths": lengths,
        "mean_words": statistics.fmean(lengths), "median_words": statistics.median(lengths),
        "max_words": max(lengths), "distinct_verbs": len(verbs),
        "distinct_verb_noun": len(combos),
        "verb_noun_per_text": len(combos) / len(texts), "verbs": verbs, "combos": combos,
    }


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
            f"<li>{esc(_clip(t))}</li>" for t in chosen) + "</ul>")
    return Section("instructions", "Instructions", "".join(body))


def _clip(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
            [(_clip(r["instruction"] or "", 300), r["rouge_l"], r["status"], r["reason"],
              _clip(texts.get(r["nearest"]) or r["nearest"] or "-", 300)) for r in closest]))


def flan_section(db: Any, tables: dict[str, list[str]]) -> Section:
    """Examples per task and template, and how evenly each task's templates were used."""
    if FLAN_TABLE not in tables or "template_id" not in tables[FLAN_TABLE]:
        return Section("flan", "FLAN templates", note="no FLAN examples stored.")
    per_template: Counter = Counter()
    shots: dict[str, Counter] = defaultdict(Counter)
    for row in column_rows(db, FLAN_TABLE, ("task", "template_id", "shots")):
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


def db_label_sources(db: Any, tables: dict[str, list[str]]) -> dict[str, list[dict[str, Any]]]:
    """Label rows from every table that stores judge labels (preferred + both responses)."""
    found = {}
    for name, columns in sorted(tables.items()):
        if not {"preferred", "response_a", "response_b"} <= set(columns):
            continue
        rows = []
        for row in store.load_rows(db, name):
            if row.get("preferred") not in PREFERRED:
                continue
            label = {f: row.get(f) for f in LABEL_FIELDS}
            label["verdicts"] = _json_or(label["verdicts"], [])
            if label["consistent"] is not None:
                label["consistent"] = bool(label["consistent"])
            rows.append(label)
        if rows:
            found[f"table {name}"] = rows
    return found


def judge_of(path: Path) -> dict[str, Any] | None:
    """The ``judge`` provenance object of a labels file's first line, if it has one."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                meta = _json_or(line, {}).get("judge")
                return meta if isinstance(meta, dict) else None
    return None


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


def find_files(dirs: Sequence[Path], patterns: Sequence[str]) -> list[Path]:
    """Files matching any pattern under the folders, skipping hidden (temporary) folders."""
    found = []
    for folder in dirs:
        for pattern in patterns:
            for path in sorted(folder.rglob(pattern)):
                relative = path.relative_to(folder).parts[:-1]
                if path.is_file() and not any(p.startswith(".") for p in relative):
                    found.append(path)
    return sorted(dict.fromkeys(found))


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects of a metrics.jsonl file and the number of unreadable lines (a run
    killed mid-write leaves a cut last line)."""
    rows, bad = [], 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.strip():
                obj = _json_or(line, None)
                if isinstance(obj, dict):
                    rows.append(obj)
                else:
                    bad += 1
    return rows, bad


def curves(rows: list[dict[str, Any]]) -> tuple[str, dict[str, dict[str, tuple[list, list]]]]:
    """(x key, {group: {metric: (xs, ys)}}) of a metrics log; the final summary entries
    (``train_*``) are left out."""
    x_key = next((k for k in X_KEYS if sum(k in r for r in rows) >= len(rows) / 2), None)
    groups: dict[str, dict[str, tuple[list, list]]] = defaultdict(dict)
    for index, row in enumerate(rows):
        x = row.get(x_key, index) if x_key else index
        if not isinstance(x, int | float):
            continue
        for key, value in row.items():
            if key in X_KEYS or key.startswith("train_") or isinstance(value, bool) \
                    or not isinstance(value, int | float):
                continue
            group = next((g for g, _, pattern in CURVE_GROUPS if pattern.search(key.lower())),
                         None)
            if group:
                xs, ys = groups[group].setdefault(key, ([], []))
                xs.append(float(x))
                ys.append(float(value))
    return x_key or "log line", groups


def training_section(runs_dirs: Sequence[Path]) -> Section:
    """Loss, reward and KL curves of every metrics.jsonl under the run folders."""
    files = find_files(runs_dirs, (METRICS_FILE,))
    if not files:
        note = "no --runs-dir given." if not runs_dirs else f"no {METRICS_FILE} found."
        return Section("training", "Training curves", note=note)
    body = []
    for path in files:
        rows, bad = read_metrics(path)
        name = _run_name(path, runs_dirs)
        body.append(heading(name))
        x_key, groups = curves(rows)
        if bad:
            body.append(para(f"{bad} unreadable line(s) skipped.", "note"))
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
    return Section("training", "Training curves", "".join(body))


def _run_name(path: Path, roots: Sequence[Path]) -> str:
    for root in roots:
        if path.is_relative_to(root):
            inner = path.parent.relative_to(root)
            return str(Path(root.name) / inner) if str(inner) != "." else root.name
    return str(path.parent)


def _file_name(path: Path, roots: Sequence[Path]) -> str:
    """A file's name, prefixed with its run folder when it lies under a --runs-dir."""
    inside = any(path.is_relative_to(root) for root in roots)
    return f"{_run_name(path, roots)}/{path.name}" if inside else path.name


def eval_results(path: Path, strict: bool) -> list[dict[str, Any]]:
    """Rates (win, satisfaction, accuracy) with their 95% intervals from one eval JSON file:
    an interval stored as ``<key>_ci``, ``ci`` or ``interval`` ([low, high] or {low, high}),
    else a Wilson interval from the count (``n``, ``count``, ...). ``strict``: a file given
    by name must hold at least one rate."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        if strict:
            raise UserInputError(f"{path}: cannot read eval result: {exc}") from None
        return []
    found = []
    if isinstance(data, dict):
        n = next((data[k] for k in COUNT_KEYS if isinstance(data.get(k), int)), None)
        for key, value in data.items():
            if RATE_KEY.search(key) and isinstance(value, int | float) and 0 <= value <= 1 \
                    and not isinstance(value, bool):
                low, high, source = _interval(data, key)
                if low is None and n:
                    low, high = wilson(value * n, n)
                    source = "Wilson, computed here"
                found.append({"file": path, "metric": key, "value": float(value), "n": n,
                              "low": low, "high": high, "interval": source})
    if strict and not found:
        raise UserInputError(f"{path}: no win_rate, satisfaction_rate, accuracy or *_rate "
                             "value between 0 and 1 at the top level")
    return found


def _interval(data: dict, key: str) -> tuple[float | None, float | None, str]:
    for name in (f"{key}_ci", f"{key}_interval", "ci", "interval", "confidence_interval"):
        value = data.get(name)
        if isinstance(value, dict):
            value = [value.get("low", value.get("lower")), value.get("high", value.get("upper"))]
        if isinstance(value, list | tuple) and len(value) == 2 and all(
                isinstance(v, int | float) for v in value):
            return float(value[0]), float(value[1]), f"stored ({name})"
    low, high = data.get(f"{key}_low", data.get("ci_low")), data.get(f"{key}_high",
                                                                   data.get("ci_high"))
    if isinstance(low, int | float) and isinstance(high, int | float):
        return float(low), float(high), "stored"
    return None, None, "-"


def eval_section(runs_dirs: Sequence[Path], eval_files: Sequence[Path]) -> Section:
    """Win / satisfaction rates (and reward-model accuracy) with their intervals."""
    results = [r for p in eval_files for r in eval_results(p, strict=True)]
    results += [r for p in find_files(runs_dirs, EVAL_PATTERNS) if p not in eval_files
                for r in eval_results(p, strict=False)]
    if not results:
        return Section("eval", "Evaluation", note="no eval result JSON found or given.")
    names = [_file_name(r["file"], runs_dirs) for r in results]
    items = [(f"{name}: {r['metric']}", r["value"], r["low"], r["high"])
             for name, r in zip(names, results, strict=True)]
    rows = [(name, r["metric"], r["value"], r["low"], r["high"], r["n"], r["interval"])
            for name, r in zip(names, results, strict=True)]
    return Section("eval", "Evaluation", figure(plots.interval_chart(
        items, title="Rates with 95% intervals"), "Evaluation rates") + table(
        ("file", "metric", "value", "low", "high", "n", "interval"), rows))


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


def render_page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The HTML page: a contents list, the notes of left-out sections, then the sections."""
    shown = [s for s in sections if s.body]
    toc = "".join(f'<li><a href="#{esc(s.key)}">{esc(s.title)}</a></li>' for s in shown)
    omitted = "".join(f"<li><b>{esc(s.title)}</b>: {esc(s.note)}</li>"
                      for s in sections if not s.body)
    body = "\n".join(f'<section id="{esc(s.key)}"><h2>{esc(s.title)}</h2>\n{s.body}\n</section>'
                     for s in shown)
    template = Template(TEMPLATE.read_text(encoding="utf-8"))
    return template.substitute(
        title=esc(title), subtitle=esc(subtitle), toc=toc,
        omitted=f'<aside class="omitted"><h2>Not in this report</h2><ul>{omitted}</ul></aside>'
        if omitted else "", sections=body)


def write_atomic(path: Path, text: str) -> None:
    """Write text through a temporary sibling renamed over ``path``."""
    with atomic_write(path) as out:
        out.write(text)


def check_inputs(inputs: ReportInputs) -> None:
    """Raise UserInputError for a missing database, folder or file before any work."""
    if inputs.db is not None and not inputs.db.is_file():
        raise UserInputError(f"{inputs.db}: no such database")
    for folder in inputs.runs_dirs:
        if not folder.is_dir():
            raise UserInputError(f"{folder}: no such directory (--runs-dir)")
    for option, paths in (("--labels", inputs.labels), ("--eval", inputs.evals)):
        for path in paths:
            if not path.is_file():
                raise UserInputError(f"{path}: no such file ({option})")


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
