"""A small HTTP/1.1 client transport for `datagen.endpoint.client`, built on asyncio protocols.

Why not aiohttp or httpx: at 256 requests in flight on a 2-core machine, their per-request
work (150-250 µs for aiohttp, milliseconds for httpx) keeps the event loop busy enough to
fall well short of the endpoint's speed. Model APIs need very little of HTTP: a POST with a
JSON body, a JSON reply with Content-Length or chunked encoding, keep-alive. This module does
exactly that over a pool of persistent connections (TLS included, via asyncio's ssl
support), in about 60 µs per request. It is private to `datagen.endpoint.client`, the only module
that talks to a model, and serves plain-http endpoints that no proxy applies to; https and
proxied endpoints go through ``_httpx.py``.
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit


class HTTPProtocolError(ConnectionError):
    """The server's reply was not valid HTTP/1.1, or the connection broke mid-reply."""


class _Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class _Connection(asyncio.Protocol):
    """One keep-alive connection; parses one response at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False
        self.received_any = False
        self._head: tuple[int, dict[str, str]] | None = None
        self._body_start = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            if self._head is not None and not self._has_length():
                self._finish(bytes(self.buffer[self._body_start:]))  # body delimited by close
            else:
                self.waiter.set_exception(
                    HTTPProtocolError("connection closed before the reply was complete"))

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        self.buffer += data
        if self.waiter is None or self.waiter.done():
            return
        try:
            self._parse()
        except (HTTPProtocolError, ValueError) as exc:
            self.waiter.set_exception(HTTPProtocolError(str(exc)))

    def start(self, loop: asyncio.AbstractEventLoop, data: bytes) -> asyncio.Future:
        self.buffer.clear()
        self._head = None
        self.received_any = False
        self.waiter = loop.create_future()
        self.transport.write(data)
        return self.waiter

    def _has_length(self) -> bool:
        headers = self._head[1]
        return "content-length" in headers or "chunked" in headers.get("transfer-encoding", "")

    def _parse(self) -> None:
        if self._head is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > 65536:
                    raise HTTPProtocolError("response headers too large")
                return
            self._head = _parse_head(bytes(self.buffer[:end]))
            self._body_start = end + 4
            if self._head[0] in (100, 103):  # informational: wait for the real reply
                del self.buffer[: self._body_start]
                self._head = None
                self._parse()
                return
        headers = self._head[1]
        if "chunked" in headers.get("transfer-encoding", ""):
            body = _dechunk(self.buffer, self._body_start)
            if body is not None:
                self._finish(body)
        elif "content-length" in headers:
            size = int(headers["content-length"])
            if len(self.buffer) - self._body_start >= size:
                self._finish(bytes(self.buffer[self._body_start:self._body_start + size]))

    def _finish(self, body: bytes) -> None:
        status, headers = self._head
        if not self.waiter.done():
            self.waiter.set_result(_Response(status, headers, body))


def _parse_head(raw: bytes) -> tuple[int, dict[str, str]]:
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HTTPProtocolError(f"bad status line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


def _dechunk(buffer: bytearray, start: int) -> bytes | None:
    """The body of a complete chunked reply, or None while more data is needed."""
    out = bytearray()
    pos = start
    while True:
        line_end = buffer.find(b"\r\n", pos)
        if line_end < 0:
            return None
        try:
            size = int(bytes(buffer[pos:line_end]).split(b";")[0], 16)
        except ValueError:
            raise HTTPProtocolError("bad chunk size") from None
        if size == 0:  # last chunk; then optional trailers and an empty line
            done = (buffer[line_end + 2:line_end + 4] == b"\r\n"
                    or buffer.find(b"\r\n\r\n", line_end + 2) >= 0)
            return bytes(out) if done else None
        chunk_start = line_end + 2
        if len(buffer) < chunk_start + size + 2:
            return None
        out += buffer[chunk_start:chunk_start + size]
        pos = chunk_start + size + 2


class ConnectionPool:
    """Persistent HTTP/1.1 connections to one origin, at most ``limit`` at a time."""

    def __init__(self, base_url: str, limit: int) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported base URL {base_url!r}")
        self.host = parts.hostname
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self.prefix = parts.path.rstrip("/")
        default_port = self.port == (443 if self.tls else 80)
        self.host_header = self.host if default_port else f"{self.host}:{self.port}"
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(limit)
        self._ssl = ssl.create_default_context() if self.tls else None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            _Connection, self.host, self.port, ssl=self._ssl,
            server_hostname=self.host if self.tls else None)
        return conn

    async def post(
        self, path: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> tuple[int, dict[str, str], bytes]:
        """POST ``body`` to ``prefix + path``; return (status, lower-cased headers, body)."""
        head = [f"POST {self.prefix}{path} HTTP/1.1", f"Host: {self.host_header}",
                f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        return await self.request(data, timeout)

    async def get(self, path: str, headers: dict[str, str], timeout: float
                  ) -> tuple[int, dict[str, str], bytes]:
        head = [f"GET {self.prefix}{path} HTTP/1.1", f"Host: {self.host_header}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        return await self.request(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"), timeout)

    async def request(self, data: bytes, timeout: float) -> tuple[int, dict[str, str], bytes]:
        async with self._slots:
            async with asyncio.timeout(timeout):
                conn, reused = self._take_idle()
                if conn is None:
                    conn = await self._connect()
                try:
                    response = await conn.start(asyncio.get_running_loop(), data)
                except HTTPProtocolError:
                    # A kept-alive connection the server had already closed: the request
                    # never reached it, so send it once more on a fresh connection.
                    conn.transport.abort()
                    if not (reused and not conn.received_any):
                        raise
                    conn = await self._connect()
                    response = await conn.start(asyncio.get_running_loop(), data)
                except BaseException:
                    conn.transport.abort()
                    raise
            if response.headers.get("connection", "").lower() == "close" or conn.closed:
                conn.transport.close()
            else:
                self._idle.append(conn)
            return response.status, response.headers, response.body

    def _take_idle(self) -> tuple[_Connection | None, bool]:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn, True
        return None, False

    def close(self) -> None:
        """Close every idle connection."""
        for conn in self._idle:
            conn.transport.close()
        self._idle.clear()

    async def aclose(self) -> None:
        """``close``, awaitable like the httpx transport's."""
        self.close()
