"""Receiver + group committer + dispatcher running together in the current event loop.

Everything shares one loop on purpose: the committer's futures, the store's async engine and inline flow runs all
live in the loop that uvicorn serves in. ``serve`` (the CLI process) and the tests both start it this way.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from dataclasses import dataclass
from typing import Any

import uvicorn

from klaviyo_segment.errors import ConfigError
from klaviyo_segment.ingress.dispatcher import (
    Dispatcher,
    Launcher,
    deployment_launcher,
    inline_launcher,
)
from klaviyo_segment.ingress.groupcommit import GroupCommitter
from klaviyo_segment.ingress.httpserver import server_config
from klaviyo_segment.ingress.receiver import ReceiverSettings, create_app
from klaviyo_segment.routing import flows_for

log = logging.getLogger("klaviyo_segment.ingress")


def bind(host: str, port: int) -> socket.socket:
    """Bind before anything else starts, so a busy port is a clean exit 2 instead of a half-started process."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is already in use") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def runnable_flows(config: Any) -> list[str]:
    """Flows this process can dispatch: the module exists and its required config keys are set.

    Routing a message to a flow that cannot start would park its batch forever (each run fails at load time), so
    such flows are left out of routing, loudly, at start-up.
    """
    from klaviyo_segment.flows import get_spec, names

    usable: list[str] = []
    for name in names():
        try:
            config.require(name)
            get_spec(name)
        except (ConfigError, ImportError) as exc:
            log.warning("flow %s is not dispatched: %s", name, exc)
            continue
        usable.append(name)
    return usable


@dataclass
class Ingress:
    url: str
    committer: GroupCommitter
    dispatcher: Dispatcher | None
    server: uvicorn.Server
    task: asyncio.Task[None]

    async def stop(self) -> None:
        """Stop answering first, then the committer (queued requests get 503), then dispatching."""
        self.server.should_exit = True
        await asyncio.gather(self.task, return_exceptions=True)
        await self.committer.stop()
        if self.dispatcher is not None:
            await self.dispatcher.stop()


async def start_ingress(
    store: Any,
    config: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    settings: ReceiverSettings | None = None,
    dispatch: str | None = "inline",
    launcher: Launcher | None = None,
    mapping_document: dict[str, Any] | None = None,
    committer_options: dict[str, Any] | None = None,
    dispatcher_options: dict[str, Any] | None = None,
    sock: socket.socket | None = None,
    flows: list[str] | None = None,
) -> Ingress:
    """Start everything; ``dispatch=None`` runs only the receiver (batches wait in the store for someone else).

    ``flows`` restricts routing and dispatch (default: every runnable flow, see :func:`runnable_flows`).
    """
    from klaviyo_segment.gc_tuning import tune_once

    tune_once()  # the receiver's JSON work allocates much as the flows do
    sock = sock or bind(host, port)
    flows = runnable_flows(config) if flows is None else flows
    dispatcher: Dispatcher | None = None
    if dispatch is not None:
        chosen = launcher or (inline_launcher(mapping_document) if dispatch == "inline" else deployment_launcher())
        dispatcher = Dispatcher(store, chosen, mode=dispatch, flows=flows, **(dispatcher_options or {}))
    committer = GroupCommitter(store, on_commit=dispatcher.notify if dispatcher else None, **(committer_options or {}))
    await committer.start()
    allowed = set(flows)
    settings = settings or ReceiverSettings.from_env()
    for warning in settings.startup_warnings():
        log.warning("%s", warning)
    app = create_app(committer, lambda m: [f for f in flows_for(m, config) if f in allowed], settings)
    server = uvicorn.Server(server_config(app, header_timeout=settings.header_timeout))
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]  # the caller owns signals
    task = asyncio.create_task(server.serve(sockets=[sock]), name="receiver")
    while not server.started:
        if task.done():
            await task
            raise ConfigError(f"receiver on {host}:{port} did not start")
        await asyncio.sleep(0.01)
    host, actual = sock.getsockname()[:2]
    if dispatcher is not None:
        await dispatcher.start()
    return Ingress(url=f"http://{host}:{actual}", committer=committer, dispatcher=dispatcher, server=server, task=task)
