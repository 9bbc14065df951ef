"""Continuous batching on transformers: one thread decodes every admitted row together.

A small model on a few CPU cores spends most of a decode step reading its weights, so eight
rows cost little more than one. Requests are queued as ``Job``s (one row per prompt and sample);
a single worker thread owns torch and the key/value cache. Between decode steps it admits
waiting rows up to ``max_batch`` (prefilling them together; the prompt prefix they share is
computed once, or taken from a small cache of recent prefixes such as a judge's rubric or the
chat template's system turn), samples one token for every row with that row's own settings and
``torch.Generator``, retires rows that hit a stop, their length or the end-of-text token, and
runs one decode step for the rest. Rows that need at most one token (a judge's verdict, echo
scoring) are answered from their prefill and never join the batch. Slots are shared max-min
fairly between jobs: when a new job arrives at a full batch, rows of the jobs holding more
than their share are parked (their key/value cache set aside, nothing recomputed) and resumed
when slots free up, so a short request waits a step or two however large the request ahead of
it. Rows are right-aligned in the cache; padding columns are masked out and positions are given
explicitly, so a row's result does not depend on what else is in the batch. Log-probabilities
are taken from ``log_softmax`` of the raw logits (before temperature and top-p), so judges read
the model's true probabilities.

Supports plain decoder models with full attention and a linear output head (Llama, Qwen2,
GPT-2 style); sliding-window caches are not handled.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from datagen.serve.jobs import (
    EngineStats,
    Job,
    RowResult,
    Sampling,
    Scored,
    common_prefix_length,
    eos_ids,
    finish_row,
    stop_index,
)

MIN_SHARED_PREFIX = 4  # shorter common prefixes are not worth a separate forward pass
PREFIX_CACHE_ENTRIES = 8  # recent prompt prefixes whose key/value cache is kept for reuse
ECHO_CHUNK = 256  # prompt positions scored per output-head call when echoing


@dataclass(eq=False)
class Row:
    job: Job
    index: int  # the row's place in its job
    result: RowResult
    generator: torch.Generator
    position: int  # the position id of the next token to feed
    done: bool = False


@dataclass(eq=False)
class Parked:
    """Rows taken out of the batch with their cache (B, heads, T, dim), mask and next logits."""

    rows: list[Row]
    kv: list[tuple[torch.Tensor, torch.Tensor]]
    mask: torch.Tensor
    logits: torch.Tensor


@dataclass(eq=False)
class CachedPrefix:
    """A prompt prefix with its per-layer cache (1, heads, T, dim) and hidden states (T, H)."""

    tokens: list[int]
    kv: list[tuple[torch.Tensor, torch.Tensor]]
    hidden: torch.Tensor



class Batcher:
    """Queue of jobs decoded together by one worker thread. Call ``start()`` then ``submit()``."""

    backend = "transformers"

    def __init__(self, model: Any, tokenizer: Any, max_batch: int = 16) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.stats = EngineStats()
        self.eos_ids = set(eos_ids(model.generation_config, tokenizer))
        self.context_length = int(model.config.max_position_embeddings)
        self._inbox: queue.Queue[Job | None] = queue.Queue()
        self._fresh: list[tuple[Job, int]] = []  # rows not yet prefilled: (job, row index)
        self._parked: list[Parked] = []
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
        waiting = len(self._fresh) + sum(len(p.rows) for p in self._parked)
        return counters | {"queued_jobs": self._inbox.qsize(), "waiting_rows": waiting,
                           "active_rows": len(self._rows), "max_batch": self.max_batch,
                           "backend": self.backend}

    # --- worker loop and scheduling -------------------------------------------------------------

    def _run(self) -> None:
        with torch.inference_mode():
            while not self._closing:
                self._receive()
                try:
                    self._step(self._schedule())
                except Exception as exc:  # a fault fails the requests in flight, not the server
                    self._fail_all(exc)
        self._fail_all(RuntimeError("server is shutting down"))

    def _receive(self) -> None:
        """Move new jobs from the inbox to the waiting rows; block while there is no work."""
        idle = not (self._rows or self._fresh or self._parked)
        while True:
            try:
                job = self._inbox.get(block=idle)
            except queue.Empty:
                return
            if job is None:  # close() was called
                return
            self.stats.jobs += 1
            self._fresh += [(job, i) for i in range(len(job.prompts))]
            idle = False

    def _schedule(self) -> list[tuple[Job, int]]:
        """Share the slots max-min fairly between jobs: park rows above a job's share, resume
        parked rows and pick fresh rows (returned, to be prefilled) up to it."""
        self._drop_cancelled()
        # Rows that need at most one token (judges) are answered from their prefill alone and
        # never take a slot: they go in whatever the batch holds.
        instant = [(job, i) for job, i in self._fresh if job.sampling.max_new_tokens <= 1]
        self._fresh = [f for f in self._fresh if f[0].sampling.max_new_tokens > 1]
        share = fair_shares(_counts(self._jobs()), self.max_batch)
        seen: dict[int, int] = {}
        excess = []
        for i, row in enumerate(self._rows):
            seen[id(row.job)] = seen.get(id(row.job), 0) + 1
            if seen[id(row.job)] > share[id(row.job)]:
                excess.append(i)
        groups: dict[int, list[Row]] = {}
        for i in excess:
            groups.setdefault(id(self._rows[i].job), []).append(self._rows[i])
        for group in groups.values():  # one group per job, so a cancelled job drops only its own
            self._park([self._rows.index(row) for row in group])
        room = self.max_batch - len(self._rows)
        active = _counts([row.job for row in self._rows])
        for parked in list(self._parked):
            wanted = _counts([r.job for r in parked.rows])
            if room >= len(parked.rows) and all(
                    active.get(key, 0) + count <= share[key] for key, count in wanted.items()):
                self._parked.remove(parked)
                self._append(parked.rows, DynamicCache(parked.kv), parked.mask, parked.logits)
                room -= len(parked.rows)
                for key, count in wanted.items():
                    active[key] = active.get(key, 0) + count
        admitted: list[tuple[Job, int]] = instant
        for job, i in list(self._fresh):
            if room and active.get(id(job), 0) < share[id(job)]:
                self._fresh.remove((job, i))
                admitted.append((job, i))
                active[id(job)] = active.get(id(job), 0) + 1
                room -= 1
        return admitted

    def _jobs(self) -> list[Job]:
        """The job of every row, active, parked or fresh (one entry per row)."""
        return ([r.job for r in self._rows] + [r.job for p in self._parked for r in p.rows]
                + [job for job, _ in self._fresh])

    def _drop_cancelled(self) -> None:
        """Forget waiting rows whose client has gone (active ones end in ``_step``)."""
        for job, _ in [f for f in self._fresh if f[0].cancelled()]:
            self._fresh.remove((job, _))
            self.stats.cancelled_rows += 1
            job.row_done()
        for parked in [p for p in self._parked if p.rows[0].job.cancelled()]:
            self._parked.remove(parked)
            self.stats.cancelled_rows += len(parked.rows)
            for row in parked.rows:
                row.job.row_done()

    def _park(self, indices: list[int]) -> None:
        """Take rows out of the batch, keeping their cache, mask and next-token logits."""
        index = torch.tensor(indices)
        mask = self._mask[index]
        first = int(mask.any(0).nonzero()[0])
        kv = [(k[index, :, first:], v[index, :, first:]) for k, v, *_ in self._cache]
        self._parked.append(Parked([self._rows[i] for i in indices], kv, mask[:, first:],
                                   self._logits[index]))
        self.stats.parked_rows += len(indices)
        parked = set(indices)
        self._keep([i for i in range(len(self._rows)) if i not in parked])

    def _step(self, admitted: list[tuple[Job, int]]) -> None:
        if admitted:
            self._prefill(admitted)
        for row, logits in zip(self._rows, self._logits, strict=True):
            if row.job.cancelled():
                row.done = True
                self.stats.cancelled_rows += 1
            elif not row.done:
                self._advance(row, logits)
        self._retire()
        if self._rows:
            self._decode()

    def _fail_all(self, exc: BaseException) -> None:
        jobs = {id(job): job for job in self._jobs()}
        while True:
            try:
                job = self._inbox.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                jobs[id(job)] = job
        for job in jobs.values():
            job.on_done(None, exc)
        self._fresh, self._parked = [], []
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

    def _prefill(self, admitted: list[tuple[Job, int]]) -> None:
        """Prefill the admitted rows together and append them to the batch."""
        rows, prompts = [], []
        for job, i in admitted:
            result = job.results[i]
            generator = torch.Generator().manual_seed(job.seeds[i])
            rows.append(Row(job, i, result, generator, position=len(result.prompt)))
            prompts.append(result.prompt)
        self.stats.rows += len(rows)
        self.stats.prompt_tokens += sum(len(p) for p in prompts)
        shared = common_prefix_length(prompts)
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
        self._append_unfinished(rows, cache, mask, logits)

    def _append_unfinished(
        self, rows: list[Row], cache: DynamicCache, mask: torch.Tensor, logits: torch.Tensor
    ) -> None:
        """Finish rows that need no decode step (at most one new token) straight from their
        prefill logits, and add the others to the batch."""
        keep = []
        for i, row in enumerate(rows):
            if row.job.sampling.max_new_tokens > 1:
                keep.append(i)
            elif row.job.cancelled():
                self.stats.cancelled_rows += 1
                row.job.row_done()
            else:
                self._advance(row, logits[i])  # samples the one token, or ends at zero
                row.job.row_done()
        if len(keep) < len(rows) and keep:
            index = torch.tensor(keep)
            cache = DynamicCache([(k[index], v[index]) for k, v, *_ in cache])
            mask, logits = mask[index], logits[index]
        if keep:
            self._append([rows[i] for i in keep], cache, mask, logits)

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
        scored = None
        if sampling.top_logprobs is not None:
            logprobs = torch.log_softmax(logits, dim=-1)
            top = _top_k(logprobs[None], sampling.top_logprobs)[0]
            scored = Scored(token, float(logprobs[token]), top)
            result.scored.append(scored)
        if row.job.on_token is not None:
            row.job.on_token(row.index, token, scored)
        if sampling.stop and stop_index(self.tokenizer, result.tokens, sampling.stop) is not None:
            self._finish(row, "stop")
        elif len(result.tokens) >= sampling.max_new_tokens or row.position >= self.context_length:
            self._finish(row, "length")

    def _finish(self, row: Row, reason: str) -> None:
        finish_row(self.tokenizer, row.result, row.job.sampling, reason)
        row.done = True

    def _retire(self) -> None:
        """Deliver finished jobs and drop finished rows (and now-empty columns) from the batch."""
        for row in self._rows:
            if row.done:
                row.job.row_done()
        self._keep([i for i, row in enumerate(self._rows) if not row.done])

    def _keep(self, keep: list[int]) -> None:
        """Keep only these rows of the batch, trimming columns no kept row attends to."""
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


def fair_shares(demand: dict[int, int], capacity: int) -> dict[int, int]:
    """Max-min fair split of ``capacity`` slots between jobs wanting ``demand`` rows each.

    Jobs are served smallest demand first; each gets what it wants or an equal part of what is
    left, so a 1-row request always gets its slot next to a job asking for hundreds.
    """
    shares, left = {}, capacity
    order = sorted(demand, key=demand.get)
    for n, key in enumerate(order):
        shares[key] = min(demand[key], max(left // (len(order) - n), 1 if left else 0))
        left -= shares[key]
    return shares


def _counts(jobs: list[Job]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for job in jobs:
        counts[id(job)] = counts.get(id(job), 0) + 1
    return counts


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


def _left_pad(t: torch.Tensor, width: int) -> torch.Tensor:
    """Pad a (B, H, T, D) cache tensor with zeros on the left of T up to width."""
    missing = width - t.shape[2]
    if missing == 0:
        return t
    return torch.cat([t.new_zeros(t.shape[0], t.shape[1], missing, t.shape[3]), t], dim=2)


def _left_pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - mask.shape[1]
    return torch.cat([mask.new_zeros(mask.shape[0], missing), mask], dim=1) if missing else mask
