"""The job routes of `rlaif service` (``/v1/jobs``): submit, list, watch, cancel, download.

Each route is a plain function that gets the ``Service`` and the caller's ``User`` as
dependencies and raises ``HTTPException`` for what it refuses; the request and response models
here are what ``/openapi.json`` documents. Operators (and admins) use these routes; an
operator sees only their own jobs (another's is a 404, as if it did not exist). A user may
have a limited number of jobs waiting (429 beyond it); the job list is paged and never
carries options. Running the jobs is ``align.service.jobs``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from align.service.auth import allow
from align.service.context import BODY, ERRORS, Problem, Service, service_of
from align.service.files import readable_files
from align.service.jobs import get_job, page_jobs, summary, waiting_jobs
from align.service.kinds import TERMINAL, KindName, Status
from align.service.users import User
from align.service.workspace import FILE_ID, JobOptionError

EVENT_INTERVAL_S = 0.5
JOB_ERRORS = {**ERRORS, 404: {"model": Problem, "description": "No such job"}}
ON_SERVICE = Depends(service_of)
OPERATOR = Depends(allow("operator"))


class JobRequest(BaseModel):
    """A job: a kind and its options, named as the command line names them."""

    model_config = ConfigDict(extra="forbid")

    kind: KindName
    endpoint: str = Field(default="default", max_length=64,
                          description="One of the endpoints the service was started with.")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="CLI options of the kind's command, e.g. {\"input_file\": \"file-...\", "
                    "\"concurrency\": 4}; inputs are uploaded files named by id, or a list of "
                    "JSON objects (written to the job's workspace as JSONL); outputs are names "
                    "inside the workspace.")


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
    endpoint: str | None = None
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


class EndpointInfo(BaseModel):
    """An endpoint jobs may name (its URL and key stay with the service)."""

    name: str
    models: list[str] | None = None
    embedded: bool


class EndpointList(BaseModel):
    endpoints: list[EndpointInfo]


class JobSummary(BaseModel):
    """A job as the list shows it (no options or argv: ask the job for those)."""

    id: str
    kind: str
    status: Status
    endpoint: str | None = None
    exit_code: int | None = None
    error: str | None = None
    runs: int = 0
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None


class JobList(BaseModel):
    jobs: list[JobSummary]
    next_offset: int | None = Field(description="Offset of the next page; null on the last")


async def job_or_404(service: Service, job_id: str, user: User) -> dict[str, Any]:
    """The job row if the user may see it (theirs, or any for an admin), else HTTP 404."""
    job = await service.db.call(get_job, job_id)
    if job is None or (user.role != "admin" and job.get("owner") != user.id):
        raise HTTPException(404, f"no job {job_id!r}")
    return job


def _option_error(exc: JobOptionError) -> HTTPException:
    top = exc.name in ("kind", "endpoint")
    loc = ["body", exc.name] if top else ["body", "options", exc.name]
    return HTTPException(422, [{"loc": loc, "msg": exc.message, "type": "invalid_option",
                                "input": exc.value}])


def _file_ids(value: Any) -> list[str]:
    """Every upload id named in an options value."""
    if isinstance(value, str):
        return [value] if FILE_ID.match(value) else []
    if isinstance(value, list):
        return [i for v in value if isinstance(v, str) for i in _file_ids(v)]
    return []


async def submit(body: JobRequest, request: Request, service: Service = ON_SERVICE,
                 user: User = OPERATOR) -> Any:
    """Queue a job; 422 names the kind or option the command line would refuse."""
    if await service.db.call(waiting_jobs, user.id) >= service.settings.user_jobs:
        raise HTTPException(429, f"you have {service.settings.user_jobs} jobs waiting; wait "
                                 "for one to finish or cancel one")
    ids = [i for v in body.options.values() for i in _file_ids(v)]
    files = await service.db.call(readable_files, None if user.role == "admin" else user.id,
                                  ids)
    try:
        job = await service.runner.submit(body.kind, body.options, user.id, body.endpoint,
                                          files)
    except JobOptionError as exc:
        raise _option_error(exc) from None
    request.state.audit_target = job["id"]
    return await service.runner.describe(job, counts=False)


async def jobs(status: Status | None = None, limit: int = Query(50, ge=1, le=500),
               offset: int = Query(0, ge=0, le=10**9), service: Service = ON_SERVICE,
               user: User = OPERATOR) -> Any:
    """A page of jobs, oldest first: an operator's own, every job for an admin (no options
    or counts; ask a job for those)."""
    equals: dict[str, Any] = {} if user.role == "admin" else {"owner": user.id}
    if status is not None:
        equals["status"] = status
    rows = await service.db.call(page_jobs, limit + 1, offset, **equals)
    return {"jobs": [summary(j) for j in rows[:limit]],
            "next_offset": offset + limit if len(rows) > limit else None}


async def job(job_id: str, service: Service = ON_SERVICE, user: User = OPERATOR) -> Any:
    """One job with its counts (done, failed, pending), tokens and cost."""
    return await service.runner.describe(await job_or_404(service, job_id, user))


async def cancel(job_id: str, request: Request, service: Service = ON_SERVICE,
                 user: User = OPERATOR) -> Any:
    """Cancel a queued or running job (a running one is stopped, its ledger kept)."""
    request.state.audit_target = job_id
    found = await job_or_404(service, job_id, user)
    if found["status"] in TERMINAL:
        raise HTTPException(409, f"job {job_id} has already {found['status']}")
    return await service.runner.describe(await service.runner.cancel(job_id), counts=False)


async def results(job_id: str, service: Service = ON_SERVICE, user: User = OPERATOR) -> Any:
    """The job's results as JSONL, streamed (its output file, or its kind's table)."""
    found = await job_or_404(service, job_id, user)
    chunks = await service.runner.results(found)
    if chunks is None:
        raise HTTPException(409, f"job {job_id} has no results yet ({found['status']})")
    return StreamingResponse(chunks, media_type="application/x-ndjson")


async def events(job_id: str, service: Service = ON_SERVICE, user: User = OPERATOR) -> Any:
    """Progress as server-sent events until the job ends."""
    await job_or_404(service, job_id, user)
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


async def endpoints(service: Service = ON_SERVICE, user: User = OPERATOR) -> Any:
    """The endpoints a job may name, with the models each serves (when the admin said)."""
    return {"endpoints": [{"name": e.name, "models": e.models, "embedded": e.url is None}
                          for e in service.runner.endpoints.values()]}


def job_routes() -> APIRouter:
    """The /v1/jobs and /v1/endpoints routes."""
    router = APIRouter(prefix="/v1", tags=["jobs"], responses=ERRORS)
    router.add_api_route("/endpoints", endpoints, methods=["GET"], response_model=EndpointList)
    router.add_api_route("/jobs", submit, methods=["POST"], status_code=201,
                         response_model=JobInfo,
                         responses={**BODY, 422: {"description": "Unknown kind or option, or "
                                                                 "options the CLI refuses"},
                                    429: {"model": Problem,
                                          "description": "Too many of your jobs are waiting"}})
    router.add_api_route("/jobs", jobs, methods=["GET"], response_model=JobList)
    router.add_api_route("/jobs/{job_id}", job, methods=["GET"], response_model=JobInfo,
                         responses=JOB_ERRORS)
    router.add_api_route("/jobs/{job_id}/cancel", cancel, methods=["POST"], response_model=JobInfo,
                         responses={**JOB_ERRORS, 409: {
                             "model": Problem, "description": "The job has already finished"}})
    router.add_api_route(
        "/jobs/{job_id}/results", results, methods=["GET"], response_class=StreamingResponse,
        responses={**JOB_ERRORS, 409: {"model": Problem, "description": "No results yet"},
                   200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                         "description": "JSONL, one result a line"}})
    router.add_api_route(
        "/jobs/{job_id}/events", events, methods=["GET"], response_class=StreamingResponse,
        responses={**JOB_ERRORS,
                   200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                         "description": "Server-sent events: `progress` while it runs, then "
                                        "`end`"}})
    return router
