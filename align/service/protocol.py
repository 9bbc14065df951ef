"""Connections of `rlaif service` that send their request too slowly are closed.

uvicorn's HTTP/1.1 protocol arms no timer before a connection's first request, and a client
that keeps sending a header byte now and then cancels the keep-alive timer between requests,
so a few hundred such connections (slowloris) would hold the service's sockets forever. The
protocol here gives each request a fixed time, counted from the connection's start or the
previous response, to arrive with all its headers; a connection still waiting then is closed.
Slow bodies are the gate's concern (``align.service.auth.read_limited``).
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


def timed_protocol(header_timeout_s: float) -> type[H11Protocol]:
    """An h11 protocol class that closes connections whose next request's headers have not
    all arrived ``header_timeout_s`` after the connection opened or the last response."""

    class TimedH11Protocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def _arm(self) -> None:
            self.loop.call_later(header_timeout_s, self._drop_if_waiting, self.cycle)

        def _drop_if_waiting(self, cycle: Any) -> None:
            if self.cycle is cycle and not self.transport.is_closing():
                self.transport.close()

    return TimedH11Protocol
