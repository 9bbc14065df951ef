"""The httpx transport of `datagen.endpoint.client`, for hosted APIs and endpoints behind a proxy.

The project's own HTTP/1.1 transport (`_http.py`) wins where client CPU is the limit (plain
http on loopback or a LAN: about 75 µs per request against httpx's milliseconds). Hosted APIs
are limited by their rate limits instead and need what that transport lacks: proxies from the
environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``, ``NO_PROXY``), HTTP/2, multipart
uploads for the Files API and the system's CA store (``ssl.create_default_context``, which
also honours ``SSL_CERT_FILE``). This module wraps one ``httpx.AsyncClient`` in the interface of
``_http.ConnectionPool`` (``post``, ``get``, ``aclose``) plus ``upload``, with the
pool sized to the client's concurrency and every connection kept alive. Transport faults
surface as ``TimeoutError`` and ``ConnectionError``, as the own transport raises them, so the
client's retry policy is one piece of code for both.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from urllib.parse import urlsplit

import httpx

Reply = tuple[int, dict[str, str], bytes]


def proxy_applies(base_url: str) -> bool:
    """Whether the environment routes requests for ``base_url`` through a proxy."""
    parts = urlsplit(base_url)
    proxies = urllib.request.getproxies()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.netloc)


def wants_httpx(base_url: str) -> bool:
    """https endpoints, and any endpoint a proxy applies to, go through httpx."""
    return urlsplit(base_url).scheme == "https" or proxy_applies(base_url)


class HttpxPool:
    """Keep-alive httpx connections to one API base URL, at most ``limit`` at a time."""

    def __init__(self, base_url: str, limit: int) -> None:
        self.prefix = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
            verify=ssl.create_default_context(), http2=True, trust_env=True, timeout=None)

    async def _send(self, request: httpx.Request, timeout: float) -> Reply:
        try:
            async with asyncio.timeout(timeout):
                response = await self._client.send(request)
        except httpx.TimeoutException as exc:
            raise TimeoutError(str(exc) or "timed out") from None
        except httpx.HTTPError as exc:  # connect, read, protocol and proxy faults
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from None
        return response.status_code, {k.lower(): v for k, v in response.headers.items()}, \
            response.content

    async def post(self, path: str, body: bytes, headers: dict[str, str], timeout: float
                   ) -> Reply:
        """POST ``body`` to ``prefix + path``; return (status, lower-cased headers, body)."""
        request = self._client.build_request(
            "POST", self.prefix + path, content=body, headers=headers)
        return await self._send(request, timeout)

    async def get(self, path: str, headers: dict[str, str], timeout: float) -> Reply:
        """GET ``prefix + path`` (``path`` may carry a query string)."""
        return await self._send(
            self._client.build_request("GET", self.prefix + path, headers=headers), timeout)

    async def upload(self, path: str, fields: dict[str, str], filename: str, content: bytes,
                     headers: dict[str, str], timeout: float) -> Reply:
        """POST a multipart form: ``fields`` plus one file part named ``file``."""
        request = self._client.build_request(
            "POST", self.prefix + path, data=fields, headers=headers,
            files={"file": (filename, content, "application/jsonl")})
        return await self._send(request, timeout)

    async def aclose(self) -> None:
        """Close every connection."""
        await self._client.aclose()
