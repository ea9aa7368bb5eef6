"""uvicorn settings for the receiver: bounded time and memory per connection.

Why: uvicorn's defaults let a client hold a connection open forever while sending its request headers a byte
at a time (the keep-alive timeout only runs *between* requests), and let many such clients pile up. The receiver
sits on the public internet (Segment must reach it), so each connection gets a deadline for its headers, idle
keep-alive connections are closed after a few seconds, header blocks are size-limited, and the number of
concurrent connections is capped (beyond it uvicorn answers 503, which Segment retries). The body has its own
deadline in the receiver (408).
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

KEEP_ALIVE_SECONDS = 5
MAX_HEADER_BYTES = 64 * 1024
MAX_CONNECTIONS = 1000


class _HeaderDeadlineH11(H11Protocol):
    """Closes a connection whose next request's headers are not complete within ``header_timeout`` seconds."""

    header_timeout: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        self._waiting_cycle = self.cycle  # a new cycle object means new headers were parsed
        self._header_timer: asyncio.TimerHandle | None = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        timer, self._header_timer = getattr(self, "_header_timer", None), None
        if timer is not None:
            timer.cancel()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not self._waiting_cycle:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._disarm()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _expired(self) -> None:
        self._header_timer = None
        if self.cycle is self._waiting_cycle and not self.transport.is_closing():
            self.transport.close()


def server_config(app: Any, *, header_timeout: float) -> uvicorn.Config:
    protocol = type("ReceiverH11Protocol", (_HeaderDeadlineH11,), {"header_timeout": header_timeout})
    return uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
        http=protocol,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        limit_concurrency=MAX_CONNECTIONS,
    )
