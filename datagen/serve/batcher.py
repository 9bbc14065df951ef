"""Dynamic batching for the embedded server: one thread decodes every queued request together.

A small model on a few CPU cores spends most of a decode step reading its weights, so eight
rows cost little more than one. Requests are queued as ``Job``s (one row per prompt and sample);
a single worker thread owns torch and the key/value cache. Each iteration it admits waiting
jobs up to ``max_batch`` rows (prefilling them together; the prompt prefix they share is
computed once, or taken from a small cache of recent prefixes such as a judge's rubric or the
chat template's system turn), samples one token for every row with that row's own settings and
``torch.Generator``, retires rows that hit a stop, their length or the end-of-text token, and
runs one decode step for the rest. Rows are right-aligned in the cache; padding columns are
masked out and positions are given explicitly, so a row's result does not depend on what else
is in the batch. Log-probabilities are taken from ``log_softmax`` of the raw logits (before
temperature and top-p), so judges read the model's true probabilities.

Supports plain decoder models with full attention and a linear output head (Llama, Qwen2,
GPT-2 style); sliding-window caches are not handled.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from transformers import DynamicCache

MIN_SHARED_PREFIX = 4  # shorter common prefixes are not worth a separate forward pass
PREFIX_CACHE_ENTRIES = 8  # recent prompt prefixes whose key/value cache is kept for reuse
ECHO_CHUNK = 256  # prompt positions scored per output-head call when echoing


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


@dataclass(eq=False)
class RowResult:
    """What one row produced."""

    prompt: list[int]
    tokens: list[int] = field(default_factory=list)
    scored: list[Scored] = field(default_factory=list)
    prompt_scored: list[Scored] = field(default_factory=list)
    text: str = ""
    finish_reason: str = "length"


@dataclass(eq=False)
class Job:
    """A request: its rows' prompts and seeds, settings, and where to send the outcome.

    ``on_done(results, error)`` is called once, from the worker thread.
    """

    prompts: list[list[int]]
    seeds: list[int]
    sampling: Sampling
    on_done: Callable[[list[RowResult] | None, BaseException | None], None]
    cancelled: Callable[[], bool] = lambda: False
    results: list[RowResult] = field(default_factory=list)
    pending: int = 0


@dataclass(eq=False)
class Row:
    job: Job
    result: RowResult
    generator: torch.Generator
    position: int  # the position id of the next token to feed
    done: bool = False


@dataclass(eq=False)
class CachedPrefix:
    """A prompt prefix with its per-layer cache (1, heads, T, dim) and hidden states (T, H)."""

    tokens: list[int]
    kv: list[tuple[torch.Tensor, torch.Tensor]]
    hidden: torch.Tensor


@dataclass
class BatchStats:
    """Counters exposed at /v1/stats; written by the worker thread only."""

    jobs: int = 0
    rows: int = 0
    prefill_passes: int = 0
    decode_steps: int = 0
    max_rows_in_step: int = 0
    prompt_tokens: int = 0
    shared_prefix_tokens: int = 0
    cached_prefix_tokens: int = 0
    generated_tokens: int = 0
    step_rows_histogram: dict[int, int] = field(default_factory=dict)


class Batcher:
    """Queue of jobs decoded together by one worker thread. Call ``start()`` then ``submit()``."""

    def __init__(self, model: Any, tokenizer: Any, max_batch: int = 16) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.stats = BatchStats()
        self.eos_ids = set(_eos_ids(model, tokenizer))
        self.context_length = int(model.config.max_position_embeddings)
        self._inbox: queue.Queue[Job | None] = queue.Queue()
        self._held: Job | None = None  # a job too large for the current batch
        self._prefixes: list[CachedPrefix] = []
        self._thread: threading.Thread | None = None
        self._closing = False
        self._rows: list[Row] = []
        self._cache = DynamicCache()
        self._mask = torch.zeros(0, 0, dtype=torch.bool)
        self._logits = torch.zeros(0, 0)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue a job; thread-safe."""
        job.results = [RowResult(prompt=list(p)) for p in job.prompts]
        job.pending = len(job.prompts)
        self._inbox.put(job)

    def close(self) -> None:
        """Stop the worker after the current step; unfinished jobs get an error."""
        self._closing = True
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(timeout=30)

    def snapshot(self) -> dict[str, Any]:
        """Counters and queue state; safe to call from another thread."""
        counters = dict(vars(self.stats))  # C-level copies: the worker may be updating them
        counters["step_rows_histogram"] = dict(self.stats.step_rows_histogram)
        return counters | {"queued_jobs": self._inbox.qsize() + (self._held is not None),
                           "active_rows": len(self._rows), "max_batch": self.max_batch}

    # --- worker loop --------------------------------------------------------------------------

    def _run(self) -> None:
        with torch.inference_mode():
            while not self._closing:
                admitted = self._take_jobs()
                try:
                    self._step(admitted)
                except Exception as exc:  # a fault fails the requests in flight, not the server
                    self._fail_all(admitted, exc)
        self._fail_all([], RuntimeError("server is shutting down"))

    def _take_jobs(self) -> list[Job]:
        """Waiting jobs that fit next to the active rows; blocks while nothing is running."""
        jobs: list[Job] = []
        rows = len(self._rows)
        while True:
            job = self._held
            self._held = None
            if job is None:
                try:
                    job = self._inbox.get(block=rows == 0 and not jobs)
                except queue.Empty:
                    return jobs
            if job is None:  # close() was called
                return jobs
            if job.cancelled():
                continue
            if rows and rows + len(job.prompts) > self.max_batch:
                self._held = job
                return jobs
            jobs.append(job)
            rows += len(job.prompts)

    def _step(self, admitted: list[Job]) -> None:
        if admitted:
            self._prefill(admitted)
        for row, logits in zip(self._rows, self._logits, strict=True):
            if row.job.cancelled():
                row.done = True
            elif not row.done:
                self._advance(row, logits)
        self._retire()
        if self._rows:
            self._decode()

    def _fail_all(self, admitted: list[Job], exc: BaseException) -> None:
        jobs = {id(r.job): r.job for r in self._rows} | {id(j): j for j in admitted}
        if self._held is not None:
            jobs[id(self._held)] = self._held
            self._held = None
        for job in jobs.values():
            job.on_done(None, exc)
        self._reset()

    def _reset(self) -> None:
        self._rows, self._cache = [], DynamicCache()
        self._mask = torch.zeros(0, 0, dtype=torch.bool)
        self._logits = torch.zeros(0, 0)

    # --- model passes -------------------------------------------------------------------------

    def _forward(
        self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: DynamicCache
    ) -> torch.Tensor:
        """Run the decoder over new tokens (B, q), growing the cache; returns (B, q, H)."""
        out = self.model.base_model(
            input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
            use_cache=True,
        )
        return out.last_hidden_state

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.get_output_embeddings()(hidden).float()

    def _prefill(self, jobs: list[Job]) -> None:
        """Prefill the admitted jobs' rows together and append them to the batch."""
        rows, prompts = [], []
        for job in jobs:
            self.stats.jobs += 1
            for result, seed in zip(job.results, job.seeds, strict=True):
                generator = torch.Generator().manual_seed(seed)
                rows.append(Row(job, result, generator, position=len(result.prompt)))
                prompts.append(result.prompt)
        self.stats.rows += len(rows)
        self.stats.prompt_tokens += sum(len(p) for p in prompts)
        shared = _common_prefix_length(prompts)
        shared = shared if shared >= MIN_SHARED_PREFIX else 0
        cache, prefix_hidden = DynamicCache(), None
        if shared:
            self.stats.shared_prefix_tokens += shared * (len(prompts) - 1)
            prefix_kv, prefix_hidden = self._prefix(prompts[0][:shared])
            cache = DynamicCache([(k.expand(len(rows), -1, -1, -1), v.expand(len(rows), -1, -1, -1))
                                  for k, v in prefix_kv])
        suffixes = [p[shared:] for p in prompts]
        width = max(len(s) for s in suffixes)
        ids = torch.full((len(rows), width), self._pad_id())
        mask = torch.zeros(len(rows), shared + width, dtype=torch.bool)
        positions = torch.zeros(len(rows), width, dtype=torch.long)
        mask[:, :shared] = True
        for i, suffix in enumerate(suffixes):
            ids[i, width - len(suffix):] = torch.tensor(suffix)
            mask[i, shared + width - len(suffix):] = True
            positions[i, width - len(suffix):] = torch.arange(shared, shared + len(suffix))
        hidden = self._forward(ids, mask, positions, cache)
        self.stats.prefill_passes += 1
        logits = self._head(hidden[:, -1])
        for i, row in enumerate(rows):
            if row.job.sampling.echo_logprobs:
                row.result.prompt_scored = self._score_prompt(
                    row, prefix_hidden, hidden[i, width - len(suffixes[i]):]
                )
        self._append(rows, cache, mask, logits)

    def _prefix(self, tokens: list[int]) -> tuple[list[tuple[torch.Tensor, torch.Tensor]],
                                                  torch.Tensor]:
        """Cache (1, heads, T, dim) per layer and hidden states (T, H) of a prompt prefix.

        The longest start of it already in the prefix cache is reused (a judge's rubric, a
        generator's instructions, the chat template's system turn); only the rest is run.
        """
        best, reused = None, 0
        for entry in self._prefixes:
            n = _shared_length(entry.tokens, tokens)
            if n > reused:
                best, reused = entry, n
        if best is not None:
            self._prefixes.remove(best)
            self._prefixes.append(best)  # most recently used last
            self.stats.cached_prefix_tokens += reused
        kv = [(k[:, :, :reused], v[:, :, :reused]) for k, v in best.kv] if best else []
        hidden = best.hidden[:reused] if best else torch.zeros(0, self.model.config.hidden_size)
        if reused == len(tokens):
            return kv, hidden
        cache = DynamicCache(kv) if kv else DynamicCache()
        ids = torch.tensor([tokens[reused:]])
        new_hidden = self._forward(ids, torch.ones(1, len(tokens), dtype=torch.bool),
                                   torch.arange(reused, len(tokens))[None], cache)
        entry = CachedPrefix(tokens, [(k, v) for k, v, *_ in cache],
                             torch.cat([hidden, new_hidden[0]]))
        self._prefixes = [*self._prefixes, entry][-PREFIX_CACHE_ENTRIES:]
        return entry.kv, entry.hidden

    def _score_prompt(
        self, row: Row, prefix_hidden: torch.Tensor | None, suffix_hidden: torch.Tensor
    ) -> list[Scored]:
        """Log-probs of each prompt token given the ones before it (the first has none)."""
        hidden = suffix_hidden if prefix_hidden is None else torch.cat(
            [prefix_hidden, suffix_hidden]
        )
        prompt = row.result.prompt
        k = row.job.sampling.top_logprobs or 0
        scored = [Scored(prompt[0], None, [])]
        for start in range(0, len(prompt) - 1, ECHO_CHUNK):
            stop = min(start + ECHO_CHUNK, len(prompt) - 1)
            logprobs = torch.log_softmax(self._head(hidden[start:stop]), dim=-1)  # (n, V)
            targets = torch.tensor(prompt[start + 1: stop + 1])
            chosen = logprobs.gather(1, targets[:, None])[:, 0].tolist()
            tops = _top_k(logprobs, k)
            scored += [Scored(t, lp, top) for t, lp, top in zip(targets.tolist(), chosen, tops,
                                                                   strict=True)]
        return scored

    def _append(
        self, rows: list[Row], cache: DynamicCache, mask: torch.Tensor, logits: torch.Tensor
    ) -> None:
        """Add prefilled rows to the batch, right-aligning both caches."""
        if not self._rows:
            self._rows, self._cache, self._mask, self._logits = rows, cache, mask, logits
            return
        width = max(self._mask.shape[1], mask.shape[1])
        self._cache = DynamicCache([
            (torch.cat([_left_pad(k0, width), _left_pad(k1, width)]),
             torch.cat([_left_pad(v0, width), _left_pad(v1, width)]))
            for (k0, v0, *_), (k1, v1, *_) in zip(self._cache, cache, strict=True)
        ])
        self._mask = torch.cat([_left_pad_mask(self._mask, width), _left_pad_mask(mask, width)])
        self._logits = torch.cat([self._logits, logits])
        self._rows = self._rows + rows

    def _decode(self) -> None:
        """Feed every row its newest token: one forward pass for the whole batch."""
        ids = torch.tensor([[row.result.tokens[-1]] for row in self._rows])
        positions = torch.tensor([[row.position] for row in self._rows])
        self._mask = torch.cat([self._mask, torch.ones(len(self._rows), 1, dtype=torch.bool)], 1)
        hidden = self._forward(ids, self._mask, positions, self._cache)
        self._logits = self._head(hidden[:, -1])
        for row in self._rows:
            row.position += 1
        n = len(self._rows)
        self.stats.decode_steps += 1
        self.stats.max_rows_in_step = max(self.stats.max_rows_in_step, n)
        self.stats.step_rows_histogram[n] = self.stats.step_rows_histogram.get(n, 0) + 1

    # --- sampling and stopping ----------------------------------------------------------------

    def _advance(self, row: Row, logits: torch.Tensor) -> None:
        """Pick the row's next token from its logits (V,), or finish the row."""
        sampling, result = row.job.sampling, row.result
        if len(result.tokens) >= sampling.max_new_tokens:
            self._finish(row, "length")
            return
        token = _sample(logits, sampling, row.generator)
        if token in self.eos_ids:
            self._finish(row, "stop")
            return
        result.tokens.append(token)
        self.stats.generated_tokens += 1
        if sampling.top_logprobs is not None:
            logprobs = torch.log_softmax(logits, dim=-1)
            top = _top_k(logprobs[None], sampling.top_logprobs)[0]
            result.scored.append(Scored(token, float(logprobs[token]), top))
        if sampling.stop and self._stop_index(result, sampling.stop) is not None:
            self._finish(row, "stop")
        elif len(result.tokens) >= sampling.max_new_tokens or row.position >= self.context_length:
            self._finish(row, "length")

    def _stop_index(self, result: RowResult, stop: tuple[str, ...]) -> int | None:
        text = self.tokenizer.decode(result.tokens, skip_special_tokens=True)
        found = [i for i in (text.find(s) for s in stop) if i >= 0]
        return min(found) if found else None

    def _finish(self, row: Row, reason: str) -> None:
        result, sampling = row.result, row.job.sampling
        result.text = self.tokenizer.decode(result.tokens, skip_special_tokens=True)
        cut = self._stop_index(result, sampling.stop) if sampling.stop else None
        if cut is not None:
            reason = "stop"
            result.text = result.text[:cut]
            result.scored = result.scored[:self._tokens_before(result.tokens, cut)]
        result.finish_reason = reason
        row.done = True

    def _tokens_before(self, tokens: list[int], cut: int) -> int:
        """How many leading tokens start before character ``cut`` of the decoded text."""
        kept = len(tokens)
        decode = self.tokenizer.decode
        while kept and len(decode(tokens[:kept - 1], skip_special_tokens=True)) >= cut:
            kept -= 1
        return kept

    def _retire(self) -> None:
        """Deliver finished jobs and drop finished rows (and now-empty columns) from the batch."""
        keep = [i for i, row in enumerate(self._rows) if not row.done]
        for row in self._rows:
            if row.done:
                row.job.pending -= 1
                if row.job.pending == 0:
                    row.job.on_done(row.job.results, None)
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._reset()
            return
        index = torch.tensor(keep)
        mask = self._mask[index]
        first = int(mask.any(0).nonzero()[0])
        self._mask = mask[:, first:]
        self._cache = DynamicCache([(k[index, :, first:], v[index, :, first:])
                                    for k, v, *_ in self._cache])
        self._logits = self._logits[index]
        self._rows = [self._rows[i] for i in keep]

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else next(iter(self.eos_ids))


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    configured = model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    return [i for i in [*ids, tokenizer.eos_token_id] if i is not None]


