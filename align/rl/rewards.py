"""Rewards computed while the policy trains: the verifier, an LLM judge, a reward model, length.

Each ``--reward KIND[:ARGS][=WEIGHT]`` option becomes one term: a plain function from replies
to numbers, wrapped in a ``RewardTerm`` that TRL's online trainers call with the batch
(``prompts``, ``completions``, ``completion_ids`` and the dataset's ``constraints`` column) and
that reports every value to the reward-hacking watch. TRL sums the terms with
``reward_weights``. The kinds:

- ``verify`` (share of the prompt's constraints satisfied) or ``verify:strict`` (1 only when all
  are); an empty or blank reply scores 0 whatever the constraints say;
- ``judge[:base-url=URL,model=NAME,api-key-env=VAR,rubric=FILE]``: the pointwise score judge
  (``judges.pointwise``, 1-10 read from the score tokens' log-probabilities) rescaled to [0, 1];
  direct RLAIF (Lee et al. 2023, arXiv 2309.00267). Every request goes through the ledger, so
  a rerun with the same seed samples the same replies and pays for none of them again; an
  unreadable score is NaN (left out of the sum), never a high reward;
- ``pairwise[:same options]`` (online DPO only): the pairwise judge on the two samples of a
  prompt, shown in both orders; the winner gets 1 and the loser 0. An inconsistent or
  unreadable pair gets NaN for both;
- ``rm:PATH``: a reward model from ``rlaif train rm``, on the chat-templated prompt + reply;
- ``length`` (``-tokens / max_tokens``) or ``length:N`` (``-|tokens - N| / N``), for ablations
  and for checking that the watch fires: ``length=-1`` pays for length.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.errors import UserInputError
from judges.constraints.verify import verify_response

KINDS = ("verify", "judge", "pairwise", "rm", "length")
JUDGE_KEYS = ("base-url", "model", "api-key-env", "rubric")


@dataclass(frozen=True)
class RewardSpec:
    """One parsed ``--reward`` option. Example: ``parse_reward("verify:strict=2")``."""

    kind: str
    args: str = ""
    weight: float = 1.0

    @property
    def name(self) -> str:
        """The term's name in logs and metrics (``verify``, ``verify_strict``, ``length``...)."""
        return "verify_strict" if (self.kind, self.args) == ("verify", "strict") else self.kind

    def options(self) -> dict[str, str]:
        """``key=value,...`` arguments of judge kinds, checked against ``JUDGE_KEYS``."""
        out: dict[str, str] = {}
        for item in filter(None, self.args.split(",")):
            key, sep, value = item.partition("=")
            if not sep or key not in JUDGE_KEYS or not value:
                raise ValueError(f"expected KEY=VALUE with KEY one of {', '.join(JUDGE_KEYS)}, "
                                 f"got {item!r}")
            out[key] = value
        return out


def parse_reward(text: str) -> RewardSpec:
    """Parse ``KIND[:ARGS][=WEIGHT]``; a trailing ``=NUMBER`` is the weight unless it belongs
    to a judge option (``judge:model=7`` names a model)."""
    for candidate in _readings(text):
        try:
            _check(candidate)
        except ValueError:
            continue
        return candidate
    spec = _readings(text)[-1]
    try:
        _check(spec)
    except ValueError as exc:
        raise UserInputError(f"--reward {text}: {exc}") from None
    return spec


def _readings(text: str) -> list[RewardSpec]:
    """The ways to read a reward option: with a trailing weight first, then without."""
    readings = []
    head, sep, tail = text.rpartition("=")
    if sep:
        try:
            weight = float(tail)
        except ValueError:
            pass
        else:
            kind, _, args = head.partition(":")
            readings.append(RewardSpec(kind.strip(), args.strip(), weight))
    kind, _, args = text.partition(":")
    readings.append(RewardSpec(kind.strip(), args.strip(), 1.0))
    return readings


def _check(spec: RewardSpec) -> None:
    if spec.kind not in KINDS:
        raise ValueError(f"unknown reward kind {spec.kind!r} (use {', '.join(KINDS)})")
    if not math.isfinite(spec.weight):
        raise ValueError("the weight must be a finite number")
    if spec.kind == "verify" and spec.args not in ("", "strict"):
        raise ValueError("verify takes no argument or 'strict'")
    if spec.kind == "rm" and not spec.args:
        raise ValueError("rm needs a path: rm:PATH")
    if spec.kind == "length" and spec.args:
        try:
            if int(spec.args) < 1:
                raise ValueError
        except ValueError:
            raise ValueError("length takes a target length in tokens (>= 1)") from None
    if spec.kind in ("judge", "pairwise"):
        spec.options()


