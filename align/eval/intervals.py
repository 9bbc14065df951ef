"""The Wilson score interval, the one confidence interval of a proportion the project reports.

Win rates (``align.eval.winrate``), held-out constraint satisfaction (``align.eval.heldout``) and
the rates and judge-bias gauges of the report (``align.report.build``) all show a share of n trials
with its 95% interval; computing it in one place keeps those numbers comparable. Wilson's
interval stays inside 0..1 and behaves at small n and at rates near 0 or 1, where the normal
approximation does not.
"""

from __future__ import annotations

import math


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """The Wilson score interval (95% by default) of a proportion; None when n is 0."""
    if n <= 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
