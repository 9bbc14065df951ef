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
from pydantic import BaseModel

from align.labeling.votes import LabelBoard
from align.service.jobs import JobRunner
from datagen import store


class Problem(BaseModel):
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or wrong API key"}}
BODY: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "The body is not readable JSON"}}


class Service:
    """What the routes share: the database thread, the job runner and the label board."""

    def __init__(self, db_path: Path, workers: int, env: dict[str, str]) -> None:
        self.db = store.DBThread(db_path)
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


def service_of(request: Request) -> Service:
    """The Service of the app serving this request (a FastAPI dependency)."""
    return request.app.state.service
