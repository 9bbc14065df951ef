"""The CTranslate2 backend of ``rlaif serve``: int8 decoding in lanes, fair between requests.

CTranslate2 decodes an int8 copy of the model (``datagen.serve.convert``) about three times
faster than float32 transformers on two cores, but its Python API runs a batch from start to
end: a sequence cannot join a ``generate_batch`` that is already decoding. So scheduling works
in *lanes* (``inter_threads``, one CPU thread each by default): each lane thread takes the
waiting rows that share decoding settings (and roughly their prompt length), oldest request
first, up to ``max_batch``, and runs them as one batch; a finished row leaves the batch at
once (the per-step callback ends it), and the next waiting request starts in a free lane
between two decode steps of the others. A request occupies at most one lane, so a request of
16 x 512 tokens never holds back a 1-token request for longer than one step of the other lane.
Rows arriving within a few milliseconds of each other are gathered into one batch; the prompt
prefix a batch shares is computed once (``static_prompt``). Per-step callbacks stream tokens,
apply stop strings and the row's own ``max_tokens``, and end rows whose client left.
Log-probabilities come from the raw logits of each step (``return_logits_vocab``, returned when
the batch ends; the callback's own logits are not usable), or, for long rows, from scoring
prompt and text again afterwards; echo scoring uses ``score_batch`` (``forward_batch`` when
alternatives are asked for). So on this backend a stream that asks for log-probs gets its
tokens when its batch ends. CTranslate2 samples with one random generator per worker thread
that cannot be re-seeded, so a request with a ``seed`` and a temperature above 0 runs alone on
a private ``Generator`` built after ``set_random_seed`` (about 0.2-0.5 s extra), which makes
its text repeat exactly; unseeded and greedy requests are batched.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datagen.serve.jobs import (
    EngineStats,
    Job,
    RowResult,
    Scored,
    common_prefix_length,
    finish_row,
    stop_index,
)

LOGITS_STEPS = 256  # rows x new tokens up to which step logits are returned (~50 MB)
LENGTH_SPREAD = 64  # prompts longer than the batch's first by more wait for another batch
MIN_SHARED_PREFIX = 4  # shorter common prefixes are not worth a separate static prompt
GATHER_QUIET_S = 0.003  # start a batch once no request arrived for this long ...
GATHER_MAX_S = 0.02  # ... or this long after the first waiting one
SEED_LOCK = threading.Lock()  # set_random_seed is process-wide: one private generator at a time


@dataclass(eq=False)
class Waiting:
    """A job's rows not yet decoded (indices into the job), and the lane running the job."""

    job: Job
    rows: list[int]
    arrived: float
    lane: int | None = None



@dataclass(eq=False)
class BatchRow:
    job: Job
    index: int
    max_new: int
    ended: str | None = None  # finish reason once the callback ended the row


