"""Human preference labels: who labels what, gold checks, flagged annotators and consensus.

Each queued item (``align.labeling.queue``) is shown to N annotators. Hidden gold items are mixed
in, one per ``gold_every`` ordinary items, and an annotator whose gold accuracy falls below a
threshold (after a few gold answers) is flagged: their votes stop counting towards consensus and
agreement (``align.labeling.agreement``). A complete consensus of "a", "b" or "tie" becomes the
pair's ``human`` label, in ``label_consensus`` and, when the pair came from the ``pairs`` table, on
that row too, so ``rlaif label`` and ``rlaif judge-report`` pick it up. ``LabelBoard`` keeps the
queue and votes in memory for fast assignment, and re-reads the items whenever another process
(``rlaif label-queue``) has added some, and the votes whenever another service process on the
same database has stored one (the vote count or the latest vote time differ from its own).
"""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from typing import Any

from pydantic import BaseModel

from align.labeling.agreement import (
    calibration_bins,
    expand_vote,
    fleiss_kappa,
    majority,
    mean_pairwise_cohen,
)
from align.labeling.queue import (
    HUMAN,
    LabelSettings,
    QueueItem,
    Vote,
    load_items,
    load_settings,
)
from datagen import store
from datagen.endpoint.keys import canonical_json
from datagen.store.tables import LABEL_CONSENSUS, LABEL_ITEMS, LABEL_VOTES, PAIRS
from judges.report import agreement

CONSENSUS_SHOWN = 500


class AnnotatorStats(BaseModel):
    """One annotator's counts and gold record."""

    name: str
    votes: int = 0
    gold_answered: int = 0
    gold_correct: int = 0
    flagged: bool = False

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_correct / self.gold_answered if self.gold_answered else None


