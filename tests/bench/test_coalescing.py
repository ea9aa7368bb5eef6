"""The dispatcher's pacing: a stream of small commits becomes few runs, and an idle flow's run starts at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from klaviyo_segment.bench.serving import Counting
from klaviyo_segment.ingress.dispatcher import Dispatcher
from klaviyo_segment.store import Store
from tests.fixtures.clock import VirtualClock

FLOW = "forward-track"


async def _commit(store: Store, i: int) -> dict[str, str]:
    accepted = await store.accept([{"messageId": f"m{i}"}], key=lambda m: m["messageId"], route=lambda m: [FLOW])
    return dict(accepted.batches)


async def _until(predicate: Callable[[], bool]) -> None:
    """Wait for the dispatcher to react; the generous bound only turns a hang into a failure."""

    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), 60)


async def test_stream_of_commits_is_coalesced_without_delaying_the_first_run(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite:///{tmp_path}/state.db")
    counter = Counting(store)
    clock = VirtualClock(auto=False)  # pacing runs on virtual time: exact, whatever the machine's load
    starts: list[float] = []  # virtual start of each run, as the dispatcher paced it

    async def launcher(flow: str, batch_ids: list[str], key: str) -> str:
        starts.append(dispatcher._last_start[flow])
        return await counter(flow, batch_ids, key)

    dispatcher = Dispatcher(store, launcher, flows=[FLOW], min_interval=0.3, clock=clock, sleep=clock.sleep)
    await dispatcher.start()
    try:
        dispatcher.notify(await _commit(store, 0))
        while counter.runs < 1 and not clock.sleeps:
            await asyncio.sleep(0.005)
        assert clock.sleeps == [] and starts == [clock.start]  # the idle flow was not held back by min_interval
        for i in range(1, 40):  # 40 commits 10 ms apart: one per commit window of a single-event stream
            dispatcher.notify(await _commit(store, i))
            if i == 1:  # the second run is held back until 0.3 s after the first: what follows joins it
                await _until(lambda: bool(clock.sleeps))
            clock.advance(0.01)
            if i == 30:  # 0.3 s after the first run: the held run starts with commits 1..30
                await _until(lambda: counter.runs == 2)
        clock.advance(0.3)  # past the pacing wait of commits 31..39: they join one last run
        while await store.backlog():
            await asyncio.sleep(0.01)
    finally:
        await dispatcher.stop()
        await store.close()
    assert dispatcher.stats.messages == 40
    assert counter.runs == 3, counter.runs  # instead of one run per commit
    assert starts[1] - starts[0] == pytest.approx(0.3) and starts[2] - starts[1] >= 0.3 - 1e-9, starts
    assert clock.sleeps[0] == pytest.approx(0.3), clock.sleeps
