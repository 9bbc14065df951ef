"""The human-labelling queue: what to label, read from pairs files and kept in the database.

AI judges are measured against people, so the project keeps a small human-labelling loop next
to its data. Pairs (or K responses to rank) go on a queue in the project database
(``label_items``), each to be shown to N annotators; hidden gold items with a known answer are
queued beside them. This module holds the records of that loop (``QueueItem``, ``Vote``,
``LabelSettings``), reads and validates pairs, labels and gold files into queue items, picks
which pairs are worth a person's time (at random, the judge's least certain, or where judges
disagree), and stores the items, the queue settings and the annotator instructions. Assignment,
votes and consensus are ``align.labeling.votes``; agreement statistics are
``align.labeling.agreement``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import random
import secrets
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from datagen import store
from datagen.endpoint.keys import canonical_json
from datagen.errors import UserInputError
from datagen.ids import pair_id
from datagen.jsonl import note_unique, read_objects
from datagen.responses.sample import is_prompt
from datagen.store.tables import LABEL_ITEMS, LABEL_SETTINGS

CHOICES = ("a", "b", "tie", "fail")
HUMAN = ("a", "b", "tie")
INSTRUCTIONS_FILE = Path(__file__).parent / "static" / "instructions.md"
Strategy = Literal["random", "uncertain", "disagree"]


class LabelSettings(BaseModel):
    """Queue-wide settings, kept in ``label_settings``."""

    gold_threshold: float = Field(default=0.7, ge=0, le=1,
                                  description="Flag annotators whose gold accuracy is below this")
    min_gold: int = Field(default=3, ge=1, description="Gold answers needed before flagging")
    gold_every: int = Field(default=4, ge=1, description="Ordinary items between gold items")


class QueueItem(BaseModel):
    """One thing to label: a prompt and two (or K) responses."""

    id: str
    pair_id: str
    prompt: str | list[dict[str, Any]]
    responses: list[str]
    gold: Literal["a", "b", "tie"] | None = None
    required: int = 3
    position: int = 0
    source: dict[str, Any] = Field(default_factory=dict)


class Vote(BaseModel):
    """One annotator's answer to one item (a choice for a pair, a ranking for K responses)."""

    item_id: str
    annotator: str
    choice: Literal["a", "b", "tie", "fail", "rank"]
    ranking: list[int] | None = None
    note: str = ""
    created_at: float = 0.0


# --- reading pairs for the queue ----------------------------------------------------------------


def _item_id(pair_id: str, gold: bool, key: str = "") -> str:
    """An opaque id, so nothing the page sees tells a gold item from an ordinary one: keyed
    with the queue's secret (``enqueue``), it cannot be recomputed from a pair id."""
    text = f"{'gold' if gold else 'item'}\n{pair_id}".encode()
    return hmac.new(key.encode(), text, hashlib.sha256).hexdigest()[:16]


def queue_item(obj: Any, where: str, gold: bool = False, required: int = 3) -> QueueItem:
    """Validate one pairs/labels/gold line; raise UserInputError("WHERE: what is wrong")."""
    if not isinstance(obj, dict):
        raise UserInputError(f"{where}: expected a JSON object")
    if not is_prompt(obj.get("prompt")):
        raise UserInputError(
            f"{where}: missing prompt (a non-empty string or a list of chat messages)")
    if "responses" in obj:
        responses = obj["responses"]
        if not (isinstance(responses, list) and len(responses) >= 2
                and all(isinstance(r, str) for r in responses)):
            raise UserInputError(f"{where}: responses must be a list of two or more strings")
    else:
        for field in ("response_a", "response_b"):
            if not isinstance(obj.get(field), str):
                raise UserInputError(f"{where}: missing {field} (a string)")
        responses = [obj["response_a"], obj["response_b"]]
    answer = None
    if gold:
        answer = obj.get("gold", obj.get("human"))
        if answer not in HUMAN or len(responses) != 2:
            raise UserInputError(
                f'{where}: a gold pair needs response_a, response_b and human "a", "b" or "tie"')
    name = obj.get("id")
    name = str(name) if name is not None else pair_id(obj["prompt"], responses)
    return QueueItem(id=_item_id(name, gold), pair_id=name, prompt=obj["prompt"],
                     responses=responses, gold=answer, required=required, source=obj)


def read_items(path: str | Path, gold: bool = False, required: int = 3) -> list[QueueItem]:
    """Read a pairs, labels or gold JSONL file into queue items."""
    path = Path(path)
    items: list[QueueItem] = []
    seen: dict[str, int] = {}
    for line_no, where, obj in read_objects(
        path, empty_message=f"{path}: empty file, expected one JSON pair per line"
    ):
        item = queue_item(obj, where, gold, required)
        # Keyed by pair id: item.id derives from it and the one gold flag of this file.
        note_unique(seen, item.pair_id, line_no, where, what="pair")
        items.append(item)
    return items


