"""Serve an ASGI app with uvicorn on 127.0.0.1 in a background thread.

Tests, the demo and ``klaviyo-segment sandbox`` all need "a real HTTP server, now, on a free port". The socket is
bound and listening *before* uvicorn starts, so the URL is known (and connectable) immediately and a busy port
fails loudly in the caller's thread (the CLI maps that ``OSError`` to exit 2) instead of inside the server thread.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

STARTUP_TIMEOUT_S = 10.0


class _Server(uvicorn.Server):
    """uvicorn server that signals a threading.Event once its startup completed (no polling needed)."""

    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self._ready.set()


def serve_in_thread(
    app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
) -> tuple[str, Callable[[], None]]:
    """Start ``app`` and return ``(base_url, stop)``; ``stop()`` is idempotent and waits for the thread.

    Raises ``OSError`` when the port cannot be bound and ``RuntimeError`` when the server does not start.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    bound_port = sock.getsockname()[1]
    ready = threading.Event()
    config = uvicorn.Config(app, log_level=log_level, lifespan="auto", access_log=False)
    server = _Server(config, ready)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{bound_port}", daemon=True)
    thread.start()
    if not ready.wait(STARTUP_TIMEOUT_S):
        server.should_exit = True
        thread.join(STARTUP_TIMEOUT_S)
        sock.close()
        raise RuntimeError(f"server on {host}:{bound_port} did not start")

    def stop() -> None:
        server.should_exit = True
        if thread.is_alive():
            thread.join(STARTUP_TIMEOUT_S)
        sock.close()

    return f"http://{host}:{bound_port}", stop


@contextmanager
def serving(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Context-manager form of :func:`serve_in_thread`: yields the base URL, stops on exit."""
    base_url, stop = serve_in_thread(app, host, port)
    try:
        yield base_url
    finally:
        stop()
