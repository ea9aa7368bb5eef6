"""The processes of a chaos run besides the driver: the dispatch worker (the one the run SIGKILLs) and, for the
multi-receiver layout, receiver processes (serve's receiver and group commit, no dispatch) sharing one store.

Each runs as ``python -m klaviyo_segment.devkit.chaos_procs worker|receive STORE_URL CONFIG_JSON``, on
127.0.0.1, until killed. A receiver prints its URL on its first stdout line so the driver can deliver to it.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
import time
from typing import Any

from klaviyo_segment.constants import ENV_LEASE_SECONDS

#: Lease of a batch in the chaos workers: long enough for one run under faults, short enough to retake fast.
WORKER_LEASE_SECONDS = 30.0
#: The shared secret the chaos driver signs its deliveries with.
SECRET = "chaos"


def _spawn(mode: str, store_url: str, document: dict[str, Any], env: dict[str, str], **kw: Any) -> Any:
    return subprocess.Popen(
        [sys.executable, "-m", "klaviyo_segment.devkit.chaos_procs", mode, store_url, json.dumps(document)],
        env=env,
        stderr=subprocess.DEVNULL,
        **kw,
    )


def spawn_worker(store_url: str, document: dict[str, Any], env: dict[str, str]) -> Any:
    return _spawn("worker", store_url, document, env, stdout=subprocess.DEVNULL)


def spawn_receivers(
    count: int, store_url: str, document: dict[str, Any], env: dict[str, str], timeout: float = 60.0
) -> tuple[list[Any], list[str]]:
    """Start ``count`` receiver processes; returns them and their URLs once each has printed its URL (bounded)."""
    procs = [_spawn("receive", store_url, document, env, stdout=subprocess.PIPE, text=True) for _ in range(count)]
    urls: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            line = proc.stdout.readline().strip() if ready else ""
            if not line.startswith("http://127.0.0.1:"):
                raise RuntimeError(f"a chaos receiver did not start (exit code {proc.poll()})")
            urls.append(line)
    except BaseException:
        stop(procs)
        raise
    return procs, urls


def stop(procs: list[Any]) -> None:
    """Kill processes this run started (by their own handles) and reap them."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


async def _worker(store_url: str, document: dict[str, Any]) -> None:
    """A dispatch-only worker process: runs flows inline until killed."""
    from klaviyo_segment.config import AppConfig
    from klaviyo_segment.ingress.receiver import ReceiverSettings
    from klaviyo_segment.ingress.runner import start_ingress
    from klaviyo_segment.store import Store

    # A killed worker's batches come back within a CI budget: the runtime reads the lease at lease time.
    os.environ[ENV_LEASE_SECONDS] = str(WORKER_LEASE_SECONDS)
    store = await Store.open(store_url)
    await start_ingress(
        store,
        AppConfig.from_document(document),
        settings=ReceiverSettings(),
        dispatch="inline",
        mapping_document=document,
        dispatcher_options={"sweep_interval": 1.0, "max_messages": 1000, "redispatch_after": 5.0},
    )
    await asyncio.Event().wait()


async def _receiver(store_url: str, document: dict[str, Any]) -> None:
    """A receiver process as ``serve`` runs one in the multi-receiver layout: the door, group commit into the
    shared store, no dispatch (the worker process takes the batches)."""
    from klaviyo_segment.config import AppConfig
    from klaviyo_segment.ingress.receiver import ReceiverSettings
    from klaviyo_segment.ingress.runner import start_ingress
    from klaviyo_segment.store import Store

    store = await Store.open(store_url)
    ingress = await start_ingress(
        store, AppConfig.from_document(document), settings=ReceiverSettings(segment_secret=SECRET), dispatch=None
    )
    print(ingress.url, flush=True)
    devnull = os.open(os.devnull, os.O_WRONLY)  # nobody reads the pipe any more: never block on a full one
    os.dup2(devnull, sys.stdout.fileno())
    await asyncio.Event().wait()


if __name__ == "__main__":
    mode, url, doc = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    asyncio.run(_worker(url, doc) if mode == "worker" else _receiver(url, doc))
