"""What every route of `rlaif service` shares: the database thread, the job runner, the label
board, and the error shapes the API documents.

Routes are plain functions (``align.service.jobs_api``, ``align.service.labels_api``) that get
the ``Service`` through the ``service_of`` dependency from the app's state, so nothing is held
in module globals and each app made by ``create_app`` has its own.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from fastapi import Request
from pydantic import BaseModel, Field

from align.labeling.votes import LabelBoard
from align.service.endpoints import Endpoint
from align.service.jobs import JobLimits, JobRunner
from align.service.users import User, authenticate, token_hash
from datagen import store
from datagen.store import tables

AUDIT_FLUSH_S = 0.25
AUTH_CACHE_S = 2.0  # a revoked token stops working at most this long after `token revoke`
AUTH_CACHE_SIZE = 10_000


class Problem(BaseModel):
    detail: str


def problem(description: str) -> dict[str, Any]:
    """An error response as documented: JSON ``{"detail": ...}`` whatever the route serves."""
    return {"description": description, "content": {"application/json": {"schema": {
        "type": "object", "properties": {"detail": {}}, "required": ["detail"]}}}}


ERRORS: dict[int | str, dict[str, Any]] = {
    401: problem("Missing, wrong or revoked token"),
    403: problem("The token's role may not do this")}
BODY: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "The body is not readable JSON"}}


class Settings(BaseModel):
    """The service's limits and places, set at start (`rlaif service` options)."""

    data_dir: Path
    workers: int = 2
    hosts: frozenset[str] = frozenset({"127.0.0.1", "localhost", "::1"})
    upload_bytes: int = Field(default=256 << 20, description="Largest upload")
    user_bytes: int = Field(default=2 << 30, description="Uploads one user may keep")
    user_jobs: int = Field(default=20, description="Queued or running jobs one user may have")
    job_memory_bytes: int | None = Field(default=None, description="RLIMIT_AS of a job")
    job_seconds: float | None = Field(default=None, description="Wall-clock limit of a job")


class Service:
    """What the routes share: the database thread, the job runner, the label board and the
    settings; token checks run on a second connection of their own (SQLite readers do not
    wait for the writer), so authentication does not queue behind votes and jobs."""

    def __init__(self, db_path: Path | str, settings: Settings, env: dict[str, str],
                 endpoints: dict[str, Endpoint]) -> None:
        self.db = store.DBThread(db_path)
        self.auth_db = store.DBThread(db_path)  # token checks read beside the writer
        self.settings = settings
        self.runner = JobRunner(
            self.db, db_path, settings.data_dir, settings.workers, env, endpoints,
            JobLimits(settings.job_memory_bytes, settings.job_seconds))
        self.board: LabelBoard | None = None
        self._audit: list[dict[str, Any]] = []
        self._known: dict[str, tuple[User | None, float]] = {}  # token hash -> (user, read at)
        self._flusher: asyncio.Task | None = None

    async def start(self) -> None:
        self.board = await self.db.call(LabelBoard)
        await self.runner.start()
        self._flusher = asyncio.create_task(self._flush_every(AUDIT_FLUSH_S))

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        await self.runner.stop()
        await self.flush_audit()
        self.db.close()
        self.auth_db.close()

    async def user_for(self, secret: str) -> User | None:
        """A token's (or session's) user, read again once the last reading is AUTH_CACHE_S
        old; None for an unknown, revoked or expired one."""
        digest = token_hash(secret)
        cached = self._known.get(digest)
        if cached is not None and time.monotonic() - cached[1] < AUTH_CACHE_S:
            return cached[0]
        user = await self.auth_db.call(authenticate, secret)
        if len(self._known) >= AUTH_CACHE_SIZE:
            self._known.clear()
        self._known[digest] = (user, time.monotonic())
        return user

    def forget(self, secret: str) -> None:
        """Drop a token's cached user (a session that has just ended)."""
        self._known.pop(token_hash(secret), None)

    def audit(self, row: dict[str, Any]) -> None:
        """Note a state-changing request; rows are written together, a moment later, so a
        busy service pays one transaction for many of them."""
        self._audit.append(row)

    async def flush_audit(self) -> None:
        """Write the audit rows noted so far."""
        rows, self._audit = self._audit, []
        if rows:
            await self.db.call(store.save_rows, tables.SERVICE_AUDIT, rows)

    async def _flush_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            await self.flush_audit()

    async def on_board(self, method: str, *args: Any) -> Any:
        """Call a LabelBoard method on the database thread."""
        return await self.db.call(lambda _db: getattr(self.board, method)(*args))


def service_of(request: Request) -> Service:
    """The Service of the app serving this request (a FastAPI dependency)."""
    return request.app.state.service