class CT2Engine:
    """Lanes of CTranslate2 batches over one int8 model. Call ``start()`` then ``submit()``."""

    backend = "ctranslate2"

    def __init__(self, ct2_dir: Path, tokenizer: Any, eos: list[int], context_length: int, *,
                 max_batch: int = 16, threads: int = 2, lanes: int = 2,
                 compute_type: str = "int8") -> None:
        import ctranslate2

        self.ct2_dir, self.compute_type = ct2_dir, compute_type
        self.max_batch, self.lanes = max_batch, lanes
        self.intra_threads = max(1, threads // lanes)
        self.generator = ctranslate2.Generator(str(ct2_dir), device="cpu",
                                               compute_type=compute_type, inter_threads=lanes,
                                               intra_threads=self.intra_threads)
        self.tokenizer = tokenizer
        self.vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        self.eos_ids = set(eos)
        self.context_length = context_length
        self.stats = EngineStats()
        self._waiting: list[Waiting] = []
        self._changed = threading.Condition()
        self._last_arrival = 0.0
        self._closing = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for lane in range(self.lanes):
            thread = threading.Thread(target=self._lane, args=(lane, copy.deepcopy(
                self.tokenizer)), name=f"ct2-lane-{lane}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, job: Job) -> None:
        """Queue a job; thread-safe."""
        with self._changed:
            self.stats.jobs += 1
            self._last_arrival = time.monotonic()
            self._waiting.append(Waiting(job, list(range(len(job.prompts))), self._last_arrival))
            self._changed.notify_all()

    def close(self) -> None:
        """Stop the lanes after their current step; unfinished jobs get an error."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)
        with self._changed:
            for waiting in self._waiting:
                waiting.job.on_done(None, RuntimeError("server is shutting down"))
            self._waiting = []

    def snapshot(self) -> dict[str, Any]:
        """Counters and queue state; safe to call from another thread."""
        counters = dict(vars(self.stats))
        counters["step_rows_histogram"] = dict(self.stats.step_rows_histogram)
        with self._changed:
            waiting = sum(len(w.rows) for w in self._waiting)
        return counters | {"queued_jobs": 0, "waiting_rows": waiting,
                           "max_batch": self.max_batch, "lanes": self.lanes,
                           "backend": self.backend}

    # --- scheduling -----------------------------------------------------------------------------

    def _lane(self, lane: int, tokenizer: Any) -> None:
        while True:
            taken = self._take(lane)
            if taken is None:
                return
            rows, private = taken
            try:
                self._run_batch(rows, tokenizer, private)
            except Exception as exc:  # a fault fails the requests in this batch, not the server
                for job in {id(r.job): r.job for r in rows}.values():
                    job.on_done(None, exc)
            finally:
                self._release(lane, rows)

    def _take(self, lane: int) -> tuple[list[BatchRow], bool] | None:
        """The next batch for this lane (rows with one set of decoding settings), or None when
        closing. A job runs in one lane at a time; its rows leave ``_waiting`` as they start."""
        with self._changed:
            while True:
                self._drop_cancelled()
                if self._closing:
                    return None
                free = [w for w in self._waiting if w.lane is None]
                if free:
                    quiet = time.monotonic() - self._last_arrival
                    age = time.monotonic() - free[0].arrived
                    if quiet >= GATHER_QUIET_S or age >= GATHER_MAX_S:
                        return self._pick(lane, free)
                    self._changed.wait(GATHER_QUIET_S)
                else:
                    self._changed.wait()

    def _pick(self, lane: int, free: list[Waiting]) -> tuple[list[BatchRow], bool]:
        first = free[0]
        private = _needs_private_generator(first.job)
        key = _batch_key(first.job)
        picked: list[BatchRow] = []
        if not private:
            length = len(first.job.prompts[0])
            free = [w for w in free
                    if _batch_key(w.job) == key and not _needs_private_generator(w.job)
                    and abs(len(w.job.prompts[0]) - length) <= LENGTH_SPREAD]
        for waiting in [first] if private else free:
            room = self.max_batch - len(picked)
            if room <= 0:
                break
            take, waiting.rows = waiting.rows[:room], waiting.rows[room:]
            waiting.lane = lane
            picked += [BatchRow(waiting.job, i, waiting.job.sampling.max_new_tokens)
                       for i in take]
        return picked, private

    def _release(self, lane: int, rows: list[BatchRow]) -> None:
        with self._changed:
            for waiting in list(self._waiting):
                if waiting.lane == lane:
                    waiting.lane = None
                    if not waiting.rows:
                        self._waiting.remove(waiting)
            self._changed.notify_all()

    def _drop_cancelled(self) -> None:
        for waiting in [w for w in self._waiting if w.job.cancelled() and w.lane is None]:
            self._waiting.remove(waiting)
            self.stats.cancelled_rows += len(waiting.rows)
            for _ in waiting.rows:
                waiting.job.row_done()

    # --- one batch ------------------------------------------------------------------------------

    def _run_batch(self, rows: list[BatchRow], tokenizer: Any, private: bool) -> None:
        self.stats.rows += len(rows)
        prompts = [r.job.results[r.index].prompt for r in rows]
        self.stats.prompt_tokens += sum(len(p) for p in prompts)
        for row in rows:
            if row.job.sampling.echo_logprobs:
                self._echo(row.job.results[row.index], row.job.sampling.top_logprobs or 0)
        generating = [r for r in rows if r.max_new > 0 and not r.job.cancelled()]
        if generating:
            if private:
                with SEED_LOCK:
                    import ctranslate2

                    first = generating[0]
                    ctranslate2.set_random_seed(first.job.seeds[first.index] % 2**32)
                    generator = ctranslate2.Generator(
                        str(self.ct2_dir), device="cpu", compute_type=self.compute_type,
                        inter_threads=1, intra_threads=self.intra_threads)
                    self.stats.private_generators += 1
                    self._generate(generator, generating, tokenizer)
                    del generator
            else:
                self._generate(self.generator, generating, tokenizer)
        for row in rows:
            if row.job.cancelled() and row.ended is None:
                self.stats.cancelled_rows += 1
            result = row.job.results[row.index]
            reason = row.ended or ("stop" if len(result.tokens) < row.max_new else "length")
            finish_row(tokenizer, result, row.job.sampling, reason)
            row.job.row_done()

    def _generate(self, generator: Any, rows: list[BatchRow], tokenizer: Any) -> None:
        """One ``generate_batch`` over the rows, every step passing through ``on_step``; then
        the log-probs of rows that asked for them."""
        prompts = [[self.vocab[t] for t in r.job.results[r.index].prompt] for r in rows]
        shared = common_prefix_length(prompts) if len(prompts) > 1 else 0
        shared = shared if shared >= MIN_SHARED_PREFIX else 0
        self.stats.shared_prefix_tokens += shared * (len(prompts) - 1)
        sampling = rows[0].job.sampling
        greedy = sampling.temperature == 0
        scoring = [r for r in rows if r.job.sampling.top_logprobs is not None]
        # Full logits of every step come back only at the end (rows x steps x vocabulary):
        # cheap for judges' few tokens; longer rows are scored again afterwards instead.
        logits = bool(scoring) and len(rows) * max(r.max_new for r in rows) <= LOGITS_STEPS
        self.stats.prefill_passes += 1
        suffixes = [p[shared:] for p in prompts]
        outputs = generator.generate_batch(
            suffixes, static_prompt=prompts[0][:shared] or None,
            cache_static_prompt=False, include_prompt_in_result=False,
            max_length=max(r.max_new for r in rows), end_token=sorted(self.eos_ids),
            sampling_topk=1 if greedy else 0, sampling_topp=sampling.top_p,
            sampling_temperature=1.0 if greedy else sampling.temperature,
            return_logits_vocab=logits, callback=self._on_step(rows, tokenizer),
        )
        shortest = min(len(s) for s in suffixes)
        for row, output, suffix in zip(rows, outputs, suffixes, strict=True):
            if row.job.sampling.top_logprobs is None:
                continue
            # Rows with longer prompts than the shortest feed their extra prompt tokens one
            # step at a time first; those steps come first in the logits.
            extra = len(suffix) - shortest
            steps = np.asarray(output.logits[0])[extra:] if logits else None
            self._score_row(row, steps)

    def _score_row(self, row: BatchRow, steps: np.ndarray | None) -> None:
        """Log-probs of a row's generated tokens from its step logits (steps, V), or by scoring
        prompt + generation again; then stream the tokens held back for them."""
        job, result = row.job, row.job.results[row.index]
        k = job.sampling.top_logprobs or 0
        if not result.tokens:
            return
        if steps is None:
            result.scored = self._score(result.prompt + result.tokens, k)[len(result.prompt):]
        else:
            result.scored = [score_step(steps[i], t, k) for i, t in enumerate(result.tokens)]
        if job.on_token is not None:
            for token, scored in zip(result.tokens, result.scored, strict=True):
                job.on_token(row.index, token, scored)

    def _score(self, tokens: list[int], k: int) -> list[Scored]:
        """Log-probs of each token given the ones before it (the first has none): CTranslate2's
        ``score_batch``, or ``forward_batch`` over the whole vocabulary when k alternatives
        are asked for."""
        scored = [Scored(tokens[0], None, [])]
        if len(tokens) < 2:
            return scored
        if k == 0:
            out = self.generator.score_batch([[self.vocab[t] for t in tokens]],
                                             max_input_length=0)[0]
            return scored + [Scored(t, float(lp), []) for t, lp in zip(tokens[1:], out.log_probs,
                                                                        strict=True)]
        logprobs = np.asarray(self.generator.forward_batch(
            [tokens[:-1]], return_log_probs=True))[0]  # (T-1, V)
        for position, token in enumerate(tokens[1:]):
            row = logprobs[position]
            scored.append(Scored(token, float(row[token]), top_k(row, k)))
        return scored

    def _on_step(self, rows: list[BatchRow], tokenizer: Any) -> Callable[[Any], bool]:
        """The per-step callback: record, stream and stop rows; True ends a row."""
        state = {"step": -1, "alive": len(rows)}

        def on_step(step: Any) -> bool:
            row = rows[step.batch_id]
            if row.ended is not None:
                return True
            if step.step != state["step"]:
                state["step"] = step.step
                self._count_step(sum(r.ended is None for r in rows))
            ended = self._advance(row, step, tokenizer)
            if ended is not None:
                row.ended = ended
                return True
            return False

        return on_step

    def _count_step(self, alive: int) -> None:
        stats = self.stats
        stats.decode_steps += 1
        stats.max_rows_in_step = max(stats.max_rows_in_step, alive)
        stats.step_rows_histogram[alive] = stats.step_rows_histogram.get(alive, 0) + 1

    def _advance(self, row: BatchRow, step: Any, tokenizer: Any) -> str | None:
        """Take one generated token for a row; the finish reason if the row ends here."""
        job, token = row.job, int(step.token_id)
        if self._closing or job.cancelled():
            self.stats.cancelled_rows += 1
            return "cancelled"
        if token in self.eos_ids:
            return "stop"
        result: RowResult = job.results[row.index]
        result.tokens.append(token)
        self.stats.generated_tokens += 1
        if job.on_token is not None and job.sampling.top_logprobs is None:
            job.on_token(row.index, token, None)  # with log-probs: sent once they are known
        stop = job.sampling.stop
        if stop and stop_index(tokenizer, result.tokens, stop) is not None:
            return "stop"
        if len(result.tokens) >= row.max_new:
            return "length"
        return None

    def _echo(self, result: RowResult, k: int) -> None:
        result.prompt_scored = self._score(result.prompt, k)


def score_step(logits: np.ndarray, token: int, k: int) -> Scored:
    """The token's log-probability under raw logits (V,), with the k best alternatives."""
    logits = logits.astype(np.float64)
    peak = logits.max()
    logprobs = logits - (peak + np.log(np.exp(logits - peak).sum()))
    return Scored(token, float(logprobs[token]), top_k(logprobs, k))


def top_k(logprobs: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k best (token, logprob) pairs of a (V,) array, best first."""
    if k <= 0:
        return []
    best = np.argpartition(-logprobs, k - 1)[:k]
    best = best[np.argsort(-logprobs[best], kind="stable")]
    return [(int(i), float(logprobs[i])) for i in best]


def _batch_key(job: Job) -> tuple[float, float]:
    """Rows batch together when CTranslate2 would decode them with the same settings."""
    sampling = job.sampling
    return (0.0, 1.0) if sampling.temperature == 0 else (sampling.temperature, sampling.top_p)


def _needs_private_generator(job: Job) -> bool:
    return job.sampling.seeded and job.sampling.temperature > 0
