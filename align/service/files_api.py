"""The upload routes of `rlaif service` (``/v1/files``): how a job's inputs arrive.

Plain functions behind the gate (operators and admins): ``POST /v1/files`` streams the raw
body (or a multipart form's file part) to disk under the upload limit and the caller's
remaining quota (``align.service.files``), ``GET /v1/files`` pages through the caller's
uploads, ``GET /v1/files/{id}`` and ``/content`` show one of them (another user's is a 404).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from align.service.auth import allow
from align.service.context import ERRORS, Problem, Service
from align.service.files import (
    BadUpload,
    TooLarge,
    clean_filename,
    get_file,
    multipart_file,
    receive_file,
    record_file,
    stored_bytes,
    user_files,
)
from align.service.jobs_api import ON_SERVICE
from align.service.users import User

OPERATOR = Depends(allow("operator"))
FILE_ERRORS = {**ERRORS, 404: {"model": Problem, "description": "No such file of yours"}}


class FileInfo(BaseModel):
    id: str
    filename: str
    bytes: int
    sha256: str
    created_at: float


class FileList(BaseModel):
    files: list[FileInfo]
    next_offset: int | None = Field(description="Offset of the next page; null on the last")


def _info(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("id", "filename", "bytes", "sha256", "created_at")}


async def upload(request: Request, filename: str = Query("upload", max_length=255),
                 service: Service = ON_SERVICE, user: User = OPERATOR) -> Any:
    """Upload a file (the raw request body, or the file part of a multipart form); jobs name
    it by the returned id."""
    settings = service.settings
    room = settings.user_bytes - await service.db.call(stored_bytes, user.id)
    limit = max(0, min(settings.upload_bytes, room))
    chunks, named = request.stream(), {"filename": filename}
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        named = {}
        chunks = multipart_file(chunks, content_type, named)
    try:
        file_id, path, size, digest = await receive_file(
            chunks, settings.data_dir / "files", limit)
    except TooLarge:
        why = ("the upload limit" if limit == settings.upload_bytes
               else "what is left of your storage quota")
        raise HTTPException(413, f"the file is over {why} ({limit} bytes)") from None
    except BadUpload as exc:
        raise HTTPException(400, str(exc)) from None
    row = await service.db.call(record_file, file_id, user.id,
                                clean_filename(named.get("filename")), size, digest, path)
    request.state.audit_target = file_id
    return _info(row)


async def files(limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=10**9),
                service: Service = ON_SERVICE, user: User = OPERATOR) -> Any:
    """A page of your uploads (everyone's for an admin), oldest first."""
    owner = None if user.role == "admin" else user.id
    rows = await service.db.call(user_files, owner, limit + 1, offset)
    return {"files": [_info(r) for r in rows[:limit]],
            "next_offset": offset + limit if len(rows) > limit else None}


async def file_or_404(service: Service, file_id: str, user: User) -> dict[str, Any]:
    """The upload's row if the user may read it, else HTTP 404."""
    row = await service.db.call(get_file, file_id)
    if row is None or (user.role != "admin" and row["owner"] != user.id):
        raise HTTPException(404, f"no file {file_id!r}")
    return row


async def file_info(file_id: str, service: Service = ON_SERVICE, user: User = OPERATOR) -> Any:
    """One upload's name, size and SHA-256."""
    return _info(await file_or_404(service, file_id, user))


async def file_content(file_id: str, service: Service = ON_SERVICE,
                       user: User = OPERATOR) -> Any:
    """One upload's bytes."""
    row = await file_or_404(service, file_id, user)
    return FileResponse(Path(row["path"]), media_type="application/octet-stream",
                        filename=row["filename"])


def file_routes() -> APIRouter:
    """The /v1/files routes."""
    router = APIRouter(prefix="/v1/files", tags=["files"], responses=ERRORS)
    router.add_api_route(
        "", upload, methods=["POST"], status_code=201, response_model=FileInfo,
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "file": {"type": "string", "format": "binary"}}, "required": ["file"]}}}}},
        responses={400: {"model": Problem, "description": "A multipart body with no file"},
                   413: {"model": Problem, "description": "Over the upload limit or quota"}})
    router.add_api_route("", files, methods=["GET"], response_model=FileList)
    router.add_api_route("/{file_id}", file_info, methods=["GET"], response_model=FileInfo,
                         responses=FILE_ERRORS)
    router.add_api_route(
        "/{file_id}/content", file_content, methods=["GET"], response_class=FileResponse,
        responses={**FILE_ERRORS, 200: {"content": {"application/octet-stream": {
            "schema": {"type": "string", "format": "binary"}}}, "description": "The bytes"}})
    return router
