"""Foundation fixtures: a tiny scriptable Segment Tracking API on 127.0.0.1 (real HTTP, real sockets).

Why not the sandbox: these tests pin down the client's retry and batching behaviour with exact status
sequences, which the sandbox's fault injection does not promise.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


@dataclass
class FakeSegment:
    """Records every request; answers from ``script`` (status, headers) in order, then 200."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.script.clear()

    @property
    def batches(self) -> list[list[dict[str, Any]]]:
        return [r["body"]["batch"] for r in self.requests if r["path"] == "/v1/batch"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def segment_server() -> Iterator[FakeSegment]:
    fake = FakeSegment()

    async def endpoint(request: Request) -> JSONResponse:
        raw = await request.body()
        auth = request.headers.get("authorization", "")
        user = base64.b64decode(auth.split(" ", 1)[1]).decode() if auth.startswith("Basic ") else None
        with fake.lock:
            fake.requests.append(
                {"path": request.url.path, "body": json.loads(raw), "bytes": len(raw), "basic_user": user}
            )
            status, headers = fake.script.pop(0) if fake.script else (200, {})
        return JSONResponse({"success": status < 400}, status_code=status, headers=headers)

    app = Starlette(routes=[Route("/v1/{kind}", endpoint, methods=["POST"])])
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    started = threading.Event()
    for _ in range(3000):  # up to 30 s: generous for a busy machine
        if server.started:
            started.set()
            break
        started.wait(0.01)
    assert server.started, "fake Segment server did not start"
    fake.url = f"http://127.0.0.1:{port}"
    yield fake
    server.should_exit = True
    thread.join(timeout=5)


@pytest.fixture
def segment(segment_server: FakeSegment) -> FakeSegment:
    segment_server.reset()
    return segment_server
