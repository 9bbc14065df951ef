"""Jobs for `rlaif service`: the ``jobs`` table, and workers that run each job as a CLI process.

A job's argv is built and checked against the CLI by ``align.service.workspace``. A job runs as
``python -m align.cli COMMAND ARGV --db DB`` on the service's database, so it shares the request
ledger with every CLI run: what one of them paid for, the other reads back. Jobs are rows of the
``jobs`` table, and the runner takes them from the table, not from memory: several service
processes (on several machines, on one PostgreSQL database) share the queue, each taking a job
under a lease it renews while the job runs (``datagen.store.queue``). A service killed at any
moment leaves its jobs to whichever process claims them next (at once on the same machine,
once the lease expires on another), and their second run answers from the ledger whatever the
first one finished. A job
process dies with the service (``PR_SET_PDEATHSIG`` on Linux), so a killed service leaves no job
running behind. A job runs in its own workspace with an environment built from an allow-list
plus its endpoint's URL and key (``align.service.endpoints``), under a memory limit
(``RLIMIT_AS``, set in the child) and a wall-clock limit; a job over either fails with a
message saying so and the service carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from align.service.endpoints import Endpoint, child_env
from align.service.kinds import KINDS, TERMINAL
from align.service.workspace import JobOptionError, batch_keys, build_argv, checked_batch_keys
from datagen import store
from datagen.processes import die_with_parent
from datagen.store.tables import JOBS

KILL_GRACE_S = 5.0
LEASE_S = 15.0  # a dead service process's jobs are taken over this long after its last renewal
RENEW_S = 1.0  # how often leases are renewed (and cancellations asked elsewhere noticed)
POLL_S = 0.5  # how often an idle worker looks for jobs submitted to another process


# --- the jobs table ----------------------------------------------------------------------------


def get_job(db: Any, job_id: str) -> dict[str, Any] | None:
    """One job row, or None."""
    rows = store.load_rows(db, JOBS, id=job_id)
    return rows[0] if rows else None


def put_job(db: Any, row: dict[str, Any]) -> None:
    """Write a job row (replacing the stored one)."""
    store.save_rows(db, JOBS, [row | {"updated_at": time.time()}], pk="id", replace=True)


def list_jobs(db: Any) -> list[dict[str, Any]]:
    """Every job, oldest first."""
    return store.load_rows(db, JOBS, order_by="created_at")


def page_jobs(db: Any, limit: int, offset: int = 0, **equals: Any) -> list[dict[str, Any]]:
    """One page of jobs, oldest first, matching the given columns (owner, status)."""
    return store.load_page(db, JOBS, "created_at, rowid", limit, offset, **equals)


def waiting_jobs(db: Any, owner: str) -> int:
    """How many of a user's jobs are queued or running."""
    return sum(store.count_rows(db, JOBS, owner=owner, status=s) for s in ("queued", "running"))


# --- running --------------------------------------------------------------------------------------


class JobLimits:
    """What one job process may use: address space in bytes and wall-clock seconds."""

    def __init__(self, memory_bytes: int | None = None, seconds: float | None = None) -> None:
        self.memory_bytes, self.seconds = memory_bytes, seconds


def limited_preexec(memory_bytes: int | None) -> Callable[[], None]:
    """A ``preexec_fn``: die with the service, and cap the child's address space."""
    die = die_with_parent()

    def hook() -> None:
        if die is not None:
            die()
        if memory_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    return hook


