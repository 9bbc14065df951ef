"""What the HTTP side hands a decoding backend, and what comes back: jobs, rows and their text.

Both backends (``datagen.serve.batcher`` on transformers, ``datagen.serve.ctranslate`` on
CTranslate2) take the same ``Job``: the rows' prompt token ids and seeds, one ``Sampling``, a
callback for each new token (streaming) and one for the end. Keeping these records and the
stop-string rules in one place means a request gets the same text, finish reason and
log-probability cut from either backend; only the numerics differ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class Scored(NamedTuple):
    """One token with its log-probability and the most likely alternatives at its position."""

    token: int
    logprob: float | None
    top: list[tuple[int, float]]


@dataclass(frozen=True)
class Sampling:
    """Per-request decoding settings (shared by the request's rows)."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    top_logprobs: int | None = None  # None: no log-probs; k: the chosen token plus k alternatives
    echo_logprobs: bool = False  # also score the prompt tokens
    seeded: bool = False  # the request named a seed: its sampled rows must repeat exactly


@dataclass(eq=False)
class RowResult:
    """What one row produced."""

    prompt: list[int]
    tokens: list[int] = field(default_factory=list)
    scored: list[Scored] = field(default_factory=list)
    prompt_scored: list[Scored] = field(default_factory=list)
    text: str = ""
    finish_reason: str = "length"


TokenCallback = Callable[[int, int, "Scored | None"], None]
DoneCallback = Callable[[list[RowResult] | None, BaseException | None], None]


@dataclass(eq=False)
class Job:
    """A request: its rows' prompts and seeds, settings, and where to send the outcome.

    ``on_token(row, token, scored)`` is called for every generated token and ``on_done(results,
    error)`` once, both from a backend thread; ``cancelled()`` is polled between decode steps.
    """

    prompts: list[list[int]]
    seeds: list[int]
    sampling: Sampling
    on_done: DoneCallback
    cancelled: Callable[[], bool] = lambda: False
    on_token: TokenCallback | None = None
    results: list[RowResult] = field(default_factory=list)
    pending: int = 0

    def __post_init__(self) -> None:
        self.results = [RowResult(prompt=list(p)) for p in self.prompts]
        self.pending = len(self.prompts)

    def row_done(self) -> None:
        """Count one finished row; deliver the results after the last."""
        self.pending -= 1
        if self.pending == 0:
            self.on_done(self.results, None)


def eos_ids(generation_config: Any, tokenizer: Any) -> list[int]:
    """End-of-text ids: the model's generation config plus the tokenizer's eos."""
    configured = generation_config.eos_token_id if generation_config is not None else None
    ids = configured if isinstance(configured, list) else [configured]
    return [i for i in [*ids, tokenizer.eos_token_id] if i is not None]


def stop_index(tokenizer: Any, tokens: list[int], stop: tuple[str, ...]) -> int | None:
    """Where the first stop string starts in the decoded tokens, or None."""
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    found = [i for i in (text.find(s) for s in stop) if i >= 0]
    return min(found) if found else None


def finish_row(tokenizer: Any, result: RowResult, sampling: Sampling, reason: str) -> None:
    """Set the row's text and finish reason, cutting text and log-probs at a stop string."""
    result.text = tokenizer.decode(result.tokens, skip_special_tokens=True)
    cut = stop_index(tokenizer, result.tokens, sampling.stop) if sampling.stop else None
    if cut is not None:
        reason = "stop"
        result.text = result.text[:cut]
        result.scored = result.scored[:tokens_before(tokenizer, result.tokens, cut)]
    result.finish_reason = reason


def tokens_before(tokenizer: Any, tokens: list[int], cut: int) -> int:
    """How many leading tokens start before character ``cut`` of the decoded text."""
    kept = len(tokens)
    while kept and len(tokenizer.decode(tokens[:kept - 1], skip_special_tokens=True)) >= cut:
        kept -= 1
    return kept


def common_prefix_length(prompts: list[list[int]]) -> int:
    """Tokens all prompts share at the start, leaving every prompt at least one of its own."""
    shortest = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for i in range(shortest):
        if any(p[i] != first[i] for p in prompts):
            return i
    return max(shortest, 0)


@dataclass
class EngineStats:
    """Counters a backend exposes at /v1/stats; written by its decoding thread only. Both
    backends count the same things; ``parked_rows`` happen only on transformers (rows set aside
    with their cache) and ``private_generators`` only on CTranslate2 (seeded requests)."""

    jobs: int = 0
    rows: int = 0
    prefill_passes: int = 0
    decode_steps: int = 0
    max_rows_in_step: int = 0
    prompt_tokens: int = 0
    shared_prefix_tokens: int = 0
    cached_prefix_tokens: int = 0
    generated_tokens: int = 0
    cancelled_rows: int = 0
    parked_rows: int = 0
    private_generators: int = 0
    step_rows_histogram: dict[int, int] = field(default_factory=dict)

