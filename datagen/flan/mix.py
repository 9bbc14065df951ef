"""How FLAN-style examples are arranged: which template, which exemplars, which task next.

Three seeded, streaming decisions, each kept to bounded memory:
- templates are assigned round-robin, as in the Flan Collection: every block of K consecutive
  examples of a task uses each of its K templates once (in a seeded order), so per-template
  counts differ by at most one;
- k-shot exemplars for a row are drawn from the other rows in a sliding window around it in the
  same dataset, never from the row itself;
- several inputs are mixed examples-proportionally with a per-task cap: task i contributes
  ``min(n_i, cap)`` examples and the next example comes from task i with probability
  proportional to what it has left, so every prefix of the mix follows the rates
  ``min(n_i, cap) / sum_j min(n_j, cap)`` (a uniformly random interleaving).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

from datagen.errors import UserInputError

T = TypeVar("T")

EXEMPLAR_WINDOW = 256


def mixture_rates(sizes: Sequence[int], cap: int | None) -> list[float]:
    """Examples-proportional rates with a per-task cap: ``min(n, cap) / sum(min(n, cap))``."""
    capped = [n if cap is None else min(n, cap) for n in sizes]
    total = sum(capped)
    return [c / total if total else 0.0 for c in capped]


def interleave(streams: Sequence[Iterator[T]], quotas: Sequence[int], rng: random.Random,
               ) -> Iterator[T]:
    """Mix streams, taking at most ``quotas[i]`` items from stream i; the next item comes from
    stream i with probability proportional to its remaining quota. A stream that runs dry early
    drops out and the others continue."""
    left = list(quotas)
    total = sum(left)
    while total > 0:
        pick = rng.randrange(total)
        task = 0
        while pick >= left[task]:
            pick -= left[task]
            task += 1
        try:
            item = next(streams[task])
        except StopIteration:
            total -= left[task]
            left[task] = 0
            continue
        left[task] -= 1
        total -= 1
        yield item


def template_order(count: int, rng: random.Random) -> Iterator[int]:
    """Template indices, round-robin: each block of ``count`` is a seeded permutation."""
    block = list(range(count))
    while True:
        rng.shuffle(block)
        yield from block


def with_exemplars(rows: Iterable[T], shots: int, rng: random.Random, where: str,
                   window: int = EXEMPLAR_WINDOW) -> Iterator[tuple[T, list[T]]]:
    """Pair each row with ``shots`` other rows drawn from a window of up to ``window`` rows
    around it (never the row itself). Too few rows is a UserInputError about ``where``."""
    window = max(window, 2 * shots + 1)
    half = window // 2
    buffer: deque[T] = deque()
    current = 0  # position in buffer of the next row to pair

    def pair() -> tuple[T, list[T]]:
        if len(buffer) <= shots:
            raise UserInputError(f"{where}: --shots {shots} needs at least {shots + 1} usable "
                                 f"rows, found {len(buffer)}")
        picks = rng.sample(range(len(buffer) - 1), shots)
        return buffer[current], [buffer[p + (p >= current)] for p in picks]

    for row in rows:
        buffer.append(row)
        if len(buffer) - 1 - current >= half:
            yield pair()
            current += 1
            if current > half:
                buffer.popleft()
                current -= 1
    while current < len(buffer):
        yield pair()
        current += 1
