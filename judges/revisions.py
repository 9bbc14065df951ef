"""Check constitutional revisions with an AI judge: is the final revision better than the answer
it replaced? A model critiquing itself can make an answer worse (vaguer, preachier, or wrong),
and such a revision should not become a preference pair that says it is better. Each stored
sample that would become a pair is shown to the judges of ``judges.pairwise`` as a pair
(``response_a`` the final revision, ``response_b`` the initial answer), both orders by default,
and the label is read back as ``judge_agrees``: true when the judges prefer the revision, false
when they prefer the initial answer, null for a tie, a position-inconsistent pair or an error.
This lives in ``judges`` and not in the generator because ``judges`` builds on ``datagen`` and
never the reverse: ``datagen.constitutional.loop`` only stores the verdicts
(``record_judge_verdicts``) and filters on them (``preference_pairs(drop_judge_disagrees=True)``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from datagen.constitutional.loop import CaiSample
from datagen.store.tables import CAI_SAMPLES
from judges.pairs import PairRow


def revision_pairs(samples: Iterable[CaiSample]) -> list[PairRow]:
    """One pair per sample that would become a preference pair: (final revision, initial)."""
    return [
        PairRow(where=f"{CAI_SAMPLES}:{sample.id}", id=sample.id,
                prompt=[m.model_dump() for m in sample.prompt],
                response_a=sample.final, response_b=sample.initial, data={"id": sample.id})
        for sample in samples
        if sample.status == "ok" and sample.degenerate is None and sample.initial and sample.final
    ]


def judge_agrees(label: dict[str, Any]) -> bool | None:
    """Whether a label of a (revision, initial) pair prefers the revision; None when undecided."""
    return {"a": True, "b": False}.get(label["preferred"])


def revision_verdicts(rows: list[PairRow], labels: list[dict[str, Any]]) -> dict[str, bool | None]:
    """``judge_agrees`` by sample id, from the labels of ``revision_pairs`` rows (same order)."""
    return {row.id: judge_agrees(label) for row, label in zip(rows, labels, strict=True)}
