"""`rlaif service`: the project over HTTP, for jobs and for people labelling pairs.

One FastAPI app on one project database. ``/v1/files`` (``align.service.files_api``) takes
uploads, ``/v1/jobs`` (``align.service.jobs_api``) accepts the same runs as the command line
(``align.service.workspace`` checks them with the CLI's own parser and keeps them in their
workspace; ``align.service.jobs`` runs each as a CLI process sharing the request ledger),
reports progress as JSON or server-sent events and streams results as JSONL. ``/label``
(``align.service.labels_api``) is the human labelling page. This module only puts the parts
together: the shared ``Service``, its start and stop, the routers, and the gate
(``align.service.auth``: host, body size, token, origin, audit) wrapped around all of them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from align.service.auth import Gate
from align.service.context import Service, Settings
from align.service.endpoints import Endpoint, endpoint_table
from align.service.files_api import file_routes
from align.service.jobs_api import job_routes
from align.service.labels_api import label_routes
from align.service.users_api import user_routes
from datagen import store


def create_app(db_path: str | Path, settings: Settings, env: dict[str, str] | None = None,
               endpoints: dict[str, Endpoint] | None = None) -> Any:
    """The service as an ASGI app (FastAPI inside the gate)."""
    env = dict(os.environ if env is None else env)
    target = db_path if store.is_postgres(db_path) else Path(db_path).resolve()
    service = Service(target, settings, env,
                      endpoints if endpoints is not None else endpoint_table([], env))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="rlaif service", version="1", lifespan=lifespan,
                  description="Jobs over the rlaif command line, and human preference labels. "
                              "Every request needs Authorization: Bearer TOKEN "
                              "(`rlaif service token create`).")
    app.state.service = service
    app.include_router(file_routes())
    app.include_router(job_routes())
    app.include_router(label_routes())
    app.include_router(user_routes())
    return Gate(app, service, settings.hosts, settings.upload_bytes)


__all__ = ["create_app"]
