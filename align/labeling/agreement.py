"""Agreement statistics of human labels: votes as pairwise choices, consensus and kappas.

Pure functions over votes, no database. A K-way ranking is expanded into its K(K-1)/2 pairs
(``expand_vote``). Consensus is a strict majority of the counted votes; when the top choices
are level there is none (``NO_CONSENSUS``, ``split``): two people disagreeing is not a human
"tie". Agreement between annotators is Fleiss' kappa (any
number of raters per item) and the mean pairwise Cohen's kappa; ``calibration_bins`` compares a
judge's soft label p_a with the human consensus. ``align.labeling.votes`` applies them to the queue.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable
from typing import Any

from align.labeling.queue import CHOICES, Vote
from judges.report import cohen_kappa


def expand_vote(vote: Vote, k: int) -> dict[tuple[int, int], str]:
    """A vote as pairwise choices {(i, j): a|b|tie|fail} over response indices i < j."""
    if k == 2:
        return {(0, 1): vote.choice}
    if vote.choice == "fail":
        return {pair: "fail" for pair in itertools.combinations(range(k), 2)}
    rank = {response: place for place, response in enumerate(vote.ranking or [])}
    return {(i, j): "a" if rank[i] < rank[j] else "b"
            for i, j in itertools.combinations(range(k), 2)}


NO_CONSENSUS = "no consensus"


def majority(choices: list[str]) -> tuple[str | None, bool]:
    """(consensus, split): the most frequent choice; level leaders make no consensus."""
    if not choices:
        return None, False
    counts = Counter(choices).most_common()
    leaders = [c for c, n in counts if n == counts[0][1]]
    if len(leaders) > 1:
        return NO_CONSENSUS, True
    return leaders[0], False


def fleiss_kappa(units: list[list[str]], categories: Iterable[str] = CHOICES) -> float | None:
    """Fleiss' kappa over units rated by two or more raters each (raters may vary per unit).

    P_i = (sum_j n_ij^2 - n_i) / (n_i (n_i - 1)); P = mean P_i; p_j = share of all ratings in
    category j; P_e = sum p_j^2; kappa = (P - P_e) / (1 - P_e). None when undefined."""
    units = [u for u in units if len(u) >= 2]
    if not units:
        return None
    categories = list(categories)
    agree = []
    totals = Counter()
    for ratings in units:
        counts = Counter(ratings)
        totals.update(counts)
        n = len(ratings)
        agree.append((sum(c * c for c in counts.values()) - n) / (n * (n - 1)))
    observed = sum(agree) / len(agree)
    all_ratings = sum(totals.values())
    chance = sum((totals[c] / all_ratings) ** 2 for c in set(categories) | set(totals))
    if chance >= 1.0:
        return None
    return (observed - chance) / (1.0 - chance)


def mean_pairwise_cohen(by_rater: dict[str, dict[str, str]]) -> tuple[float | None, int]:
    """Mean Cohen's kappa over pairs of raters on the units both rated; (mean, pairs used)."""
    kappas = []
    for first, second in itertools.combinations(sorted(by_rater), 2):
        shared = sorted(set(by_rater[first]) & set(by_rater[second]))
        if len(shared) < 2:
            continue
        kappa = cohen_kappa([by_rater[first][u] for u in shared],
                            [by_rater[second][u] for u in shared])
        if kappa is not None:
            kappas.append(kappa)
    return (sum(kappas) / len(kappas) if kappas else None), len(kappas)


def calibration_bins(points: list[tuple[float, bool]], bins: int = 5) -> list[dict[str, Any]]:
    """Share of human "a" among pairs whose judge p_a falls in each of ``bins`` equal bins."""
    out = []
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        inside = [won for p, won in points if low <= p < high or (b == bins - 1 and p == 1.0)]
        out.append({"low": low, "high": high, "n": len(inside),
                    "human_a": sum(inside) / len(inside) if inside else None})
    return out
