"""Files uploaded to `rlaif service`: the only way a job's inputs arrive.

A job may not read a path of the service's machine, so its inputs are uploaded first
(``POST /v1/files``, as OpenAI's Files API does: the raw body, or the ``file`` part of a
``multipart/form-data`` body, read by python-multipart's streaming parser) and named by the
returned id. The bytes are streamed to disk under ``DATA_DIR/files`` in chunks, never held
in memory, their size checked against the upload limit and the owner's remaining quota as
they arrive (a body over either is dropped and answered 413) and their SHA-256 computed on
the way; only then is the row written to ``service_files``. A file belongs to its uploader
(admins may read any).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from python_multipart.exceptions import ParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from datagen import store
from datagen.store import tables

FILES = tables.SERVICE_FILES
CHUNK = 1 << 16


class TooLarge(Exception):
    """An upload went past the limit it was given."""


class BadUpload(Exception):
    """A multipart body that holds no file."""


async def multipart_file(chunks: AsyncIterator[bytes], content_type: str,
                         found: dict[str, str]) -> AsyncIterator[bytes]:
    """The bytes of the first part of a multipart/form-data body that carries a filename, as
    they arrive (its filename goes into ``found``); other parts are skipped."""
    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise BadUpload("a multipart body needs a boundary")
    part: dict[str, Any] = {"headers": {}, "field": b"", "value": b"", "file": False}
    out: list[bytes] = []

    def header_end() -> None:
        part["headers"][part["field"].lower()] = part["value"]
        part["field"], part["value"] = b"", b""

    def headers_done() -> None:
        disposition = parse_options_header(part["headers"].get(b"content-disposition", b""))
        filename = disposition[1].get(b"filename")
        part["file"] = filename is not None and "filename" not in found
        if part["file"]:
            found["filename"] = filename.decode("utf-8", "replace")

    callbacks = {
        "on_part_begin": lambda: part.update(headers={}, file=False),
        "on_header_field": lambda d, a, b: part.update(field=part["field"] + d[a:b]),
        "on_header_value": lambda d, a, b: part.update(value=part["value"] + d[a:b]),
        "on_header_end": header_end,
        "on_headers_finished": headers_done,
        "on_part_data": lambda d, a, b: out.append(bytes(d[a:b])) if part["file"] else None,
    }
    parser = MultipartParser(boundary, callbacks, max_header_size=4096)
    try:
        async for chunk in chunks:
            parser.write(chunk)
            if out:
                yield b"".join(out)
                out.clear()
        parser.finalize()
    except ParseError as exc:  # a malformed body is the caller's mistake (400), not ours (500)
        raise BadUpload(f"malformed multipart body: {exc}") from None
    if "filename" not in found:
        raise BadUpload("the multipart body has no file part")


def clean_filename(name: str | None) -> str:
    """A display name for an upload: its last path part, safe characters only."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._")[:200]
    return base or "upload"


async def receive_file(chunks: AsyncIterator[bytes], folder: Path, limit: int
                       ) -> tuple[str, Path, int, str]:
    """Stream an upload into ``folder``: (file id, path, bytes, sha256); raises TooLarge
    (leaving nothing behind) once more than ``limit`` bytes arrive."""
    folder.mkdir(parents=True, exist_ok=True)
    file_id = "file-" + secrets.token_hex(8)
    path = folder / file_id
    digest, size = hashlib.sha256(), 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise TooLarge
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return file_id, path, size, digest.hexdigest()


def record_file(db: Any, file_id: str, owner: str, filename: str, size: int, sha256: str,
                path: Path) -> dict[str, Any]:
    """Write an upload's row; return it."""
    row = {"id": file_id, "owner": owner, "filename": filename, "bytes": size,
           "sha256": sha256, "path": str(path), "job_id": None, "created_at": time.time()}
    store.save_rows(db, FILES, [row], pk="id")
    return row


def stored_bytes(db: Any, owner: str) -> int:
    """Bytes a user's uploads take."""
    return int(store.sum_column(db, FILES, "bytes", owner=owner))


def get_file(db: Any, file_id: str) -> dict[str, Any] | None:
    """One upload's row, or None."""
    rows = store.load_rows(db, FILES, id=file_id)
    return rows[0] if rows else None


def user_files(db: Any, owner: str | None, limit: int, offset: int) -> list[dict[str, Any]]:
    """A page of a user's uploads (everyone's for None), oldest first."""
    equals = {} if owner is None else {"owner": owner}
    return store.load_page(db, FILES, "created_at, rowid", limit, offset, **equals)


def readable_files(db: Any, owner: str | None, ids: list[str]) -> dict[str, Path]:
    """Of the named uploads, those the user may use (all for None), id -> path."""
    out = {}
    for file_id in ids:
        row = get_file(db, file_id)
        if row is not None and (owner is None or row["owner"] == owner):
            out[file_id] = Path(row["path"])
    return out
