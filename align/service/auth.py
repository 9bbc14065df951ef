"""The gate in front of every route of `rlaif service`: host, size, identity, origin, audit.

The service is shared by a team and may be reached by any web page its users visit, so each
request passes, in order: the ``Host`` check (only the bound address or a configured name;
this stops DNS rebinding: 400 without a Host, 421 for another), the body limit (a declared
``Content-Length`` over the limit is refused before anything is read; a body without one is
read up to the limit and no further), authentication (``Authorization: Bearer TOKEN``, or the
page's session cookie; on loopback too, since a machine has other users; a token's user is
read from the database at most every two seconds (``align.service.context``), so a revoked
token stops working within that time and a busy service does not pay a lookup per request),
and for requests that change state an ``Origin`` check (a browser on another site is refused;
a cookie without an Origin is refused). What a user's role may do is decided per route by
the ``allow`` dependency. Every state-changing request is written to the audit table with its
outcome (in batches a quarter second apart, so that a busy service pays one transaction for
many). The gate is ASGI middleware around the whole app, so no route is added without it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import urlsplit

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse

from align.service.users import User

SESSION_COOKIE = "rlaif_session"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
PUBLIC = {("GET", "/label/login"), ("GET", "/label/label.js"), ("POST", "/label/api/login")}
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
JSON_LIMIT = 8 << 20
UPLOAD_PATH = "/v1/files"
BODY_IDLE_S = 30.0


def host_name(value: str) -> str:
    """The host of a ``Host`` header or origin netloc, without port or brackets, lower case."""
    try:
        return (urlsplit("//" + value).hostname or "").lower()
    except ValueError:
        return ""


class Gate:
    """ASGI middleware: host allow-list, body limit, authentication, Origin check, audit."""

    def __init__(self, app: Any, service: Any, hosts: frozenset[str], upload_limit: int,
                 json_limit: int = JSON_LIMIT) -> None:
        self.app, self.service, self.hosts = app, service, hosts
        self.upload_limit, self.json_limit = upload_limit, json_limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        method, path = scope["method"], scope["path"]
        outcome = {"status": 500, "user": None}
        try:
            await self._pass(scope, receive, send, headers, outcome)
        finally:
            if method not in SAFE_METHODS:
                await self._audit(scope, method, path, outcome)

    async def _pass(self, scope: dict, receive: Any, send: Any, headers: dict[str, str],
                    outcome: dict[str, Any]) -> None:
        def reply(status: int, detail: str, **extra: Any) -> Any:
            outcome["status"] = status
            return JSONResponse({"detail": detail}, status_code=status, **extra)

        method, path = scope["method"], scope["path"]
        if "host" not in headers:
            return await reply(400, "a Host header is required")(scope, receive, send)
        if host_name(headers["host"]) not in self.hosts:
            return await reply(421, "this service does not answer for that host")(
                scope, receive, send)
        limit = self.upload_limit if (method, path) == ("POST", UPLOAD_PATH) else self.json_limit
        declared = headers.get("content-length", "")
        if declared and (not declared.isdigit() or int(declared) > limit):
            return await reply(413, f"the body is over the limit of {limit} bytes")(
                scope, receive, send)
        secret, by_cookie = presented_secret(headers)
        user = await self.service.user_for(secret) if secret else None
        if user is None and (method, path) not in PUBLIC:
            if method == "GET" and path.startswith("/label") and "text/html" in headers.get(
                    "accept", ""):
                outcome["status"] = 303
                return await RedirectResponse("/label/login", 303)(scope, receive, send)
            return await reply(401, "missing, wrong or revoked token",
                               headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
        if method not in SAFE_METHODS and not self._origin_ok(headers, by_cookie):
            return await reply(403, "cross-origin request refused")(scope, receive, send)
        outcome["user"] = user
        scope.setdefault("state", {})["user"] = user
        if (method, path) != ("POST", UPLOAD_PATH) and not declared and method not in (
                SAFE_METHODS):
            body = await read_limited(receive, limit)
            if body is None:
                return await reply(413, f"the body is over the limit of {limit} bytes")(
                    scope, receive, send)
            receive = replay(body)
        await self.app(scope, receive, _status_into(send, outcome))

    def _origin_ok(self, headers: dict[str, str], by_cookie: bool) -> bool:
        origin = headers.get("origin")
        if origin is None:
            return not by_cookie
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and host_name(parts.netloc) in self.hosts

    async def _audit(self, scope: dict, method: str, path: str, outcome: dict[str, Any]) -> None:
        user: User | None = outcome["user"]
        client = scope.get("client")
        row = {"id": uuid.uuid4().hex, "at": time.time(), "user_name": user.name if user else None,
               "role": user.role if user else None, "method": method, "path": path[:500],
               "target": scope.get("state", {}).get("audit_target"),
               "status": outcome["status"], "client": client[0] if client else None}
        self.service.audit(row)


def presented_secret(headers: dict[str, str]) -> tuple[str | None, bool]:
    """(token or session secret, whether it came from the cookie)."""
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None, False
    cookie = SimpleCookie()
    try:
        cookie.load(headers.get("cookie", ""))
    except CookieError:  # a malformed cookie header carries no session
        return None, False
    if SESSION_COOKIE in cookie:
        return cookie[SESSION_COOKIE].value or None, True
    return None, False


async def read_limited(receive: Any, limit: int) -> bytes | None:
    """The whole request body, or None once it grows past ``limit`` (reading stops there);
    a client that goes quiet for BODY_IDLE_S is treated as over the limit."""
    import asyncio

    chunks, size = [], 0
    while True:
        try:
            message = await asyncio.wait_for(receive(), BODY_IDLE_S)
        except TimeoutError:
            return None
        if message["type"] != "http.request":
            return b"".join(chunks)
        size += len(message.get("body", b""))
        if size > limit:
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def replay(body: bytes) -> Callable[[], Any]:
    """An ASGI receive that hands over an already read body."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _status_into(send: Any, outcome: dict[str, Any]) -> Any:
    async def wrapped(message: dict) -> None:
        if message["type"] == "http.response.start":
            outcome["status"] = message["status"]
        await send(message)

    return wrapped


def current_user(request: Request) -> User:
    """The user the gate authenticated (routes behind it always have one)."""
    user = request.scope.get("state", {}).get("user")
    if user is None:
        raise HTTPException(401, "missing, wrong or revoked token")
    return user


def allow(*roles: str) -> Callable[[Request], User]:
    """A dependency letting through the given roles (and admin, who may do everything)."""

    def check(request: Request) -> User:
        user = current_user(request)
        if user.role != "admin" and user.role not in roles:
            raise HTTPException(403, f"a {user.role} may not do this")
        return user

    check.__name__ = "allow_" + "_".join(roles or ("admin",))
    return check
