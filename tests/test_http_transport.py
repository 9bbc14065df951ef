"""The private HTTP/1.1 transport against a raw socket server speaking odd-but-legal HTTP."""

from __future__ import annotations

import asyncio

import pytest

from datagen.endpoint._http import ConnectionPool, HTTPProtocolError

BODY = b'{"choices": []}'


async def serve(reply: bytes, close_after: bool = False):
    """A one-reply-per-request raw server; returns (server, base_url, seen requests)."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]) \
                if b"Content-Length" in head else 0
            seen.append(head + await reader.readexactly(length))
            writer.write(reply)
            await writer.drain()
            if close_after:
                writer.close()
                return

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/v1", seen


def run(coro):
    return asyncio.run(coro)


def test_content_length_reply_and_keep_alive():
    async def go():
        reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
        server, url, seen = await serve(reply)
        pool = ConnectionPool(url, 4)
        for _ in range(3):
            status, headers, body = await pool.post("/chat/completions", b"{}", {}, 5)
            assert (status, body) == (200, BODY)
        assert seen[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
        assert len(pool._idle) == 1  # one connection reused for all three
        pool.close()
        server.close()

    run(go())


def test_chunked_reply_with_split_chunks():
    async def go():
        reply = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\n{\"cho\r\na;ext=1\r\nices\": []}\r\n0\r\n\r\n")
        server, url, _ = await serve(reply)
        pool = ConnectionPool(url, 1)
        status, _, body = await pool.post("/completions", b"{}", {}, 5)
        assert status == 200 and body == BODY
        server.close()

    run(go())


def test_reply_delimited_by_close_and_headers_lowercased():
    async def go():
        reply = b"HTTP/1.1 429 Too Many\r\nRetry-After: 3\r\nConnection: close\r\n\r\n" + BODY
        server, url, _ = await serve(reply, close_after=True)
        pool = ConnectionPool(url, 1)
        status, headers, body = await pool.post("/completions", b"{}", {}, 5)
        assert status == 429 and headers["retry-after"] == "3" and body == BODY
        assert pool._idle == []
        server.close()

    run(go())


def test_garbage_reply_is_a_protocol_error():
    async def go():
        server, url, _ = await serve(b"SSH-2.0-OpenSSH\r\n\r\n", close_after=True)
        pool = ConnectionPool(url, 1)
        with pytest.raises(HTTPProtocolError):
            await pool.post("/completions", b"{}", {}, 5)
        server.close()

    run(go())


def test_timeout_raises():
    async def go():
        async def silent(reader, writer):
            await asyncio.sleep(5)

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        pool = ConnectionPool(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1", 1)
        with pytest.raises(TimeoutError):
            await pool.post("/completions", b"{}", {}, 0.2)
        server.close()

    run(go())
