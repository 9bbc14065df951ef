"""Reading JSONL input with ``FILE:LINE:`` errors, and writing output files atomically.

Every command reads user files of one JSON object per line and must name the file and line of
the first bad one as a one-line ``UserInputError``; every command must also leave nothing
half-written. Those two rules were written out again in each reader and writer, with small
drifts in wording and in what was checked, so they live here once, with the wording and the
strict-or-skip choice as parameters: ``read_objects`` for reading (``read_text`` or
``read_utf8`` for the file's text), ``atomic_write`` and ``write_jsonl`` for writing. Lines
are split at ``\\n``, ``\\r\\n`` and ``\\r`` only, as a file object does, so a JSON string
holding a raw U+2028 (which ``json.dumps`` with ``ensure_ascii=False`` writes as it is) stays
on its line.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, NamedTuple

from datagen.errors import UserInputError

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class ObjectLine(NamedTuple):
    """One JSON object of a JSONL file, with its 1-based line number and ``"FILE:LINE"``."""

    number: int
    where: str
    obj: dict[str, Any]


def read_text(path: Path, *, cannot_read: str = "cannot read") -> str:
    """The file's UTF-8 text; a file that cannot be opened or decoded is a UserInputError
    ``"FILE: cannot read: <reason>"`` (``cannot_read`` words the middle part)."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{path}: {cannot_read}: {exc}") from None


def read_utf8(path: Path, *, expected: str | None = None, reject_binary: bool = False) -> str:
    """The file's UTF-8 text, with short errors: ``"FILE: cannot read: <strerror>"`` and
    ``"FILE: not UTF-8 text (byte N)"``. With ``expected`` a directory is refused first as
    ``"FILE: is a directory, expected <expected>"``; with ``reject_binary`` a file holding a NUL
    byte is refused as binary."""
    if expected is not None and path.is_dir():
        raise UserInputError(f"{path}: is a directory, expected {expected}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserInputError(f"{path}: cannot read: {exc.strerror}") from None
    if reject_binary and b"\x00" in data:
        raise UserInputError(f"{path}: looks like a binary file, expected JSONL text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserInputError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def numbered_lines(path: str | Path, text: str) -> Iterator[tuple[int, str, str]]:
    """``(line number, "FILE:LINE", line)`` for each non-blank line of ``text``."""
    for number, raw in enumerate(_LINE_BREAK.split(text), start=1):
        if raw.strip():
            yield number, f"{path}:{number}", raw


def parse_json(raw: str, where: str, *, not_json: str = "not valid JSON") -> Any:
    """One line's JSON value; ``"WHERE: <not_json> (<reason>)"`` when it is not JSON."""
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise UserInputError(f"{where}: {not_json} ({exc.msg})") from None


def parse_object(
    raw: str, where: str, *, not_json: str = "not valid JSON",
    not_object: str = "expected a JSON object",
) -> dict[str, Any]:
    """One line's JSON object; ``"WHERE: <not_object>"`` for any other value."""
    obj = parse_json(raw, where, not_json=not_json)
    if not isinstance(obj, dict):
        raise UserInputError(f"{where}: {not_object}")
    return obj


def read_objects(
    path: Path, text: str | None = None, *, empty_message: str | None,
    not_json: str = "not valid JSON", not_object: str = "expected a JSON object",
    skipped: list[str] | None = None,
) -> Iterator[ObjectLine]:
    """The JSON objects of a JSONL file, in order, skipping blank lines.

    ``text`` is the file's content when the caller has read it (to word read errors its own
    way); otherwise it is read with ``read_text``. Objects are parsed one at a time as they
    are consumed, so the caller's own checks of a line run before later lines are parsed and
    the error names the first bad line. ``not_json`` and ``not_object`` word the two line
    errors (``"WHERE: <not_json> (<reason>)"``, ``"WHERE: <not_object>"``). Strict by default:
    the first bad line raises; with a ``skipped`` list its message is appended there instead
    and reading goes on. A file without any non-blank line raises
    ``UserInputError(empty_message)`` once exhausted, unless ``empty_message`` is None."""
    if text is None:
        text = read_text(path)
    found = False
    for number, where, raw in numbered_lines(path, text):
        found = True
        try:
            obj = parse_object(raw, where, not_json=not_json, not_object=not_object)
        except UserInputError as exc:
            if skipped is None:
                raise
            skipped.append(exc.message)
            continue
        yield ObjectLine(number, where, obj)
    if not found and empty_message is not None:
        raise UserInputError(empty_message)


def note_unique(seen: dict[str, int], key: str, number: int, where: str, *, what: str) -> None:
    """Record in ``seen`` that ``key`` is on line ``number``; a key that an earlier line had is
    a UserInputError ``"WHERE: duplicate <what> 'key' (first on line N)"``."""
    if key in seen:
        raise UserInputError(f"{where}: duplicate {what} {key!r} (first on line {seen[key]})")
    seen[key] = number


@contextmanager
def atomic_write(path: str | Path) -> Iterator[IO[str]]:
    """A UTF-8 text handle whose content appears at ``path`` only if the block finishes
    without an error: it is written to a temporary file in the same folder, synced and
    renamed over ``path``; on any error the temporary file is removed and ``path`` is left as
    it was. A directory at ``path`` is a UserInputError ``"FILE: is a directory"``, a folder
    that cannot be written ``"FILE: cannot write (<reason>)"``. ``handle.name`` is the
    temporary file's path, for a caller that reads back what it wrote before it is renamed."""
    path = Path(path)
    if path.is_dir():
        raise UserInputError(f"{path}: is a directory")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        handle = tmp.open("w", encoding="utf-8")
    except OSError as exc:
        raise UserInputError(f"{path}: cannot write ({exc.strerror})") from None
    try:
        with handle as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write rows as JSONL (UTF-8, non-ASCII kept as is), atomically (see ``atomic_write``)."""
    with atomic_write(path) as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