class JobRunner:
    """Runs queued jobs in K workers, one CLI process each."""

    def __init__(self, db: store.DBThread, db_path: Path | str, data_dir: Path, workers: int,
                 env: dict[str, str], endpoints: dict[str, Endpoint],
                 limits: JobLimits | None = None) -> None:
        self.db = db
        self.db_path = db_path
        self.jobs_dir = data_dir / "jobs"
        self.workers = workers
        self.env = env
        self.endpoints = endpoints
        self.limits = limits or JobLimits()
        self.worker = store.new_worker_id()
        self._wake = asyncio.Event()
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self._keys: dict[str, list[str]] = {}
        self._tasks: list[asyncio.Task] = []
        self._preexec = limited_preexec(self.limits.memory_bytes)

    async def start(self) -> None:
        """Start the workers (they take unfinished jobs oldest first, this process's and any
        other's) and the lease renewal."""
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self.workers)]
        if self.workers:
            self._tasks.append(asyncio.create_task(self._keep_leases()))

    async def stop(self) -> None:
        """Stop the workers; running jobs are ended and given back, queued for any process."""
        for task in self._tasks:
            task.cancel()
        for proc in list(self.procs.values()):
            await self._end_process(proc)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.db.call(store.job_release, self.worker)

    def endpoint(self, name: str, options: dict[str, Any]) -> Endpoint:
        """The named endpoint a job asks for, checking the model against its list."""
        endpoint = self.endpoints.get(name)
        if endpoint is None:
            raise JobOptionError("endpoint", f"no endpoint {name!r} (this service has "
                                             f"{', '.join(sorted(self.endpoints))})", name)
        model = options.get("model", options.get("--model"))
        if endpoint.models is not None and model is not None and model not in endpoint.models:
            raise JobOptionError("model", f"endpoint {name!r} serves "
                                          f"{', '.join(endpoint.models)}", model)
        return endpoint

    async def submit(self, kind: str, options: dict[str, Any], owner: str = "",
                     endpoint: str = "default", files: dict[str, Path] | None = None
                     ) -> dict[str, Any]:
        """Validate and queue a job; raise JobOptionError naming what the CLI would refuse."""
        self.endpoint(endpoint, options)
        job_id = "job-" + uuid.uuid4().hex[:16]
        job_dir = self.jobs_dir / job_id
        job_dir.mkdir(parents=True, exist_ok=True)
        try:
            argv, output = await asyncio.to_thread(
                build_argv, kind, options, job_dir, self.db_path, files)
            if kind == "batch":
                self._keys[job_id] = await asyncio.to_thread(checked_batch_keys, argv)
        except JobOptionError as exc:  # name paths as the caller does: inside the workspace
            _remove_tree(job_dir)
            raise JobOptionError(exc.name, exc.message.replace(
                str(job_dir.resolve()) + os.sep, ""), exc.value) from None
        except BaseException:
            _remove_tree(job_dir)
            raise
        now = time.time()
        row = {"id": job_id, "kind": kind, "options": json.dumps(options, sort_keys=True),
               "command": json.dumps(list(KINDS[kind].path)), "argv": json.dumps(argv),
               "status": "queued", "exit_code": None, "error": None,
               "output": str(output) if output else None, "job_dir": str(job_dir),
               "pid": None, "runs": 0, "cancel_requested": False, "created_at": now,
               "started_at": None, "finished_at": None, "ledger_start": None,
               "ledger_end": None, "owner": owner, "endpoint": endpoint}
        await self.db.call(put_job, row)
        self._wake.set()
        return row

    async def cancel(self, job_id: str) -> dict[str, Any] | None:
        """Cancel a queued or running job; None when there is no such job. A job running in
        another service process is stopped by that process within RENEW_S."""
        job = await self.db.call(store.job_cancel, job_id)
        proc = self.procs.get(job_id)
        if job is not None and proc is not None:
            asyncio.create_task(self._end_process(proc))
        return job

    async def _end_process(self, proc: asyncio.subprocess.Process) -> None:
        for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
            if proc.returncode is not None:
                return
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            if wait is None:
                await proc.wait()
                return
            try:
                await asyncio.wait_for(proc.wait(), wait)
            except TimeoutError:
                continue

    async def _keep_leases(self) -> None:
        while True:
            await asyncio.sleep(RENEW_S)
            held = await self.db.call(store.job_renew, self.worker, LEASE_S)
            for job_id, proc in list(self.procs.items()):  # cancelled, or taken over
                if held.get(job_id, True):
                    asyncio.create_task(self._end_process(proc))

    async def _next_job(self) -> dict[str, Any]:
        """The next job this process takes (waiting for a submission or a poll)."""
        while True:
            job = await self.db.call(store.job_claim, self.worker, LEASE_S)
            if job is not None:
                return job
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_S)

    async def _finish(self, job_id: str, fields: dict[str, Any]) -> None:
        """Record how a job this process holds ended, and give up its lease."""
        await self.db.call(store.job_update, job_id, fields | {
            "finished_at": time.time(), "pid": None, "worker_id": None, "lease_until": None},
            self.worker)

    async def _work(self) -> None:
        while True:
            job = await self._next_job()
            if job["cancel_requested"]:
                await self._finish(job["id"], {"status": "cancelled"})
                continue
            try:
                await self._run(job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a job the service cannot even start is a failed job
                await self._finish(job["id"], {"status": "failed",
                                               "error": f"{type(exc).__name__}: {exc}"})

    async def _run(self, job: dict[str, Any]) -> None:
        job_dir = Path(job["job_dir"])
        job_dir.mkdir(parents=True, exist_ok=True)
        argv = [*json.loads(job["command"]), *json.loads(job["argv"])]
        start = job["ledger_start"] or json.dumps(await self.db.call(store.ledger_totals))
        running = {"status": "running", "runs": job["runs"] + 1, "ledger_start": start,
                   "started_at": job["started_at"] or time.time()}
        if not await self.db.call(store.job_update, job["id"], running, self.worker):
            return  # another process took the job over meanwhile
        job = job | running
        endpoint = self.endpoints.get(job.get("endpoint") or "default")
        if endpoint is None:
            raise LookupError(f"endpoint {job.get('endpoint')!r} is no longer configured")
        with (job_dir / "log.txt").open("ab") as log:
            log.write(f"--- run {job['runs']} at {time.ctime()}\n".encode())
            log.flush()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "align.cli", *argv, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, env=child_env(self.env, endpoint),
                cwd=job_dir, start_new_session=True, preexec_fn=self._preexec)
        self.procs[job["id"]] = proc
        try:
            await self.db.call(store.job_update, job["id"], {"pid": proc.pid}, self.worker)
            code, error = await self._wait(proc, job_dir / "log.txt")
        finally:
            self.procs.pop(job["id"], None)
        latest = await self.db.call(get_job, job["id"]) or job
        status = ("cancelled" if latest["cancel_requested"]
                  else "succeeded" if code == 0 else "failed")
        end = json.dumps(await self.db.call(store.ledger_totals))
        await self._finish(job["id"], {"status": status, "exit_code": code, "error": error,
                                       "ledger_end": end})

    async def _wait(self, proc: asyncio.subprocess.Process, log: Path) -> tuple[int, str | None]:
        """The job's exit status and error, ending it when it runs past its time limit."""
        try:
            code = await asyncio.wait_for(proc.wait(), self.limits.seconds)
        except TimeoutError:
            await self._end_process(proc)
            return proc.returncode or -9, (f"the job ran past its time limit of "
                                           f"{self.limits.seconds:g} s and was stopped")
        if code == 0:
            return 0, None
        last = _last_line(log)
        if self.limits.memory_bytes is not None and _ran_out_of_memory(log):
            return code, (f"the job ran out of its memory limit of "
                          f"{self.limits.memory_bytes >> 20} MiB ({last})")
        return code, last

    # --- reporting ------------------------------------------------------------------------------

    async def describe(self, job: dict[str, Any], counts: bool = True) -> dict[str, Any]:
        """A job as the API shows it: status, options, times, counts, tokens and cost (paths
        shown relative to the job's workspace)."""
        out = summary(job)
        out["options"] = json.loads(job["options"])
        out["argv"] = ["rlaif", *json.loads(job["command"]),
                       *(_relative(a, job["job_dir"]) for a in json.loads(job["argv"]))]
        out["output"] = _relative(job["output"], job["job_dir"]) if job["output"] else None
        if counts:
            out.update(await self._progress(job))
        return out

    async def _progress(self, job: dict[str, Any]) -> dict[str, Any]:
        if job["kind"] == "batch":
            keys = self._keys.get(job["id"])
            if keys is None:
                try:
                    keys = await asyncio.to_thread(batch_keys, json.loads(job["argv"]))
                except Exception:  # the input file changed or went away since submission
                    keys = []
                self._keys[job["id"]] = keys
            rows = await self.db.call(store.ledger_lookup, keys)
            done = sum(r["status"] == "ok" for r in rows.values())
            failed = sum(r["status"] == "failed" for r in rows.values())
            return {
                "counts": {"total": len(keys), "done": done, "failed": failed,
                           "pending": len(keys) - done - failed},
                "tokens": {
                    "prompt": sum(r["prompt_tokens"] or 0 for r in rows.values()),
                    "completion": sum(r["completion_tokens"] or 0 for r in rows.values())},
                "cost_usd": sum(r["cost_usd"] or 0.0 for r in rows.values()),
                "accounting": "ledger rows of the job's requests",
            }
        return await self._ledger_delta(job)

    async def _ledger_delta(self, job: dict[str, Any]) -> dict[str, Any]:
        """Counts and spending of a job that is not a batch: output lines, and the ledger's
        growth while it ran (shared with any other run at the same time)."""
        done = None
        if job["output"] and Path(job["output"]).is_file():
            done = await asyncio.to_thread(_count_lines, Path(job["output"]))
        start = json.loads(job["ledger_start"]) if job["ledger_start"] else None
        end = json.loads(job["ledger_end"]) if job["ledger_end"] else None
        if start is not None and end is None and job["status"] == "running":
            end = await self.db.call(store.ledger_totals)
        delta = {k: (end[k] - start[k]) if start and end else 0
                 for k in ("prompt_tokens", "completion_tokens", "cost_usd", "ok", "failed")}
        return {
            "counts": {"total": None, "done": done, "failed": None, "pending": None,
                       "requests_ok": delta["ok"], "requests_failed": delta["failed"]},
            "tokens": {"prompt": delta["prompt_tokens"], "completion": delta["completion_tokens"]},
            "cost_usd": delta["cost_usd"],
            "accounting": "ledger growth while the job ran",
        }

    async def results(self, job: dict[str, Any]) -> AsyncIterator[bytes] | None:
        """The job's results as JSONL chunks: its output file (a regular file inside its
        workspace, checked again now), or its kind's table; None when there is nothing to
        read yet."""
        output = Path(job["output"]) if job["output"] else None
        if output is not None and _inside_regular(output, Path(job["job_dir"])):
            return _file_chunks(output)
        table = KINDS[job["kind"]].table
        if table and job["status"] in TERMINAL:
            rows = await self.db.call(store.load_rows, table)
            return _row_chunks(rows)
        return None


