"""The dispatcher's pacing: a stream of small commits becomes few runs, and an idle flow's run starts at once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from klaviyo_segment.bench.serving import Counting
from klaviyo_segment.ingress.dispatcher import Dispatcher
from klaviyo_segment.store import Store

FLOW = "forward-track"


async def _commit(store: Store, i: int) -> dict[str, str]:
    accepted = await store.accept([{"messageId": f"m{i}"}], key=lambda m: m["messageId"], route=lambda m: [FLOW])
    return dict(accepted.batches)


async def test_stream_of_commits_is_coalesced_without_delaying_the_first_run(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite:///{tmp_path}/state.db")
    counter = Counting(store)
    dispatcher = Dispatcher(store, counter, flows=[FLOW], min_interval=0.3)
    await dispatcher.start()
    try:
        began = time.monotonic()
        dispatcher.notify(await _commit(store, 0))
        while counter.runs < 1:
            await asyncio.sleep(0.005)
        first_run_after = counter.starts[0] - began
        for i in range(1, 40):  # ~40 commits within ~0.4 s: one per commit window of a single-event stream
            dispatcher.notify(await _commit(store, i))
            await asyncio.sleep(0.01)
        while await store.backlog():
            await asyncio.sleep(0.01)
    finally:
        await dispatcher.stop()
        await store.close()
    assert first_run_after < 0.25  # the idle flow was not held back by min_interval
    assert dispatcher.stats.messages == 40
    assert counter.runs <= 4, counter.runs  # instead of one run per commit
    gaps = [b - a for a, b in zip(counter.starts, counter.starts[1:])]
    assert all(gap >= 0.29 for gap in gaps), gaps
