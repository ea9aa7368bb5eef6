"""``serve``'s ingress (receiver + group commit + dispatcher) started in the benchmark's own event loop, the
way ``klaviyo-segment serve`` starts it, with either the real inline launcher (Prefect flow runs against the
sandbox) or a counting launcher that only leases and completes batches (measures the receiver and the
dispatcher's coalescing without the API ceiling in the way).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

SECRET = "bench-segment-shared-secret"


@dataclass
class Counting:
    """Stands in for flow runs: leases and completes its batches; counts runs and their start times."""

    store: Any = None
    runs: int = 0
    starts: list[float] = field(default_factory=list)

    async def __call__(self, flow: str, batch_ids: list[str], key: str) -> str:
        self.runs += 1
        self.starts.append(time.monotonic())
        owner = f"bench-{self.runs}"
        for batch in await self.store.lease(batch_ids, owner, 600.0):
            await self.store.complete(batch.id, owner)
        return owner


@contextlib.asynccontextmanager
async def ingress(
    store_url: str, *, flows: list[str], document: dict[str, Any] | None = None, counting: bool = False
) -> AsyncIterator[tuple[Any, Counting | None]]:
    """Yield (Ingress, Counting or None); the store is opened and closed here."""
    from klaviyo_segment.config import AppConfig
    from klaviyo_segment.ingress.receiver import ReceiverSettings
    from klaviyo_segment.ingress.runner import start_ingress
    from klaviyo_segment.store import Store

    store = await Store.open(store_url)
    counter = Counting(store) if counting else None
    config = AppConfig.model_validate(document or {})
    running = await start_ingress(
        store,
        config,
        settings=ReceiverSettings(segment_secret=SECRET),
        dispatch="inline",
        launcher=counter,
        mapping_document=document,
        flows=flows,
    )
    try:
        yield running, counter
        await _runs_finished(running.dispatcher)
    finally:
        await running.stop()
        await store.close()


async def _runs_finished(dispatcher: Any, timeout: float = 60.0) -> None:
    """Let inline runs that already completed their batches finish too: stopping the dispatcher under them
    would mark them Crashed in Prefect although every message went through."""
    import asyncio

    stats = dispatcher.stats
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(len(d) for d in stats.durations.values()) + stats.failures >= stats.total_runs:
            return
        await asyncio.sleep(0.05)


async def drained(store_url: str, timeout: float) -> bool:
    """Wait until no batch is pending or leased (every accepted message went through a run)."""
    import asyncio

    from klaviyo_segment.store import Store

    store = await Store.open(store_url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not await store.backlog():
                return True
            await asyncio.sleep(0.1)
        return False
    finally:
        await store.close()
