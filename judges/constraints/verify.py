"""The verifier judge: preference labels from checking constraints, with no model call.

For a prompt carrying verifiable constraints (``judges.constraints.prompts``), the better of two
responses is the one that satisfies more of them. ``verify_response`` checks one response
and reports the share of constraints it satisfies; ``verify_pair`` compares two responses
and turns the difference of their shares into a preference and a soft label. Both are pure
functions of their arguments: no endpoint, no randomness, and no position effect (swapping
the responses mirrors the result exactly), so they give exact labels for training and a
ground truth against which LLM judges can be calibrated.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from judges.constraints.checkers import Doc, Spec
from judges.constraints.kinds import check, parse_constraints

DEFAULT_TEMPERATURE = 0.2

ConstraintsArg = str | Iterable[Spec | Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """How one response fares against a prompt's constraints.

    ``share`` is the fraction of constraints satisfied (1.0 when there are none);
    ``passed``, ``degrees`` and ``kinds`` follow the order of the constraints; a degree is
    in [0, 1] (1.0 when satisfied) or None for kinds without a notion of closeness.
    """

    share: float
    passed: tuple[bool, ...]
    degrees: tuple[float | None, ...]
    kinds: tuple[str, ...]


def verify_response(constraints: ConstraintsArg, text: str) -> VerifyResult:
    """Check one response against constraint specs (models, dicts or a JSON list)."""
    return _verify(parse_constraints(constraints), text)


def _verify(specs: list[Spec], text: str) -> VerifyResult:
    doc = Doc(text)
    checks = [check(spec, doc) for spec in specs]
    passed = tuple(check.satisfied for check in checks)
    share = sum(passed) / len(passed) if passed else 1.0
    return VerifyResult(
        share=share,
        passed=passed,
        degrees=tuple(check.degree for check in checks),
        kinds=tuple(spec.kind for spec in specs),
    )


def verify_pair(
    constraints: ConstraintsArg,
    response_a: str,
    response_b: str,
    temperature: float = DEFAULT_TEMPERATURE,
) -> dict[str, Any]:
    """Prefer the response that satisfies a larger share of the constraints.

    With d = share_a - share_b (in [-1, 1]), the soft label is a logistic of d at
    temperature T: ``p_a = 1 / (1 + exp(-d / T))``, computed as ``s`` for d >= 0 and
    ``1 - s`` for d < 0 with ``s = 1 / (1 + exp(-|d| / T))`` so that swapping the responses
    gives exactly ``1 - p_a``. With the default T = 0.2, one constraint of three more
    (d = 1/3) gives p_a = 0.84, two of three 0.97, all against none (d = 1) 0.993; T = 0
    gives hard labels 1.0 / 0.0. Equal shares (d = 0) give ``preferred = "tie"`` and
    p_a = 0.5. Returns ``{"preferred": "a" | "b" | "tie", "p_a", "share_a", "share_b",
    "verdicts": [{"kind", "a", "b"}, ...]}`` where a verdict records whether each
    response passed that constraint, in the order of ``constraints``.
    """
    if temperature < 0:
        raise ValueError("temperature must be >= 0")
    specs = parse_constraints(constraints)
    result_a = _verify(specs, response_a)
    result_b = _verify(specs, response_b)
    diff = result_a.share - result_b.share
    if diff == 0:
        preferred, p_a = "tie", 0.5
    else:
        magnitude = abs(diff)
        sure = 1.0 if temperature == 0 else 1.0 / (1.0 + math.exp(-magnitude / temperature))
        preferred, p_a = ("a", sure) if diff > 0 else ("b", 1.0 - sure)
    return {
        "preferred": preferred,
        "p_a": p_a,
        "share_a": result_a.share,
        "share_b": result_b.share,
        "verdicts": [
            {"kind": kind, "a": a, "b": b}
            for kind, a, b in zip(result_a.kinds, result_a.passed, result_b.passed, strict=True)
        ],
    }
