"""The job routes of `rlaif service` (``/v1/jobs``): submit, list, watch, cancel, download.

Each route is a plain function that gets the ``Service`` as a dependency and raises
``HTTPException`` for what it refuses; the request and response models here are what
``/openapi.json`` documents. Running the jobs is ``align.service.jobs``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from align.service.context import BODY, ERRORS, Problem, Service, service_of
from align.service.jobs import get_job, list_jobs
from align.service.kinds import TERMINAL, KindName, Status
from align.service.workspace import JobOptionError

EVENT_INTERVAL_S = 0.5
JOB_ERRORS = {**ERRORS, 404: {"model": Problem, "description": "No such job"}}
ON_SERVICE = Depends(service_of)


class JobRequest(BaseModel):
    """A job: a kind and its options, named as the command line names them."""

    model_config = ConfigDict(extra="forbid")

    kind: KindName
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="CLI options of the kind's command, e.g. {\"input_file\": \"in.jsonl\", "
                    "\"base-url\": \"http://host/v1\"}; a list of JSON objects for a file path "
                    "is written to the job's folder as JSONL.")


class JobCounts(BaseModel):
    total: int | None = None
    done: int | None = None
    failed: int | None = None
    pending: int | None = None
    requests_ok: int | None = None
    requests_failed: int | None = None


class JobTokens(BaseModel):
    prompt: int = 0
    completion: int = 0


class JobInfo(BaseModel):
    """A job's state. Counts of a batch come from the ledger rows of its requests; other
    kinds count their output lines and the ledger's growth while they ran."""

    id: str
    kind: str
    status: Status
    options: dict[str, Any]
    argv: list[str]
    exit_code: int | None = None
    error: str | None = None
    output: str | None = None
    runs: int = 0
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    counts: JobCounts | None = None
    tokens: JobTokens | None = None
    cost_usd: float | None = None
    accounting: str | None = None


class JobList(BaseModel):
    jobs: list[JobInfo]


async def job_or_404(service: Service, job_id: str) -> dict[str, Any]:
    """The job row, or HTTP 404."""
    job = await service.db.call(get_job, job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return job


async def submit(body: JobRequest, service: Service = ON_SERVICE) -> Any:
    """Queue a job; 422 names the kind or option the command line would refuse."""
    try:
        job = await service.runner.submit(body.kind, body.options)
    except JobOptionError as exc:
        loc = ["body", "kind"] if exc.name == "kind" else ["body", "options", exc.name]
        raise HTTPException(422, [{"loc": loc, "msg": exc.message, "type": "invalid_option",
                                   "input": exc.value}]) from None
    return await service.runner.describe(job, counts=False)


async def jobs(status: Status | None = None, service: Service = ON_SERVICE) -> Any:
    """Every job, oldest first (without counts; ask a job for those)."""
    rows = await service.db.call(list_jobs)
    return {"jobs": [await service.runner.describe(j, counts=False) for j in rows
                     if status is None or j["status"] == status]}


async def job(job_id: str, service: Service = ON_SERVICE) -> Any:
    """One job with its counts (done, failed, pending), tokens and cost."""
    return await service.runner.describe(await job_or_404(service, job_id))


async def cancel(job_id: str, service: Service = ON_SERVICE) -> Any:
    """Cancel a queued or running job (a running one is stopped, its ledger kept)."""
    found = await job_or_404(service, job_id)
    if found["status"] in TERMINAL:
        raise HTTPException(409, f"job {job_id} has already {found['status']}")
    return await service.runner.describe(await service.runner.cancel(job_id), counts=False)


async def results(job_id: str, service: Service = ON_SERVICE) -> Any:
    """The job's results as JSONL, streamed (its output file, or its kind's table)."""
    found = await job_or_404(service, job_id)
    chunks = await service.runner.results(found)
    if chunks is None:
        raise HTTPException(409, f"job {job_id} has no results yet ({found['status']})")
    return StreamingResponse(chunks, media_type="application/x-ndjson")


async def events(job_id: str, service: Service = ON_SERVICE) -> Any:
    """Progress as server-sent events until the job ends."""
    await job_or_404(service, job_id)
    return StreamingResponse(_job_events(service, job_id), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store"})


async def _job_events(service: Service, job_id: str) -> AsyncIterator[bytes]:
    last = None
    quiet = 0
    while True:
        job = await service.db.call(get_job, job_id)
        info = await service.runner.describe(job)
        text = json.dumps(info, sort_keys=True)
        final = job["status"] in TERMINAL
        if text != last:
            yield f"event: {'end' if final else 'progress'}\ndata: {text}\n\n".encode()
            last, quiet = text, 0
        elif final:
            yield f"event: end\ndata: {text}\n\n".encode()
        else:
            quiet += 1
            if quiet % 30 == 0:
                yield b": still running\n\n"
        if final:
            return
        await asyncio.sleep(EVENT_INTERVAL_S)


def job_routes() -> APIRouter:
    """The /v1/jobs routes."""
    router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=ERRORS)
    router.add_api_route("", submit, methods=["POST"], status_code=201, response_model=JobInfo,
                         responses={**BODY, 422: {"description": "Unknown kind or option, or "
                                                                 "options the CLI refuses"}})
    router.add_api_route("", jobs, methods=["GET"], response_model=JobList)
    router.add_api_route("/{job_id}", job, methods=["GET"], response_model=JobInfo,
                         responses=JOB_ERRORS)
    router.add_api_route("/{job_id}/cancel", cancel, methods=["POST"], response_model=JobInfo,
                         responses={**JOB_ERRORS, 409: {
                             "model": Problem, "description": "The job has already finished"}})
    router.add_api_route(
        "/{job_id}/results", results, methods=["GET"], response_class=StreamingResponse,
        responses={**JOB_ERRORS, 409: {"model": Problem, "description": "No results yet"},
                   200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                         "description": "JSONL, one result a line"}})
    router.add_api_route(
        "/{job_id}/events", events, methods=["GET"], response_class=StreamingResponse,
        responses={**JOB_ERRORS,
                   200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                         "description": "Server-sent events: `progress` while it runs, then "
                                        "`end`"}})
    return router
