"""`rlaif service`: the project over HTTP, for jobs and for people labelling pairs.

One FastAPI app on one project database. ``/v1/jobs`` accepts the same runs as the command line
(``align.commands`` validates them with the CLI's own parser and ``align.service.jobs`` runs each as
a CLI process sharing the request ledger), reports progress as JSON or server-sent events and
streams results as JSONL. ``/label`` is the human labelling page: plain HTML and a small script,
every model-written text put on the page as text, never as markup, under a content security
policy that allows no inline script. When the service is bound beyond loopback, or told to,
every request must carry the API key (``Authorization: Bearer KEY``, ``X-API-Key: KEY``, or for
a browser ``?key=KEY`` once, which sets a cookie); only the key's SHA-256 is kept and compared
in constant time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, Query
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from align.commands import KINDS, JobOptionError
from align.labeling import pages as label_pages
from align.labeling.queue import QueueItem, Vote, enqueue, instructions, put_setting
from align.labeling.votes import LabelBoard
from align.service.jobs import TERMINAL, JobRunner, SerialDB, get_job, list_jobs
from judges.pairs import prompt_text

STATIC = Path(__file__).parents[1] / "labeling" / "static"
COOKIE = "rlaif_key"
EVENT_INTERVAL_S = 0.5
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'self'")
PAGE_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
JobKindName = Literal["batch", "self-instruct", "flan", "constitutional", "responses", "label",
                      "constrained", "pipeline"]


def key_hash(key: str) -> bytes:
    """What the service keeps of an API key."""
    return hashlib.sha256(key.encode()).digest()


# --- API models -----------------------------------------------------------------------------------


class JobRequest(BaseModel):
    """A job: a kind and its options, named as the command line names them."""

    model_config = ConfigDict(extra="forbid")

    kind: JobKindName
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
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
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


class Problem(BaseModel):
    detail: str


class ItemOut(BaseModel):
    id: str
    prompt: str
    responses: list[str]


class Progress(BaseModel):
    items: int
    complete: int
    votes: int
    mine: int | None = None


class NextOut(BaseModel):
    item: ItemOut | None
    progress: Progress


class VoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_id: str = Field(min_length=1, max_length=64)
    annotator: str = Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")
    choice: Literal["a", "b", "tie", "fail", "rank"]
    ranking: list[int] | None = Field(default=None, max_length=26)
    note: str = Field(default="", max_length=4000)


class VoteOut(BaseModel):
    stored: bool
    progress: Progress


class InstructionsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(max_length=100_000)


class ItemsIn(BaseModel):
    """Pairs to put on the human queue (as `rlaif label-queue` reads them from files)."""

    model_config = ConfigDict(extra="forbid")

    pairs: list[dict[str, Any]] = Field(default_factory=list, max_length=10_000)
    gold: list[dict[str, Any]] = Field(default_factory=list, max_length=10_000)
    annotators_per_pair: int = Field(default=3, ge=1, le=100)


class ItemsOut(BaseModel):
    added: int


ERRORS = {401: {"model": Problem, "description": "Missing or wrong API key"}}
BODY = {400: {"model": Problem, "description": "The body is not readable JSON"}}
JOB_ERRORS = {**ERRORS, 404: {"model": Problem, "description": "No such job"}}


# --- authentication -----------------------------------------------------------------------------


class KeyCheck:
    """ASGI middleware: every request must carry the key whose SHA-256 is ``digest``."""

    def __init__(self, app: Any, digest: bytes | None) -> None:
        self.app = app
        self.digest = digest

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.digest is None:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given = _presented_key(headers, scope.get("query_string", b"").decode("latin-1"))
        if given is None or not hmac.compare_digest(key_hash(given[0]), self.digest):
            response = JSONResponse({"detail": "missing or wrong API key"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        if given[1] == "query":  # a browser's first visit: keep the key in a cookie
            await self.app(scope, receive, _with_cookie(send, given[0]))
            return
        await self.app(scope, receive, send)


def _presented_key(headers: dict[str, str], query: str) -> tuple[str, str] | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip(), "header"
    if "x-api-key" in headers:
        return headers["x-api-key"].strip(), "header"
    cookie = SimpleCookie()
    try:
        cookie.load(headers.get("cookie", ""))
    except Exception:  # a malformed cookie header is no key
        cookie = SimpleCookie()
    if COOKIE in cookie:
        return cookie[COOKIE].value, "cookie"
    values = parse_qs(query).get("key")
    return (values[0], "query") if values else None


def _with_cookie(send: Any, key: str) -> Any:
    async def wrapped(message: dict) -> None:
        if message["type"] == "http.response.start":
            cookie = f"{COOKIE}={key}; Path=/; HttpOnly; SameSite=Strict"
            message["headers"] = [*message.get("headers", []),
                                  (b"set-cookie", cookie.encode("latin-1"))]
        await send(message)

    return wrapped


# --- the app --------------------------------------------------------------------------------------


class Service:
    """What the routes share: the database thread, the job runner and the label board."""

    def __init__(self, db_path: Path, workers: int, env: dict[str, str]) -> None:
        self.db = SerialDB(db_path)
        self.runner = JobRunner(self.db, db_path, workers, env)
        self.board: LabelBoard | None = None

    async def start(self) -> None:
        self.board = await self.db.call(LabelBoard)
        await self.runner.start()

    async def stop(self) -> None:
        await self.runner.stop()
        self.db.close()

    async def on_board(self, method: str, *args: Any) -> Any:
        """Call a LabelBoard method on the database thread."""
        return await self.db.call(lambda _db: getattr(self.board, method)(*args))


def create_app(db_path: str | Path, workers: int = 2, key_digest: bytes | None = None,
               env: dict[str, str] | None = None) -> Any:
    """The service as an ASGI app (FastAPI inside the key check)."""
    service = Service(Path(db_path).resolve(), workers, dict(os.environ if env is None else env))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="rlaif service", version="1", lifespan=lifespan,
                  description="Jobs over the rlaif command line, and human preference labels.")
    app.state.service = service
    app.include_router(_job_routes(service))
    app.include_router(_label_routes(service))
    return KeyCheck(app, key_digest)


def _job_routes(service: Service) -> APIRouter:
    router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=ERRORS)
    runner = service.runner

    async def job_or_404(job_id: str) -> dict[str, Any] | JSONResponse:
        job = await service.db.call(get_job, job_id)
        return job if job is not None else JSONResponse({"detail": f"no job {job_id!r}"}, 404)

    @router.post("", status_code=201, response_model=JobInfo, responses={
        **BODY, 422: {"description": "Unknown kind or option, or options the CLI refuses"}})
    async def submit(body: JobRequest) -> Any:
        """Queue a job; 422 names the kind or option the command line would refuse."""
        try:
            job = await runner.submit(body.kind, body.options)
        except JobOptionError as exc:
            loc = ["body", "kind"] if exc.name == "kind" else ["body", "options", exc.name]
            return JSONResponse({"detail": [{"loc": loc, "msg": exc.message,
                                             "type": "invalid_option", "input": exc.value}]},
                                status_code=422)
        return await runner.describe(job, counts=False)

    @router.get("", response_model=JobList)
    async def jobs(status: Literal["queued", "running", "succeeded", "failed",
                                   "cancelled"] | None = None) -> Any:
        """Every job, oldest first (without counts; ask a job for those)."""
        rows = await service.db.call(list_jobs)
        return {"jobs": [await runner.describe(j, counts=False) for j in rows
                         if status is None or j["status"] == status]}

    @router.get("/{job_id}", response_model=JobInfo, responses=JOB_ERRORS)
    async def job(job_id: str) -> Any:
        """One job with its counts (done, failed, pending), tokens and cost."""
        found = await job_or_404(job_id)
        return found if isinstance(found, JSONResponse) else await runner.describe(found)

    @router.post("/{job_id}/cancel", response_model=JobInfo, responses={
        **JOB_ERRORS, 409: {"model": Problem, "description": "The job has already finished"}})
    async def cancel(job_id: str) -> Any:
        """Cancel a queued or running job (a running one is stopped, its ledger kept)."""
        found = await job_or_404(job_id)
        if isinstance(found, JSONResponse):
            return found
        if found["status"] in TERMINAL:
            return JSONResponse({"detail": f"job {job_id} has already {found['status']}"}, 409)
        return await runner.describe(await runner.cancel(job_id), counts=False)

    @router.get("/{job_id}/results", response_class=StreamingResponse, responses={
        **JOB_ERRORS, 409: {"model": Problem, "description": "No results yet"},
        200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}}},
              "description": "JSONL, one result a line"}})
    async def results(job_id: str) -> Any:
        """The job's results as JSONL, streamed (its output file, or its kind's table)."""
        found = await job_or_404(job_id)
        if isinstance(found, JSONResponse):
            return found
        chunks = await runner.results(found)
        if chunks is None:
            return JSONResponse({"detail": f"job {job_id} has no results yet "
                                           f"({found['status']})"}, 409)
        return StreamingResponse(chunks, media_type="application/x-ndjson")

    @router.get("/{job_id}/events", response_class=StreamingResponse, responses={
        **JOB_ERRORS,
        200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
              "description": "Server-sent events: `progress` while it runs, then `end`"}})
    async def events(job_id: str) -> Any:
        """Progress as server-sent events until the job ends."""
        found = await job_or_404(job_id)
        if isinstance(found, JSONResponse):
            return found
        return StreamingResponse(_job_events(service, job_id), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    return router


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


def _page(path: Path) -> FileResponse:
    return FileResponse(path, headers=PAGE_HEADERS)


def _label_routes(service: Service) -> APIRouter:
    router = APIRouter(prefix="/label", tags=["labels"], responses=ERRORS)

    @router.get("", response_class=HTMLResponse)
    async def label_page() -> Any:
        """The labelling page."""
        return _page(STATIC / "label.html")

    @router.get("/label.js", response_class=FileResponse)
    async def label_script() -> Any:
        return FileResponse(STATIC / "label.js", media_type="text/javascript",
                            headers={"X-Content-Type-Options": "nosniff"})

    @router.get("/instructions", response_class=HTMLResponse)
    async def instructions_page() -> Any:
        """The annotator instructions, editable by the team."""
        text = await service.db.call(instructions)
        return HTMLResponse(label_pages.instructions_page(text), headers=PAGE_HEADERS)

    @router.get("/stats", response_class=HTMLResponse)
    async def stats_page() -> Any:
        """Agreement between annotators (Fleiss' and mean pairwise Cohen's kappa) and between
        the judge and the human consensus, with a calibration plot."""
        stats = await service.on_board("stats")
        return HTMLResponse(label_pages.stats_page(stats), headers=PAGE_HEADERS)

    @router.get("/api/instructions", response_model=InstructionsBody)
    async def get_instructions() -> Any:
        return {"text": await service.db.call(instructions)}

    @router.put("/api/instructions", response_model=InstructionsBody, responses=BODY)
    async def put_instructions(body: InstructionsBody) -> Any:
        await service.db.call(put_setting, "instructions", body.text)
        return {"text": body.text}

    @router.get("/api/next", response_model=NextOut)
    async def next_item(annotator: str = Query(min_length=1, max_length=64,
                                               pattern=r"^[^\x00-\x1f\x7f]+$")) -> Any:
        """The next item for this annotator (null when the queue has nothing for them)."""
        item, progress = await service.db.call(
            lambda _db: (service.board.next_item(annotator), service.board.progress(annotator)))
        shown = None if item is None else {"id": item.id, "prompt": prompt_text(item.prompt),
                                           "responses": item.responses}
        return {"item": shown, "progress": progress}

    @router.post("/api/votes", response_model=VoteOut, responses={
        **BODY,
        404: {"model": Problem, "description": "No such item"},
        422: {"description": "A vote that does not fit the item"}})
    async def vote(body: VoteIn) -> Any:
        """Store a vote (the annotator's earlier vote on the item is replaced)."""
        try:
            progress = await service.on_board("record", Vote(**body.model_dump()))
        except KeyError:
            return JSONResponse({"detail": f"no item {body.item_id!r}"}, 404)
        except ValueError as exc:
            return JSONResponse({"detail": [{"loc": ["body", "choice"], "msg": str(exc),
                                             "type": "value_error"}]}, 422)
        return {"stored": True, "progress": progress}

    @router.post("/api/items", response_model=ItemsOut, responses={
        **BODY,
        422: {"description": "A pair that cannot be queued"}})
    async def add_items(body: ItemsIn) -> Any:
        """Put pairs (and hidden gold pairs) on the queue."""
        from datagen.errors import UserInputError

        try:
            items = _queue_items(body)
        except UserInputError as exc:
            return JSONResponse({"detail": [{"loc": ["body"], "msg": exc.message,
                                             "type": "value_error"}]}, 422)
        added = await service.db.call(enqueue, items)
        return {"added": added}

    @router.get("/api/stats")
    async def stats() -> dict[str, Any]:
        """The numbers behind /label/stats, as JSON."""
        return await service.on_board("stats")

    @router.get("/api/export", response_class=StreamingResponse, responses={
        200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}}},
              "description": "Pairs with their human label, one JSON object a line"}})
    async def export() -> Any:
        """Every queued pair with its votes and ``human`` consensus label, as JSONL."""
        await service.on_board("refresh")
        rows = await service.on_board("export")
        return StreamingResponse(
            iter([json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows]),
            media_type="application/x-ndjson")

    return router


def _queue_items(body: ItemsIn) -> list[QueueItem]:
    from align.labeling.queue import queue_item

    items = [queue_item(obj, f"pairs[{i}]", False, body.annotators_per_pair)
             for i, obj in enumerate(body.pairs)]
    items += [queue_item(obj, f"gold[{i}]", True, body.annotators_per_pair)
              for i, obj in enumerate(body.gold)]
    return items


__all__ = ["KINDS", "create_app", "key_hash"]
