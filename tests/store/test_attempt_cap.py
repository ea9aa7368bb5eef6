"""The attempt cap (issue 17, item 1): a batch whose runs keep failing is dead-lettered with the last recorded
error and closed after ``MAX_ATTEMPTS`` leases, so its flow's stream moves on; both backends."""

from __future__ import annotations

import asyncio

from klaviyo_segment.store import Store
from klaviyo_segment.store.inbox import MAX_ATTEMPTS


async def _accept(store: Store, ids: list[str]) -> str:
    result = await store.accept(
        [{"type": "track", "messageId": i, "event": "E"} for i in ids],
        key=lambda m: m["messageId"],
        route=lambda m: ["forward-track"],
    )
    return result.batches["forward-track"]


async def test_batch_is_dead_lettered_with_last_error_after_max_attempts(store: Store) -> None:
    batch = await _accept(store, ["m1", "m2"])
    other = await _accept(store, ["m3"])
    assert MAX_ATTEMPTS == 5
    for attempt in range(1, MAX_ATTEMPTS + 1):
        leased = await store.lease([batch], f"run-{attempt}", lease_seconds=0.001)
        assert [b.id for b in leased] == [batch] and leased[0].attempts == attempt
        assert await store.record_failure(batch, f"run-{attempt}", f"RuntimeError: boom {attempt}")
        await asyncio.sleep(0.01)
    assert await store.lease([batch], "run-last", lease_seconds=60) == []  # capped: not leased a 6th time
    info = (await store.get_batches([batch]))[0]
    assert info.status == "partial" and info.lease_expires_at is None
    letters = {d.message_id: d for d in await store.list_dead_letters(flow="forward-track")}
    assert set(letters) == {"m1", "m2"}
    assert letters["m1"].reason == f"gave up after {MAX_ATTEMPTS} attempts: RuntimeError: boom {MAX_ATTEMPTS}"
    assert letters["m1"].message["messageId"] == "m1"
    assert [b.id for b in await store.claim("w", 60, limit=10)] == [other]  # the stream moves on
    assert await store.pending_batches() == []


async def test_killed_runs_without_an_error_are_capped_too(store: Store) -> None:
    batch = await _accept(store, ["k1"])
    for attempt in range(MAX_ATTEMPTS):
        assert await store.claim(f"w{attempt}", lease_seconds=0.001, limit=5)
        await asyncio.sleep(0.01)
    assert await store.claim("w-last", lease_seconds=60, limit=5) == []
    [letter] = await store.list_dead_letters()
    assert letter.message_id == "k1" and "worker killed" in letter.reason
    assert (await store.get_batches([batch]))[0].status == "partial"


async def test_record_failure_backs_off_and_only_for_the_owner(store: Store) -> None:
    batch = await _accept(store, ["b1"])
    [leased] = await store.lease([batch], "owner", lease_seconds=600)
    assert not await store.record_failure(batch, "someone-else", "x")
    assert await store.record_failure(batch, "owner", "ValueError: x")
    info = (await store.get_batches([batch]))[0]
    assert leased.lease_expires_at is not None and info.lease_expires_at is not None
    remaining = (info.lease_expires_at - leased.created_at).total_seconds()
    assert 0 < remaining < 120  # 30 s backoff on the first attempt instead of the 600 s lease


async def test_leases_of_a_dead_process_on_this_host_are_reclaimed_at_once(store: Store, store_url: str) -> None:
    """Issue 17, item 9: a restart used to wait the full lease (600 s) for a killed process' batches."""
    import subprocess
    import sys

    batch = await _accept(store, ["r1"])
    mine = await _accept(store, ["r2"])
    code = (
        "import asyncio, sys\nfrom klaviyo_segment.store import Store\n"
        "async def main():\n    s = await Store.open(sys.argv[1])\n"
        f"    assert await s.lease([{batch!r}], 'killed-run', 600)\n    await s.close()\n"
        "asyncio.run(main())\n"
    )
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", code, store_url], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert await store.lease([mine], "live-run", 600)  # held by this (living) process: never reclaimed
    assert await store.lease([batch], "restart", 600) == []  # still leased by the dead one
    assert [i.id for i in await store.pending_batches()] == [batch]  # the sweeper's query reclaims it
    [taken] = await store.lease([batch], "restart", 600)
    assert taken.attempts == 2
    assert await store.reclaim_dead_holders() == []