class LabelBoard:
    """The queue and its votes, mirrored in memory; every write goes to the database first.

    Assignment is kept cheap under load: ordinary items sit in buckets by the number of
    counted votes they still need, so the next item for an annotator is found in the fullest
    bucket first without scanning the queue. Not thread-safe: the service calls it from its
    one database thread.
    """

    def __init__(self, db: Any) -> None:
        self.db = db
        self.items: dict[str, QueueItem] = {}
        self.order: list[QueueItem] = []
        self.votes: dict[str, dict[str, Vote]] = {}  # item id -> annotator -> vote
        self.by_annotator: dict[str, AnnotatorStats] = {}
        self.settings = LabelSettings()
        self._regular: list[QueueItem] = []
        self._gold: list[QueueItem] = []
        self._flagged: set[str] = set()
        self._needs: dict[str, int] = {}  # ordinary item id -> counted votes still needed
        self._buckets: dict[int, dict[str, None]] = {}  # votes still needed -> item ids
        self._vote_count = 0
        self._last_vote = None  # the newest created_at among the votes held in memory
        self._complete = 0
        self._item_count = -1
        self.sync()

    # loading

    def sync(self) -> None:
        """Re-read the items when another process has added some, the settings when they
        changed (`rlaif label-queue` may do either while the service runs), and the votes when
        another service process stored some."""
        count = store.count_rows(self.db, LABEL_ITEMS)
        settings = load_settings(self.db)
        if count == self._item_count:
            if self._votes_elsewhere():
                self.settings = settings
                self._load_votes()
            elif settings != self.settings:
                self.settings = settings
                self._recount()
            return
        self.settings = settings
        self.items = {item.id: item for item in load_items(self.db)}
        self.order = list(self.items.values())
        self._regular = [item for item in self.order if not item.gold]
        self._gold = [item for item in self.order if item.gold]
        self._item_count = count
        self._load_votes()

    def _votes_elsewhere(self) -> bool:
        """Whether the stored votes are not the ones held here (another process voted)."""
        return (store.count_rows(self.db, LABEL_VOTES) != self._vote_count
                or store.max_column(self.db, LABEL_VOTES, "created_at") != self._last_vote)

    def _load_votes(self) -> None:
        self.votes = {}
        self._last_vote = store.max_column(self.db, LABEL_VOTES, "created_at")
        for row in store.load_rows(self.db, LABEL_VOTES):
            ranking = json.loads(row["ranking"]) if row.get("ranking") else None
            vote = Vote(item_id=row["item_id"], annotator=row["annotator"], choice=row["choice"],
                        ranking=ranking, note=row.get("note") or "",
                        created_at=row["created_at"])
            self.votes.setdefault(vote.item_id, {})[vote.annotator] = vote
        self._recount()

    def _recount(self) -> None:
        """Annotator statistics, flags and the assignment buckets from all votes."""
        stats: dict[str, AnnotatorStats] = {}
        for item_id, votes in self.votes.items():
            item = self.items.get(item_id)
            for name, vote in votes.items():
                entry = stats.setdefault(name, AnnotatorStats(name=name))
                entry.votes += 1
                if item is not None and item.gold:
                    entry.gold_answered += 1
                    entry.gold_correct += vote.choice == item.gold
        for entry in stats.values():
            entry.flagged = self._is_flagged(entry)
        self.by_annotator = stats
        self._vote_count = sum(len(v) for v in self.votes.values())
        self._rebucket()

    def _rebucket(self) -> None:
        self._flagged = {name for name, entry in self.by_annotator.items() if entry.flagged}
        self._needs, self._buckets, self._complete = {}, {}, 0
        for item in self._regular:
            self._place(item.id, item.required - len(self.counted_votes(item.id)))

    def _place(self, item_id: str, needs: int) -> None:
        old = self._needs.get(item_id)
        if old is not None and old > 0:
            self._buckets[old].pop(item_id, None)
        self._complete += (needs <= 0) - (old is not None and old <= 0)
        self._needs[item_id] = needs
        if needs > 0:
            self._buckets.setdefault(needs, {})[item_id] = None

    def _is_flagged(self, entry: AnnotatorStats) -> bool:
        return (entry.gold_answered >= self.settings.min_gold
                and entry.gold_correct / entry.gold_answered < self.settings.gold_threshold)

    def flagged(self) -> set[str]:
        """Annotators whose gold accuracy is below the threshold."""
        return set(self._flagged)

    # assignment

    def counted_votes(self, item_id: str) -> list[Vote]:
        """The votes of unflagged annotators on an item."""
        return [v for name, v in self.votes.get(item_id, {}).items() if name not in self._flagged]

    def regular(self) -> list[QueueItem]:
        """The ordinary (not gold) items, in queue order."""
        return list(self._regular)

    def next_item(self, annotator: str) -> QueueItem | None:
        """The next item for an annotator: a gold item once per ``gold_every`` ordinary ones,
        otherwise the ordinary item that needs the fewest votes to complete (the one that has
        waited longest among equals)."""
        self.sync()
        found = None
        for needs in sorted(self._buckets):
            found = next((i for i in self._buckets[needs]
                          if annotator not in self.votes.get(i, ())), None)
            if found is not None:
                break
        if found is None:
            return None
        mine = self.by_annotator.get(annotator, AnnotatorStats(name=annotator))
        if mine.gold_answered * self.settings.gold_every <= mine.votes - mine.gold_answered:
            gold = next((g for g in self._gold if annotator not in self.votes.get(g.id, ())),
                        None)
            if gold is not None:
                return gold
        return self.items[found]

    def progress(self, annotator: str | None = None) -> dict[str, Any]:
        """Queue progress, and one annotator's own counts when named."""
        out: dict[str, Any] = {"items": len(self._regular), "complete": self._complete,
                               "votes": self._vote_count}
        if annotator is not None:
            entry = self.by_annotator.get(annotator, AnnotatorStats(name=annotator))
            out["mine"] = entry.votes
        return out

    # voting

    def record(self, vote: Vote) -> dict[str, Any]:
        """Store a vote (a second vote by the same annotator replaces the first), then refresh
        the consensus of what it touched. Raises KeyError for an unknown item and ValueError
        for a vote that does not fit the item."""
        self.sync()
        item = self.items[vote.item_id]
        _check_fits(vote, item)
        vote.created_at = time.time()
        row = {"id": f"{vote.item_id}\n{vote.annotator}", "item_id": vote.item_id,
               "annotator": vote.annotator, "choice": vote.choice,
               "ranking": canonical_json(vote.ranking) if vote.ranking is not None else None,
               "note": vote.note, "gold": item.gold is not None,
               "created_at": vote.created_at}
        store.save_rows(self.db, LABEL_VOTES, [row], pk="id", replace=True)
        self._last_vote = max(self._last_vote or 0.0, vote.created_at)
        votes = self.votes.setdefault(vote.item_id, {})
        old = votes.get(vote.annotator)
        votes[vote.annotator] = vote
        entry = self.by_annotator.setdefault(vote.annotator, AnnotatorStats(name=vote.annotator))
        if old is None:
            entry.votes += 1
            self._vote_count += 1
            entry.gold_answered += item.gold is not None
        if item.gold is not None:
            entry.gold_correct += (vote.choice == item.gold) - (
                old is not None and old.choice == item.gold)
        was_flagged, entry.flagged = entry.flagged, self._is_flagged(entry)
        touched = [item] if not item.gold else []
        if entry.flagged != was_flagged:
            self._rebucket()
            touched = [it for it in self._regular if vote.annotator in self.votes.get(it.id, {})]
        elif old is None and not entry.flagged and not item.gold:
            self._place(item.id, self._needs[item.id] - 1)
        self._save_consensus(touched)
        return self.progress(vote.annotator)

    # consensus

    def pair_consensus(self, item: QueueItem) -> list[dict[str, Any]]:
        """The consensus rows of an item: one per pair (K-way items give K(K-1)/2)."""
        k = len(item.responses)
        counted = self.counted_votes(item.id)
        expanded = [expand_vote(v, k) for v in counted]
        rows = []
        for i, j in itertools.combinations(range(k), 2):
            choices = [e[(i, j)] for e in expanded]
            consensus, split = majority(choices)
            complete = len(counted) >= item.required
            human = consensus if complete and consensus in HUMAN else None
            pair_id = item.pair_id if k == 2 else f"{item.pair_id}:{i}-{j}"
            top = Counter(choices).most_common(1)
            agree = top[0][1] / len(choices) if choices else None  # share on the top choice
            rows.append({
                "pair_id": pair_id, "item_id": item.id, "i": i, "j": j,
                "consensus": consensus, "split": split, "complete": complete,
                "agreement": agree,
                "human": human, "votes": canonical_json(dict(Counter(choices))),
                "annotators": canonical_json(sorted(v.annotator for v in counted)),
            })
        return rows

    def _save_consensus(self, items: list[QueueItem]) -> None:
        rows = [row for item in items for row in self.pair_consensus(item)]
        if not rows:
            return
        with store.transaction(self.db):
            store.save_rows(self.db, LABEL_CONSENSUS, rows, pk="pair_id", replace=True)
            self._mark_pairs(rows)

    def _mark_pairs(self, rows: list[dict[str, Any]]) -> None:
        """Copy complete consensus labels onto the ``pairs`` table rows they came from."""
        if not store.count_rows(self.db, PAIRS):
            return
        updates = []
        for row in rows:
            found = store.load_rows(self.db, PAIRS, id=row["pair_id"])
            if found and found[0].get("human") != row["human"]:
                updates.append(found[0] | {"human": row["human"]})
        if updates:
            store.save_rows(self.db, PAIRS, updates, pk="id", replace=True)

    def refresh(self) -> None:
        """Recompute and store the consensus of every ordinary item."""
        self.sync()
        self._save_consensus(self.regular())

    def export(self) -> list[dict[str, Any]]:
        """Every ordinary pair with its votes: the source fields, response_a/response_b,
        ``human`` (set when consensus is complete and not "fail" or "no consensus"), the
        counted votes per choice, who cast them and the share that agrees with the
        consensus."""
        out = []
        for item in self.regular():
            for row in self.pair_consensus(item):
                source = {k: v for k, v in item.source.items() if k not in ("responses", "human")}
                out.append(source | {
                    "id": row["pair_id"], "prompt": item.prompt,
                    "response_a": item.responses[row["i"]],
                    "response_b": item.responses[row["j"]],
                    "human": row["human"],
                    "human_consensus": row["consensus"], "human_split": row["split"],
                    "human_complete": row["complete"],
                    "human_votes": json.loads(row["votes"]),
                    "human_annotators": json.loads(row["annotators"]),
                    "human_agreement": row["agreement"],
                })
        return out

    # agreement

    def stats(self) -> dict[str, Any]:
        """Agreement between annotators and between the judge and the human consensus."""
        self.sync()
        units: list[list[str]] = []
        by_rater: dict[str, dict[str, str]] = {}
        judge, human, calibration = [], [], []
        for item in self.regular():
            k = len(item.responses)
            counted = self.counted_votes(item.id)
            for vote in counted:
                for (i, j), choice in expand_vote(vote, k).items():
                    by_rater.setdefault(vote.annotator, {})[f"{item.id}:{i}-{j}"] = choice
            expanded = [expand_vote(v, k) for v in counted]
            for i, j in itertools.combinations(range(k), 2):
                units.append([e[(i, j)] for e in expanded])
            if k == 2:
                consensus = self.pair_consensus(item)[0]
                preferred = item.source.get("preferred")
                if consensus["human"] in HUMAN and preferred in HUMAN:
                    judge.append(preferred)
                    human.append(consensus["human"])
                p_a = item.source.get("p_a")
                if consensus["human"] in ("a", "b") and isinstance(p_a, int | float):
                    calibration.append((float(p_a), consensus["human"] == "a"))
        kappa, rater_pairs = mean_pairwise_cohen(by_rater)
        consensus = [
            {k: row[k] for k in ("pair_id", "consensus", "split", "complete", "human", "votes")}
            for item in self.regular()[:CONSENSUS_SHOWN] for row in self.pair_consensus(item)]
        return {
            "progress": self.progress(),
            "fleiss_kappa": fleiss_kappa(units),
            "fleiss_units": sum(len(u) >= 2 for u in units),
            "mean_cohen_kappa": kappa,
            "cohen_rater_pairs": rater_pairs,
            "judge_vs_human": agreement(judge, human) if judge else None,
            "calibration": calibration_bins(calibration),
            "annotators": [
                {"name": e.name, "votes": e.votes, "gold_answered": e.gold_answered,
                 "gold_correct": e.gold_correct, "gold_accuracy": e.gold_accuracy,
                 "flagged": e.flagged}
                for e in sorted(self.by_annotator.values(), key=lambda e: e.name)],
            "settings": self.settings.model_dump(),
            "consensus": consensus,
        }


def _check_fits(vote: Vote, item: QueueItem) -> None:
    k = len(item.responses)
    if k == 2 and vote.choice == "rank":
        raise ValueError("this item is a pair: choose a, b, tie or fail")
    if k > 2 and vote.choice not in ("rank", "fail"):
        raise ValueError(f"this item has {k} responses: send a ranking (or fail)")
    if vote.choice == "rank" and sorted(vote.ranking or []) != list(range(k)):
        raise ValueError(f"ranking must list each response index 0..{k - 1} once")