def _uncertainty(item: QueueItem) -> float:
    p_a = item.source.get("p_a")
    return abs(p_a - 0.5) if isinstance(p_a, int | float) else math.inf


def judges_disagree(row: dict[str, Any]) -> bool:
    """The judges of a labelled pair disagree: panel members prefer different responses, a
    judge's two orders pointed at the same position (``consistent`` false), or the verdicts of
    the row name different winners."""
    if row.get("consistent") is False:
        return True
    panel = {p.get("preferred") for p in row.get("panel") or [] if isinstance(p, dict)}
    if len(panel & set(HUMAN)) > 1:
        return True
    winners = {_verdict_winner(v) for v in row.get("verdicts") or [] if isinstance(v, dict)}
    return len(winners - {None}) > 1


def _verdict_winner(verdict: dict[str, Any]) -> str | None:
    first, said = verdict.get("first"), verdict.get("verdict")
    if first not in ("a", "b") or said not in ("first", "second"):
        return None
    return first if said == "first" else ("b" if first == "a" else "a")


def sample_items(items: list[QueueItem], n: int | None, strategy: Strategy,
                 seed: int = 0) -> list[QueueItem]:
    """Choose up to n items: at random, nearest p_a = 0.5 first, or judge disagreement first
    (then nearest 0.5). Ties keep the file order."""
    if strategy == "random":
        chosen = list(items)
        random.Random(seed).shuffle(chosen)
    elif strategy == "uncertain":
        chosen = sorted(items, key=_uncertainty)
    else:
        chosen = sorted(items, key=lambda it: (not judges_disagree(it.source), _uncertainty(it)))
    return chosen if n is None else chosen[:n]


# --- settings and instructions -------------------------------------------------------------------


def get_setting(db: Any, key: str, default: Any = None) -> Any:
    """A value from ``label_settings`` (JSON decoded), or the default."""
    rows = store.load_rows(db, LABEL_SETTINGS, key=key)
    return json.loads(rows[0]["value"]) if rows else default


def put_setting(db: Any, key: str, value: Any) -> None:
    """Store a value in ``label_settings``."""
    store.save_rows(db, LABEL_SETTINGS, [{"key": key, "value": json.dumps(value)}], pk="key",
                    replace=True)


def load_settings(db: Any) -> LabelSettings:
    """The queue settings (defaults where never set)."""
    return LabelSettings(**get_setting(db, "settings", {}))


def instructions(db: Any) -> str:
    """The annotator instructions: the team's edited text, else the shipped default."""
    text = get_setting(db, "instructions")
    return text if text is not None else INSTRUCTIONS_FILE.read_text(encoding="utf-8")


def queue_key(db: Any) -> str:
    """The queue's secret for item ids (made on first use, never shown)."""
    key = get_setting(db, "item_key")
    if key is None:
        key = secrets.token_hex(16)
        put_setting(db, "item_key", key)
    return key


def enqueue(db: Any, items: Iterable[QueueItem], settings: LabelSettings | None = None) -> int:
    """Add items to the queue (items already there are left as they are), giving each its
    keyed id; return how many were new."""
    items = list(items)
    key = queue_key(db)
    for item in items:
        item.id = _item_id(item.pair_id, item.gold is not None, key)
    start = store.count_rows(db, LABEL_ITEMS)
    rows = [_item_row(item, start + i) for i, item in enumerate(items)]
    if settings is not None:
        put_setting(db, "settings", settings.model_dump())
    return store.save_rows(db, LABEL_ITEMS, rows, pk="id")


def _item_row(item: QueueItem, position: int) -> dict[str, Any]:
    return {"id": item.id, "pair_id": item.pair_id, "prompt": canonical_json(item.prompt),
            "responses": canonical_json(item.responses), "gold": item.gold,
            "required": item.required, "position": position,
            "source": canonical_json(item.source), "created_at": time.time()}


def _item_from_row(row: dict[str, Any]) -> QueueItem:
    return QueueItem(id=row["id"], pair_id=row["pair_id"], prompt=json.loads(row["prompt"]),
                     responses=json.loads(row["responses"]), gold=row["gold"],
                     required=row["required"], position=row["position"],
                     source=json.loads(row["source"]))


def load_items(db: Any) -> list[QueueItem]:
    """Every queued item (gold ones too), in queue order."""
    rows = store.load_rows(db, LABEL_ITEMS, order_by="position, rowid")
    return [_item_from_row(row) for row in rows]
