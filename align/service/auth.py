"""Who may use `rlaif service`: the API key check in front of every route.

When the service is bound beyond loopback, or told to, every request must carry the API key
(``Authorization: Bearer KEY``, ``X-API-Key: KEY``, or for a browser ``?key=KEY`` once, which
sets a cookie); only the key's SHA-256 is kept and compared in constant time. The check is ASGI
middleware around the whole app, so no route can be added without it.
"""

from __future__ import annotations

import hashlib
import hmac
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from fastapi.responses import JSONResponse

COOKIE = "rlaif_key"


def key_hash(key: str) -> bytes:
    """What the service keeps of an API key."""
    return hashlib.sha256(key.encode()).digest()


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