def summary(job: dict[str, Any]) -> dict[str, Any]:
    """What a job list shows of a job: no options, argv or paths."""
    return {k: job.get(k) for k in ("id", "kind", "status", "exit_code", "error", "runs",
                                    "created_at", "started_at", "finished_at", "endpoint")}


def _relative(value: str, job_dir: str) -> str:
    """A path inside the workspace as the caller named it (relative); other values as is."""
    root = str(Path(job_dir).resolve())
    return value[len(root) + 1:] if value.startswith(root + os.sep) else value


def _inside_regular(path: Path, job_dir: Path) -> bool:
    """Whether ``path`` is a regular file inside ``job_dir`` after following symlinks."""
    resolved = path.resolve()
    return resolved.is_relative_to(job_dir.resolve()) and resolved.is_file()


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as fh:
        while chunk := await asyncio.to_thread(fh.read, 1 << 16):
            yield chunk


async def _row_chunks(rows: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    for start in range(0, len(rows), 500):
        yield "".join(json.dumps(r, ensure_ascii=False) + "\n"
                      for r in rows[start:start + 500]).encode()


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 16), b""))


OUT_OF_MEMORY = ("MemoryError", "Memory allocation", "failed to map segment",
                 "Cannot allocate memory", "bad_alloc", "out of memory")


def _ran_out_of_memory(log: Path) -> bool:
    """Whether the end of a job's log shows an allocation that failed."""
    with log.open("rb") as fh:
        fh.seek(max(0, log.stat().st_size - 8192))
        tail = fh.read().decode(errors="replace")
    return any(sign in tail for sign in OUT_OF_MEMORY)


def _last_line(path: Path) -> str | None:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    return lines[-1][-500:] if lines else None


def _remove_tree(path: Path) -> None:
    for child in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()
    path.rmdir()