# --- plain reward functions -------------------------------------------------------------------


def reply_text(completion: Any) -> str:
    """The text of a completion: a string, or the content of its chat messages."""
    if isinstance(completion, str):
        return completion
    return "".join(message.get("content") or "" for message in completion)


def verify_rewards(
    texts: Sequence[str], constraints: Sequence[str], strict: bool = False,
) -> tuple[list[float], list[list[tuple[str, bool]]]]:
    """Verifier reward per reply (share satisfied, or 0/1 when strict; blank -> 0) and, per
    reply, the (kind, passed) of each constraint."""
    rewards, checks = [], []
    for text, specs in zip(texts, constraints, strict=True):
        result = verify_response(specs, text)
        passed = [False] * len(result.passed) if not text.strip() else list(result.passed)
        checks.append(list(zip(result.kinds, passed, strict=True)))
        if not text.strip():
            rewards.append(0.0)
        elif strict:
            rewards.append(float(all(passed)))
        else:
            rewards.append(sum(passed) / len(passed) if passed else 1.0)
    return rewards, checks


def length_rewards(lengths: Sequence[int], max_tokens: int, target: int | None) -> list[float]:
    """``-tokens / max_tokens``, or with a target ``-|tokens - target| / target``."""
    if target is None:
        return [-n / max_tokens for n in lengths]
    return [-abs(n - target) / target for n in lengths]


def reply_length(ids: Sequence[int], eos_ids: set[int], pad_id: int | None) -> tuple[int, bool]:
    """(tokens up to and including the first end-of-sequence token, whether it was truncated:
    no end token at all). Padding after the end is not counted."""
    for index, token in enumerate(ids):
        if token in eos_ids:
            return index + 1, False
    return sum(1 for token in ids if token != pad_id), True


# --- the terms TRL calls ----------------------------------------------------------------------


@dataclass
class RewardTerm:
    """One reward as TRL calls it: ``term(prompts=..., completions=..., completion_ids=...,
    constraints=..., **ignored) -> list[float]``; values and lengths go to ``watch``."""

    spec: RewardSpec
    score: Callable[[list[Any], list[str], list[int], list[str]], list[float]]
    watch: Any
    __name__: str = field(init=False)

    def __post_init__(self) -> None:
        self.__name__ = self.spec.name

    def __call__(self, prompts: list[Any], completions: list[Any],
                 completion_ids: list[list[int]], constraints: list[str] | None = None,
                 **_: Any) -> list[float]:
        texts = [reply_text(c) for c in completions]
        lengths, truncated = self.watch.measure(completion_ids)
        values = self.score(prompts, texts, lengths, constraints or ["[]"] * len(texts))
        self.watch.record(self.spec.name, values, lengths, truncated)
        return [None if v is None or math.isnan(v) else v for v in values]


def verify_scorer(spec: RewardSpec, watch: Any) -> Callable[..., list[float]]:
    """The verify term's scoring function (records per-kind satisfaction in ``watch``)."""
    def score(prompts: list[Any], texts: list[str], lengths: list[int],
              constraints: list[str]) -> list[float]:
        rewards, checks = verify_rewards(texts, constraints, strict=spec.args == "strict")
        watch.record_checks(checks)
        return rewards
    return score


def length_scorer(spec: RewardSpec, max_tokens: int) -> Callable[..., list[float]]:
    """The length term's scoring function."""
    target = int(spec.args) if spec.args else None
    return lambda prompts, texts, lengths, constraints: length_rewards(lengths, max_tokens,
                                                                        target)


def rm_scorer(spec: RewardSpec) -> Callable[..., list[float]]:
    """The reward-model term's scoring function (the model is loaded once, here)."""
    from judges.reward_judge import load_reward_model, reward_text, score_texts

    if not (Path(spec.args) / "config.json").is_file():
        raise UserInputError(f"--reward rm:{spec.args}: not a model directory (no config.json)")
    model, tokenizer = load_reward_model(spec.args)

    def score(prompts: list[Any], texts: list[str], lengths: list[int],
              constraints: list[str]) -> list[float]:
        return score_texts(model, tokenizer, [reward_text(tokenizer, p, t)
                                              for p, t in zip(prompts, texts, strict=True)])
    return score
