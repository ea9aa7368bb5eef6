"""Dispatcher against the real store with a recording launcher: coalescing, bounded runs, sweeper retries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from klaviyo_segment.ingress.dispatcher import Dispatcher, idempotency_key
from klaviyo_segment.store import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(f"sqlite:///{tmp_path}/state.db")
    yield s
    await s.close()


async def _commit(store: Store, n: int, flow: str = "sync-identify", start: int = 0) -> None:
    for i in range(start, start + n):
        await store.accept([{"messageId": f"m{i}"}], key=lambda m: m["messageId"], route=lambda m: [flow])


class Worker:
    """Stands in for a flow run: leases and completes its batches like runtime.load_inputs/finish do."""

    def __init__(self, store: Store, fail_first: int = 0) -> None:
        self.store, self.calls, self.fail_first = store, [], fail_first
        self.keys: list[str] = []

    async def __call__(self, flow: str, batch_ids: list[str], key: str) -> str:
        self.calls.append((flow, list(batch_ids)))
        self.keys.append(key)
        if len(self.calls) <= self.fail_first:
            raise RuntimeError("prefect unreachable")
        run = f"run-{len(self.calls)}"
        for batch in await self.store.lease(batch_ids, run, 60):
            await self.store.complete(batch.id, run)
        return run


async def _until(predicate: Any, timeout: float = 60) -> None:  # generous: only turns a hang into a failure
    async def poll() -> None:
        while not await predicate():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


async def test_pending_batches_are_coalesced_into_capped_runs(store: Store) -> None:
    await _commit(store, 30)
    worker = Worker(store)
    dispatcher = Dispatcher(store, worker, flows=["sync-identify"], max_batches=20)
    await dispatcher.start()
    try:
        await _until(lambda: _empty(store))
    finally:
        await dispatcher.stop()
    assert [len(ids) for _, ids in worker.calls] == [20, 10]
    assert dispatcher.stats.total_runs == 2 and dispatcher.stats.messages == 30


async def _empty(store: Store) -> bool:
    return await store.backlog() == {}


async def test_failed_dispatch_is_retried_by_the_sweeper(store: Store) -> None:
    await _commit(store, 3)
    worker = Worker(store, fail_first=1)
    dispatcher = Dispatcher(store, worker, flows=["sync-identify"], sweep_interval=0.05, redispatch_after=0.1)
    await dispatcher.start()
    try:
        await _until(lambda: _empty(store))
    finally:
        await dispatcher.stop()
    assert len(worker.calls) == 2 and worker.calls[0][1] == worker.calls[1][1]
    assert worker.keys[0] != worker.keys[1]  # the re-dispatch is a new run, not deduplicated away
    assert dispatcher.stats.failures == 1


async def test_deployments_mode_bounds_in_flight_runs_and_coalesces_the_backlog(store: Store) -> None:
    started: list[list[str]] = []

    async def launch(flow: str, batch_ids: list[str], key: str) -> str:
        started.append(batch_ids)  # the "worker" runs later: batches stay pending until the test finishes them
        return f"run-{len(started)}"

    await _commit(store, 1)
    dispatcher = Dispatcher(
        store, launch, mode="deployments", flows=["sync-identify"], max_in_flight=1, sweep_interval=0.05
    )
    await dispatcher.start()
    try:
        await _until(lambda: _true(len(started) == 1))
        await _commit(store, 5, start=100)
        dispatcher.wake_all()
        await asyncio.sleep(0.3)
        assert len(started) == 1  # the slot is busy: no second run yet
        for batch in await store.lease(started[0], "w", 60):
            await store.complete(batch.id, "w")
        await _until(lambda: _true(len(started) == 2))
        assert len(started[1]) == 5  # everything that piled up went into one run
        infos = await store.get_batches(started[1])
        assert {i.dispatched_run_id for i in infos} == {"run-2"}
    finally:
        await dispatcher.stop()


async def _true(value: bool) -> bool:
    return value


def test_idempotency_key_is_stable_for_a_retry_and_changes_after_a_dispatch() -> None:
    class Info:
        def __init__(self, id: str, run: str | None) -> None:
            self.id, self.dispatched_run_id, self.attempts = id, run, 0

    assert idempotency_key("f", [Info("a", None), Info("b", None)]) == idempotency_key(
        "f", [Info("b", None), Info("a", None)]
    )
    assert idempotency_key("f", [Info("a", None)]) != idempotency_key("f", [Info("a", "run-1")])


class HeldWorker(Worker):
    """A run that stays in flight until released: shows how many runs of one flow overlap."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.release = asyncio.Event()
        self.active = self.peak = 0

    async def __call__(self, flow: str, batch_ids: list[str], key: str) -> str:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await self.release.wait()
            return await super().__call__(flow, batch_ids, key)
        finally:
            self.active -= 1


@pytest.mark.parametrize(("flow", "overlap"), [("forward-track", 2), ("sync-identify", 1)])
async def test_only_order_free_flows_overlap_their_runs(store: Store, flow: str, overlap: int) -> None:
    """forward-track's next run maps while the previous one waits on Klaviyo; an identify run never overlaps
    another (a person's changes apply in order). Each run is capped at 2 messages, so 6 commits need 3 runs."""
    await _commit(store, 6, flow=flow)
    worker = HeldWorker(store)
    dispatcher = Dispatcher(store, worker, flows=[flow], max_messages=2, min_interval=0)
    await dispatcher.start()
    try:

        async def saturated() -> bool:
            return worker.active == overlap

        await _until(saturated)
        await asyncio.sleep(0.2)  # a third run would have started by now if the cap did not hold
        assert worker.peak == overlap
        worker.release.set()
        await _until(lambda: _empty(store))
    finally:
        await dispatcher.stop()
    assert sorted(len(ids) for _, ids in worker.calls) == [2, 2, 2]
