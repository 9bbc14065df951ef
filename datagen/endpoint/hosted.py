"""Hosted Batch API jobs behind the client's ordinary ``call``: half price, crash-safe.

With ``ClientConfig.hosted`` set, ``LLMClient.call`` hands each request that the ledger has not
answered to a ``HostedBatcher``. The batcher collects the calls made together (a generator's
round, a judge's pass, a whole ``rlaif batch`` file), cuts them into batch files the hosted API
accepts (one endpoint and one model per file, at most 50,000 lines and 200 MB), and runs each
as a job: upload, create, poll until terminal, download, ingest. A job is written to the
database before its file is uploaded, its file and batch ids as soon as they are known, and its
answers are written into the ledger (``via = batch``, the batch id, batch prices) in the same
commit that marks it ingested. A process killed at any step therefore finds its jobs again:
it resumes polling a known batch, or looks the upload or the batch up by name before sending
either again, so nothing is paid for twice. Lines a batch did not answer (expired, cancelled,
failed) stay pending and go into a new job on the next run. Callers get the same
``Completion`` as online; the wait is the batch's turnaround, which the progress line says.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from openai.types import Batch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from datagen import store
from datagen.endpoint.batch_api import TERMINAL, BatchAPI
from datagen.endpoint.completion import Completion, finish_row
from datagen.endpoint.limits import cost_usd, estimate_split, price_for
from datagen.endpoint.replies import answer_or_none, error_message, usage_tokens

if TYPE_CHECKING:
    from datagen.endpoint.client import ClientConfig, Stats
    from datagen.endpoint.hosted_options import HostedOptions
    from datagen.endpoint.limits import Limits

DbCall = Callable[..., Awaitable[Any]]


@dataclass
class _Waiting:
    key: str
    path: str
    body: dict[str, Any]
    future: asyncio.Future


def batch_line(key: str, path: str, body_json: str) -> str:
    """One input line of a hosted batch file; the ledger key is the custom_id."""
    return (f'{{"custom_id":"{key}","method":"POST","url":"/v1{path}",'
            f'"body":{body_json}}}\n')


class HostedBatcher:
    """Collects calls into hosted batch jobs and answers each call when its job is done."""

    def __init__(self, config: ClientConfig, options: HostedOptions, headers: dict[str, str],
                 stats: Stats, limits: Limits, db: DbCall,
                 say: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.options = options
        self.stats = stats
        self.limits = limits
        self.db = db
        self.api = BatchAPI(config.base_url, headers, timeout=config.timeout,
                            max_retries=config.max_retries,
                            backoff=(config.backoff_base, config.backoff_max))
        self.console = Console(stderr=True, highlight=False)
        self.say = say or (lambda text: self.console.print(text, markup=False, soft_wrap=True))
        self._waiting: list[_Waiting] = []
        self._collector: asyncio.Task | None = None
        self._rounds: set[asyncio.Task] = set()
        self._committed_usd = 0.0  # estimated cost of admitted requests not yet answered
        self._estimates: dict[str, float] = {}
        self._progress: Progress | None = None

    async def submit(self, key: str, path: str, body: dict[str, Any]) -> Completion:
        """Answer one request through a hosted batch (waits for the batch to finish)."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(key, path, body, future))
        if self._collector is None:
            self._collector = asyncio.create_task(self._collect())
        return await future

    async def cancel(self, keys: list[str] | None = None) -> list[tuple[str, str]]:
        """Cancel the open batches of this database (those holding ``keys``, when given);
        return (batch id, new status) of each. A rerun then ingests what they answered."""
        jobs = await (self.db(store.hosted_open_jobs, keys) if keys is not None
                      else self.db(store.hosted_jobs, True))
        done = []
        for job in jobs:
            if job["batch_id"] and job["status"] not in TERMINAL:
                batch = await self.api.cancel(job["batch_id"])
                await self.db(store.hosted_update_job, job["job"], _job_fields(batch))
                done.append((batch.id, batch.status))
        return done

    async def aclose(self) -> None:
        """Stop collecting and close the connections (unfinished jobs resume on a rerun)."""
        for task in [self._collector, *self._rounds]:
            if task is not None:
                task.cancel()
        if self._progress is not None:
            self._progress.stop()
        await self.api.aclose()

    async def _collect(self) -> None:
        while True:
            seen = len(self._waiting)
            await asyncio.sleep(self.options.gather_seconds)
            if len(self._waiting) == seen:
                break
        items, self._waiting, self._collector = self._waiting, [], None
        task = asyncio.create_task(self._round(items))
        self._rounds.add(task)
        task.add_done_callback(self._rounds.discard)

    async def _round(self, items: list[_Waiting]) -> None:
        try:
            jobs = await self._plan(items)
            by_key = {item.key: item for item in items}
            await asyncio.gather(*(self._run_and_answer(job, by_key) for job in jobs))
        except BaseException as exc:
            for item in items:
                if not item.future.done():
                    item.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise

    async def _plan(self, items: list[_Waiting]) -> list[dict[str, Any]]:
        """Open jobs holding any of these requests (resumed), then new jobs for the rest."""
        open_jobs = await self.db(store.hosted_open_jobs, [item.key for item in items])
        for job in open_jobs:
            job["resumed"] = True
        held = set()
        for job in open_jobs:
            held.update(key for key, _, _ in await self.db(store.hosted_job_requests, job["job"]))
        fresh = self._within_budget([item for item in items if item.key not in held])
        groups: dict[tuple[str, str | None], list[_Waiting]] = {}
        for item in fresh:
            groups.setdefault((item.path, item.body.get("model")), []).append(item)
        new_jobs = [job for (path, model), group in groups.items()
                    for job in await self._new_jobs(path, model, group)]
        if len(new_jobs) > 1:
            self.say(f"hosted: {len(fresh)} requests split into {len(new_jobs)} batches "
                     f"(at most {self.options.max_lines:,} lines and "
                     f"{self.options.max_bytes / 2**20:.0f} MB each, one endpoint and model)")
        return open_jobs + new_jobs

    def _within_budget(self, items: list[_Waiting]) -> list[_Waiting]:
        """Requests whose estimated batch-priced cost fits the budget; the rest are skipped."""
        cap = self.limits.budget_usd
        if cap is None:
            return items
        admitted = []
        for item in items:
            estimate = cost_usd(item.body.get("model"), self.config.prices,
                                estimate_split(item.body), batch=True)
            if self.limits.spent_usd + self._committed_usd + estimate > cap:
                self.stats.skipped += 1
                item.future.set_result(Completion(
                    key=item.key, status="skipped", error="budget exhausted (--budget-usd)",
                    error_code="budget_exhausted", via="batch"))
                continue
            self._committed_usd += estimate
            self._estimates[item.key] = estimate
            admitted.append(item)
        return admitted

    async def _new_jobs(self, path: str, model: str | None, items: list[_Waiting]
                        ) -> list[dict[str, Any]]:
        jobs, chunk, size = [], [], 0
        for item in items:
            line_size = len(batch_line(item.key, path, orjson.dumps(
                item.body, option=orjson.OPT_SORT_KEYS).decode()).encode())
            if chunk and (len(chunk) >= self.options.max_lines
                          or size + line_size > self.options.max_bytes):
                jobs.append(await self._add_job(path, model, chunk))
                chunk, size = [], 0
            chunk.append(item)
            size += line_size
        if chunk:
            jobs.append(await self._add_job(path, model, chunk))
        return jobs

    async def _add_job(self, path: str, model: str | None, items: list[_Waiting]
                       ) -> dict[str, Any]:
        job = {"job": uuid.uuid4().hex, "label": self.options.label,
               "endpoint": self.config.base_url.split("@")[-1], "path": path, "model": model,
               "line_count": len(items), "input_file_id": None, "batch_id": None,
               "status": "new", "resumed": False}
        await self.db(store.hosted_add_job, job, [item.key for item in items])
        return job

    async def _run_and_answer(self, job: dict[str, Any], by_key: dict[str, _Waiting]) -> None:
        results = await self._run(job)
        for key in results:  # answered: the actual cost now counts instead of the estimate
            self._committed_usd -= self._estimates.pop(key, 0.0)
        for key, result in results.items():
            item = by_key.get(key)
            if item is not None and not item.future.done():
                item.future.set_result(result)

    async def _run(self, job: dict[str, Any]) -> dict[str, Completion]:
        """Take one job from wherever it stands to ingested; return its answers by key."""
        lines = await self.db(store.hosted_job_requests, job["job"])
        batch_id = job["batch_id"] or await self._submit(job, lines)
        self.say(f"hosted: waiting for batch {batch_id} ({len(lines):,} requests, "
                 f"{job['label']}); anything that needs its answers waits too")
        batch = await self._poll(job, batch_id)
        results = await self._download(job, batch, [key for key, _, _ in lines])
        rows = [finish_row(r, job["endpoint"]) for r in results.values() if r.status_code]
        await self.db(store.hosted_ingest, job["job"], _job_fields(batch), rows)
        self._count(results.values())
        self.say(f"hosted: batch {batch.id} {batch.status}: "
                 f"{sum(r.ok for r in results.values()):,} of {len(lines):,} answered")
        return results

    async def _submit(self, job: dict[str, Any], lines: list[tuple[str, str, str]]) -> str:
        name = f"rlaif-{job['job']}.jsonl"
        file_id = job["input_file_id"]
        if not file_id:
            found = await self.api.find_file(name) if job["resumed"] else None
            if found is None:
                content = "".join(batch_line(k, p, b) for k, p, b in lines).encode()
                found = await self.api.upload(name, content)
            file_id = found.id
            await self.db(store.hosted_update_job, job["job"],
                          {"input_file_id": file_id, "status": "uploaded"})
        batch = await self.api.find_batch(job["job"]) if job["resumed"] else None
        if batch is None:
            batch = await self.api.create(file_id, f"/v1{job['path']}",
                                          self.options.completion_window, job["job"],
                                          {"rlaif_run": self.options.label})
        await self.db(store.hosted_update_job, job["job"], _job_fields(batch))
        return batch.id

    async def _poll(self, job: dict[str, Any], batch_id: str) -> Batch:
        task = self._bar().add_task(f"batch {batch_id}", total=job["line_count"], status="")
        last_status = None
        try:
            while True:
                batch = await self.api.retrieve(batch_id)
                counts = batch.request_counts
                done = (counts.completed + counts.failed) if counts else 0
                self._bar().update(task, completed=done, status=batch.status)
                if batch.status != last_status:
                    await self.db(store.hosted_update_job, job["job"], _job_fields(batch))
                    last_status = batch.status
                if batch.status in TERMINAL:
                    return batch
                await asyncio.sleep(self.options.poll_interval)
        finally:
            self._bar().remove_task(task)

    def _bar(self) -> Progress:
        if self._progress is None:
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                console=self.console, disable=not self.options.progress, transient=True)
            self._progress.start()
        return self._progress

    async def _download(self, job: dict[str, Any], batch: Batch, keys: list[str]
                        ) -> dict[str, Completion]:
        results: dict[str, Completion] = {}
        wanted = set(keys)
        price = price_for(job["model"], self.config.prices, batch=True)
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            for raw in (await self.api.content(file_id)).splitlines():
                if not raw.strip():
                    continue
                line = orjson.loads(raw)
                key = line.get("custom_id")
                if key in wanted:
                    results[key] = self._completion(job, batch, key, line, price)
        reason = _batch_problem(batch)
        for key in keys:
            results.setdefault(key, Completion(
                key=key, status="failed", error=reason, error_code=f"batch_{batch.status}",
                via="batch", batch_id=batch.id))
        return results

    def _completion(self, job: dict[str, Any], batch: Batch, key: str, line: dict[str, Any],
                    price: tuple[float, float]) -> Completion:
        """The outcome of one output or error file line (``price``: the batch price per
        million input and output tokens of the job's model)."""
        response = line.get("response")
        common = {"key": key, "via": "batch", "batch_id": batch.id, "attempts": 1}
        if not response:
            error = line.get("error") or {}
            return Completion(status="failed", error=error.get("message") or "no response",
                              error_code=error.get("code") or "no_response", **common)
        status = int(response.get("status_code") or 0)
        body = response.get("body")
        parsed = answer_or_none(body, job["path"]) if status == 200 else None
        if parsed is None:
            return Completion(status="failed", status_code=status or None, error_body=body,
                              error=error_message(body, status),
                              request_id=response.get("request_id"), **common)
        tokens = usage_tokens(parsed)
        return Completion(
            status="ok", status_code=200, body=parsed, prompt_tokens=tokens[0],
            completion_tokens=tokens[1], request_id=response.get("request_id"),
            cost_usd=(tokens[0] * price[0] + tokens[1] * price[1]) / 1e6, **common)

    def _count(self, results: Any) -> None:
        for result in results:
            if result.ok:
                self.stats.ok += 1
                self.stats.prompt_tokens += result.prompt_tokens
                self.stats.completion_tokens += result.completion_tokens
                self.stats.cost_usd += result.cost_usd
                self.limits.charge(result.cost_usd)
            else:
                self.stats.failed += 1


def _batch_problem(batch: Batch) -> str:
    errors = batch.errors.data if batch.errors and batch.errors.data else []
    detail = "; ".join(f"line {e.line}: {e.message}" if e.line else str(e.message)
                       for e in errors[:3])
    return f"batch {batch.id} {batch.status} without answering this line" + (
        f" ({detail})" if detail else "")


def _job_fields(batch: Batch) -> dict[str, Any]:
    counts = batch.request_counts.model_dump() if batch.request_counts else None
    return {"batch_id": batch.id, "status": batch.status,
            "output_file_id": batch.output_file_id, "error_file_id": batch.error_file_id,
            "request_counts": orjson.dumps(counts).decode() if counts else None}
