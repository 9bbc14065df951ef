"""What every route of `rlaif service` shares: the database thread, the job runner, the label
board, and the error shapes the API documents.

Routes are plain functions (``align.service.jobs_api``, ``align.service.labels_api``) that get
the ``Service`` through the ``service_of`` dependency from the app's state, so nothing is held
in module globals and each app made by ``create_app`` has its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from pydantic import BaseModel, Field

from align.labeling.votes import LabelBoard
from align.service.endpoints import Endpoint
from align.service.jobs import JobLimits, JobRunner
from datagen import store


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
    settings."""

    def __init__(self, db_path: Path, settings: Settings, env: dict[str, str],
                 endpoints: dict[str, Endpoint]) -> None:
        self.db = store.DBThread(db_path)
        self.settings = settings
        self.runner = JobRunner(
            self.db, db_path, settings.data_dir, settings.workers, env, endpoints,
            JobLimits(settings.job_memory_bytes, settings.job_seconds))
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


def service_of(request: Request) -> Service:
    """The Service of the app serving this request (a FastAPI dependency)."""
    return request.app.state.service
