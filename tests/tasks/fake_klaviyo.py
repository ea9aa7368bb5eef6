"""A tiny programmable Klaviyo stand-in served over real HTTP on 127.0.0.1 (until the sandbox lands)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

Reply = tuple[int, Any]
Handler = Callable[[dict[str, Any], Any], Reply]


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeKlaviyo:
    url: str = ""
    handlers: dict[tuple[str, str], Handler] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def on(self, method: str, path: str, handler: Handler) -> None:
        self.handlers[(method, path)] = handler

    def calls(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and s.path == path]

    async def endpoint(self, request: Request) -> Response:
        raw = await request.body()
        body = json.loads(raw) if raw else None
        query = dict(request.query_params)
        self.seen.append(Seen(request.method, request.url.path, query, dict(request.headers), body))
        handler = self.handlers.get((request.method, request.url.path))
        if handler is None:
            return Response(json.dumps({"errors": [{"status": 404, "code": "not_found", "detail": "no route"}]}),
                            404, media_type="application/vnd.api+json")
        status, payload = handler(query, body)
        content = b"" if payload is None else json.dumps(payload).encode()
        return Response(content, status, media_type="application/vnd.api+json")


async def start(fake: FakeKlaviyo) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """Listen before serving, so clients can connect immediately without waiting for a start-up signal."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    fake.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = Starlette(routes=[Route("/{path:path}", fake.endpoint, methods=["GET", "POST", "DELETE", "PATCH"])])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    return server, asyncio.create_task(server.serve(sockets=[sock]))
