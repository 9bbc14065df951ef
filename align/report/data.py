"""What the project report reads: the database, runs, label files, metrics logs and eval JSON.

The report (``align.report.build``) should only decide what to show, so everything it needs from
disk is read here, in the forms the sections use: the tables of the project database with their
columns (streamed a few columns at a time, so the request ledger's bodies are never loaded),
the ``runs`` table with arguments and summaries decoded, instruction texts per source with
their length and verb-noun diversity figures, judge labels from the database or ``--labels``
files, loss/reward/KL curves from ``metrics.jsonl`` logs (a run killed mid-write leaves a cut
last line, which is counted, not fatal) and rates with their intervals from eval JSON files
(and the per-instruction table of an IFEval result). ``check_inputs`` rejects a missing input
before any work. Dataset cards (``align.report.card``) read runs and tables through the same
functions.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from align.eval.intervals import wilson
from datagen import store
from datagen.errors import UserInputError
from datagen.store.tables import (
    CAI_SAMPLES,
    CONSTRAINED_PROMPTS,
    FLAN_EXAMPLES,
    PAIRS,
    PIPELINE_STAGES,
    REQUESTS,
    RUNS,
    SI_INSTRUCTIONS,
)
from judges.report import LABEL_FIELDS, PREFERRED

EVAL_PATTERNS = ("eval*.json", "*winrate*.json", "*win_rate*.json", "*satisfaction*.json",
                 "*ifeval*.json")
RATE_KEY = re.compile(r"(win_rate|satisfaction_rate|satisfaction|accuracy|_rate|_acc)$")
COUNT_KEYS = ("n", "count", "total", "pairs", "prompts", "num_examples", "n_prompts")
X_KEYS = ("step", "update", "global_step")
CURVE_GROUPS = (
    ("loss", "Loss", re.compile(r"loss")),
    # the reward-hacking watch of online RL and PPO (align/rl/watch.py)
    ("watch", "Reward-hacking watch: length, truncation, reward-length correlation, entropy",
     re.compile(r"^(length/|truncated/|reward_length_corr$|entropy$)")),
    ("verify", "Constraint satisfaction per kind", re.compile(r"^verify/")),
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



@dataclass
class ReportInputs:
    """Everything a report reads. Example: ``ReportInputs(db=Path("rlaif.db"))``"""

    db: Path | None = None
    runs_dirs: list[Path] = field(default_factory=list)
    labels: list[Path] = field(default_factory=list)
    evals: list[Path] = field(default_factory=list)
    title: str = "rlaif report"


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



def recorded_outputs(db: Any) -> tuple[list[Path], list[Path]]:
    """(label files, training folders) the database knows of and that are still on disk: the
    outputs of `rlaif label` runs and of finished pipeline stages (label, train *)."""
    labels: list[Path] = []
    trained: list[Path] = []
    tables = store.table_names(db)
    for run in store.load_rows(db, RUNS, kind="label") if RUNS in tables else []:
        args = json.loads(run["args"]) if isinstance(run["args"], str) else run["args"]
        labels.append(Path(args["output"]))
    for row in store.load_rows(db, PIPELINE_STAGES) if PIPELINE_STAGES in tables else []:
        argv = json.loads(row["argv"]) if isinstance(row["argv"], str) else row["argv"]
        out = next((argv[i + 1] for i, word in enumerate(argv[:-1])
                    if word in ("-o", "--output")), None)
        if row["status"] != "done" or out is None:
            continue
        if row["stage"] == "label":
            labels.append(Path(out))
        elif row["stage"].startswith("train "):
            trained.append(Path(out))
    return _present(labels, Path.is_file), _present(trained, Path.is_dir)


def _present(paths: list[Path], exists: Any) -> list[Path]:
    return list(dict.fromkeys(p for p in paths if exists(p)))


# --- the database -------------------------------------------------------------------------------


def db_tables(db: Any) -> dict[str, list[str]]:
    """Every table of the database that holds rows, with its column names (the database's own
    bookkeeping tables left out; the ledger and the runs are listed even when empty)."""
    return {name: store.table_columns(db, name) for name in store.table_names(db)
            if not name.startswith(("sqlite_", "_"))
            and (name in (REQUESTS, RUNS) or store.count_rows(db, name))}


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


def value_counts(db: Any, table_name: str, column: str) -> dict[str, int]:
    """How often each value of one column occurs, most common first (None left out)."""
    counts = Counter(row[column] for row in column_rows(db, table_name, [column]))
    counts.pop(None, None)
    return {str(k): v for k, v in counts.most_common()}


def run_models(run: dict[str, Any]) -> list[str]:
    """The model names a run's arguments mention (``model`` or ``models``)."""
    args = run.get("args") or {}
    found = [args.get("model")] + list(args.get("models") or [])
    return [str(m) for m in found if m]



# --- instructions -------------------------------------------------------------------------------


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
        f"FLAN ({FLAN_EXAMPLES})": (FLAN_EXAMPLES, ("messages",),
                                 lambda r: message_text(r["messages"])),
        f"Constitutional AI ({CAI_SAMPLES})": (CAI_SAMPLES, ("prompt",),
                                             lambda r: message_text(r["prompt"], last=True)),
        f"Constrained prompts ({CONSTRAINED_PROMPTS})": (CONSTRAINED_PROMPTS, ("prompt",),
                                                       lambda r: message_text(r["prompt"])),
        f"Response pairs ({PAIRS})": (PAIRS, ("prompt",),
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



# --- judge labels -------------------------------------------------------------------------------


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



# --- training metrics and evaluations -------------------------------------------------------------


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


def run_name(path: Path, roots: Sequence[Path]) -> str:
    """The run a file belongs to: its folder, named from the --runs-dir it lies under."""
    for root in roots:
        if path.is_relative_to(root):
            inner = path.parent.relative_to(root)
            return str(Path(root.name) / inner) if str(inner) != "." else root.name
    return str(path.parent)


def file_name(path: Path, roots: Sequence[Path]) -> str:
    """A file's name, prefixed with its run folder when it lies under a --runs-dir."""
    inside = any(path.is_relative_to(root) for root in roots)
    return f"{run_name(path, roots)}/{path.name}" if inside else path.name


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


def per_instruction_table(path: Path) -> dict[str, dict[str, Any]] | None:
    """The per-instruction accuracy of an `rlaif eval ifeval --json` result (id -> n, strict,
    loose), or None when the file holds none."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    table = data.get("per_instruction") if isinstance(data, dict) else None
    if not isinstance(table, dict) or not all(
            isinstance(row, dict) and {"n", "strict", "loose"} <= set(row) for row in
            table.values()):
        return None
    return table


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
