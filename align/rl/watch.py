"""The reward-hacking watch: per-step signs that the policy is gaming its reward, and alarms.

Much of what RLHF gains can be bought with length alone (Singhal et al. 2023, "A Long Way to
Go", arXiv 2310.03716), and a policy that drifts far from its reference is usually exploiting
the reward rather than improving. So every step of every online trainer (and of our PPO)
records, in ``metrics.jsonl``: the mean and spread of each reward term and of the weighted
total, the KL to the reference (per token), the mean reply length in tokens and the share of
replies cut off at the length limit, the within-batch Pearson correlation of total reward with
reply length, the policy's entropy, and for the verifier the satisfaction rate per constraint
kind. An alarm is raised when the correlation or the KL passes its threshold; the caller
decides whether an alarm stops the run.

``RewardWatch`` gathers what the reward terms see between two log lines; ``step_row`` turns it
and the trainer's own log entry into one metrics row. Both are plain Python, shared by the TRL
callback (``align.rl.callbacks``) and the PPO loop.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from align.rl.rewards import reply_length

# Where each trainer logs KL and entropy; online DPO's KL is summed over the reply.
KL_KEYS = ("kl", "objective/kl")
ENTROPY_KEYS = ("entropy", "objective/entropy")


@dataclass(frozen=True)
class Thresholds:
    """When to raise an alarm. Example: ``Thresholds(corr=0.5, kl=1.0)``.

    ``corr``: reward-length correlation above this (batches of at least ``min_samples``
    replies whose lengths and rewards both vary); ``kl``: KL to the reference per token
    (nats) above this.
    """

    corr: float = 0.6
    kl: float = 1.0
    min_samples: int = 4


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson correlation, or None when either side is constant or there are < 2 pairs."""
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True)
             if not (math.isnan(x) or math.isnan(y))]
    if len(pairs) < 2:
        return None
    mx = statistics.fmean(x for x, _ in pairs)
    my = statistics.fmean(y for _, y in pairs)
    sxy = sum((x - mx) * (y - my) for x, y in pairs)
    sxx = sum((x - mx) ** 2 for x, _ in pairs)
    syy = sum((y - my) ** 2 for _, y in pairs)
    if sxx <= 0 or syy <= 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """(mean, population std) of the non-NaN values; (None, None) when there are none."""
    clean = [v for v in values if not math.isnan(v)]
    if not clean:
        return None, None
    return statistics.fmean(clean), statistics.pstdev(clean)


@dataclass
class RewardWatch:
    """What the reward terms saw since the last metrics row.

    ``weights`` maps term names to their weights, in the order the trainer calls them; the
    first term also records the lengths (every term sees the same replies).
    """

    weights: dict[str, float]
    eos_ids: set[int]
    pad_id: int | None
    terms: dict[str, list[float]] = field(default_factory=dict)
    lengths: list[int] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)
    checks: dict[str, list[int]] = field(default_factory=dict)

    def measure(self, completion_ids: Sequence[Sequence[int]]) -> tuple[list[int], list[bool]]:
        """(reply lengths in tokens, whether each hit the length limit) of a batch."""
        pairs = [reply_length(ids, self.eos_ids, self.pad_id) for ids in completion_ids]
        return [n for n, _ in pairs], [cut for _, cut in pairs]

    def record(self, name: str, values: Sequence[float | None], lengths: Sequence[int],
               truncated: Sequence[bool]) -> None:
        """Add one batch of a term's values (None = no reward) and, for the first term, the
        replies' lengths and truncation."""
        self.terms.setdefault(name, []).extend(math.nan if v is None else float(v)
                                               for v in values)
        if name == next(iter(self.weights)):
            self.lengths.extend(lengths)
            self.truncated.extend(truncated)

    def record_checks(self, checks: Sequence[Sequence[tuple[str, bool]]]) -> None:
        """Add the verifier's (kind, passed) results of one batch."""
        for reply in checks:
            for kind, passed in reply:
                counts = self.checks.setdefault(kind, [0, 0])
                counts[0] += int(passed)
                counts[1] += 1

    def drain(self) -> dict[str, Any]:
        """Statistics of everything recorded since the last call (then forget it)."""
        row: dict[str, Any] = {}
        if not self.lengths:
            return row
        total = [0.0] * len(self.lengths)
        for name, weight in self.weights.items():
            values = self.terms.get(name, [])
            row[f"reward/{name}/mean"], row[f"reward/{name}/std"] = mean_std(values)
            for i, value in enumerate(values[:len(total)]):
                total[i] += 0.0 if math.isnan(value) else weight * value
        row["reward/mean"], row["reward/std"] = mean_std(total)
        row["length/mean"] = statistics.fmean(self.lengths)
        row["truncated/share"] = statistics.fmean(map(float, self.truncated))
        row["reward_length_corr"] = pearson(total, [float(n) for n in self.lengths])
        row["samples"] = len(self.lengths)
        for kind, (passed, seen) in sorted(self.checks.items()):
            row[f"verify/{kind}"] = passed / seen
        self.terms, self.lengths, self.truncated, self.checks = {}, [], [], {}
        return row


def step_row(step: int, logs: dict[str, Any], watched: dict[str, Any]) -> dict[str, Any]:
    """One metrics row: the trainer's log entry, the watch's statistics, and canonical ``kl``
    (per token) and ``entropy``."""
    row: dict[str, Any] = {"step": step, **logs, **watched}
    kl = next((logs[k] for k in KL_KEYS if k in logs), None)
    entropy = next((logs[k] for k in ENTROPY_KEYS if k in logs), None)
    if "objective/kl" in logs and watched.get("length/mean"):
        # online DPO sums KL and entropy over the reply; the watch reports them per token
        kl = None if kl is None else kl / watched["length/mean"]
        entropy = None if entropy is None else entropy / watched["length/mean"]
    row["kl"], row["entropy"] = kl, entropy
    return row


def alarms(row: dict[str, Any], thresholds: Thresholds, kl_key: str = "kl") -> list[str]:
    """The alarms a metrics row raises (empty when none); ``kl_key`` names its per-token KL."""
    found = []
    corr = row.get("reward_length_corr")
    if (corr is not None and corr > thresholds.corr
            and row.get("samples", 0) >= thresholds.min_samples):
        found.append(f"reward-length correlation {corr:.2f} > {thresholds.corr}")
    kl = row.get(kl_key)
    if kl is not None and kl > thresholds.kl:
        found.append(f"KL to reference {kl:.3f} > {thresholds.kl} per token")
    return found