def _sample(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> int:
    """Greedy at temperature 0, else nucleus sampling with the row's own generator.

    Sampling is an exponential race, argmax(p / E) with E ~ Exp(1) drawn per token: it picks a
    token with probability p like inverse-CDF sampling, but a last-bit change in the logits
    (from a different batch shape) almost never changes the winner, so a seeded request gives
    the same text whatever it was batched with.
    """
    if sampling.temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        above = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass ranked above each token
        probs[order[above >= sampling.top_p]] = 0.0
    race = torch.empty_like(probs).exponential_(generator=generator)
    return int(torch.argmax(probs / race))


def _top_k(logprobs: torch.Tensor, k: int) -> list[list[tuple[int, float]]]:
    """The k best (token, logprob) pairs of each row of a (n, V) tensor."""
    if k <= 0:
        return [[] for _ in range(logprobs.shape[0])]
    values, indices = torch.topk(logprobs, k, dim=-1)
    return [list(zip(i, v, strict=True)) for i, v in zip(indices.tolist(), values.tolist(),
                                                           strict=True)]


def _shared_length(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _common_prefix_length(prompts: list[list[int]]) -> int:
    """Tokens all prompts share at the start, leaving every prompt at least one of its own."""
    shortest = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for i in range(shortest):
        if any(p[i] != first[i] for p in prompts):
            return i
    return max(shortest, 0)


def _left_pad(t: torch.Tensor, width: int) -> torch.Tensor:
    """Pad a (B, H, T, D) cache tensor with zeros on the left of T up to width."""
    missing = width - t.shape[2]
    if missing == 0:
        return t
    return torch.cat([t.new_zeros(t.shape[0], t.shape[1], missing, t.shape[3]), t], dim=2)


def _left_pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - mask.shape[1]
    return torch.cat([mask.new_zeros(mask.shape[0], missing), mask], dim=1) if missing else mask
