"""Inbox: group commit, de-duplication, leasing, expiry and completion, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from klaviyo_segment.store import Store


def _key(m: dict[str, Any]) -> str | None:
    return m.get("messageId")


def _route(m: dict[str, Any]) -> list[str]:
    return ["sync-identify", "forward-track"] if m.get("type") == "identify" else ["forward-track"]


async def test_accept_groups_per_flow_and_dedupes(store: Store) -> None:
    msgs = [
        {"messageId": "m1", "type": "identify"},
        {"messageId": "m2", "type": "track"},
        {"messageId": "m1", "type": "identify"},
        {"type": "track", "n": 1},
        {"type": "track", "n": 2},
    ]
    first = await store.accept(msgs, key=_key, route=_route)
    assert (first.accepted, first.duplicates) == (4, 1)
    assert set(first.batches) == {"sync-identify", "forward-track"}
    batches = {b.flow: b for b in await store.lease(list(first.batches.values()), "w1", 30)}
    assert batches["sync-identify"].messages == [msgs[0]]
    assert batches["forward-track"].messages == [msgs[0], msgs[1], msgs[3], msgs[4]]  # accept order kept

    again = await store.accept(
        [{"messageId": "m2", "type": "track"}, {"messageId": "m3", "type": "track"}, {"type": "track", "n": 1}],
        key=_key,
        route=_route,
    )
    assert (again.accepted, again.duplicates) == (2, 1)  # None keys are always new
    assert list(again.batches) == ["forward-track"]
    assert await store.backlog() == {"sync-identify": 1, "forward-track": 6}


async def test_accept_of_only_duplicates_creates_no_batch(store: Store) -> None:
    await store.accept([{"messageId": "x"}], key=_key, route=_route)
    result = await store.accept([{"messageId": "x"}], key=_key, route=_route)
    assert result.batches == {} and result.duplicates == 1


async def test_lease_is_exclusive_until_expiry_then_reclaimed(store: Store) -> None:
    bid = (await store.accept([{"messageId": "a"}], key=_key, route=_route)).batches["forward-track"]
    [held] = await store.lease([bid], "w1", 60)
    assert (held.status, held.attempts, held.lease_owner) == ("leased", 1, "w1")
    assert await store.lease([bid], "w2", 60) == []
    assert await store.claim("w2", 60, limit=10) == []
    assert await store.renew(bid, "w1", 0)  # lease now ends immediately: as if w1 died
    [taken] = await store.claim("w2", 60, limit=10)
    assert (taken.id, taken.attempts, taken.lease_owner) == (bid, 2, "w2")
    assert not await store.complete(bid, "w1")  # lost lease: w1 must not finish it
    assert not await store.renew(bid, "w1", 60)
    assert await store.complete(bid, "w2", "partial", {"sent": 0, "failed": 1})
    [info] = await store.get_batches([bid])
    assert info.status == "partial"
    assert await store.lease([bid], "w3", 60) == [] and await store.backlog() == {}


async def test_claim_oldest_first_with_limit_and_flow_filter(store: Store) -> None:
    ids = [
        (await store.accept([{"messageId": f"m{i}", "type": "track"}], key=_key, route=_route)).batches["forward-track"]
        for i in range(3)
    ]
    identify = (await store.accept([{"messageId": "i", "type": "identify"}], key=_key, route=_route)).batches
    only = await store.claim("w", 30, limit=5, flow="sync-identify")
    assert [b.id for b in only] == [identify["sync-identify"]]
    first_two = await store.claim("w", 30, limit=2, flow="forward-track")
    assert [b.id for b in first_two] == ids[:2]


async def test_pending_batches_for_the_sweeper(store: Store) -> None:
    a = (await store.accept([{"messageId": "a"}], key=_key, route=_route)).batches["forward-track"]
    b = (await store.accept([{"messageId": "b"}], key=_key, route=_route)).batches["forward-track"]
    c = (await store.accept([{"messageId": "c"}], key=_key, route=_route)).batches["forward-track"]
    await store.mark_dispatched([a], "run-1")
    await store.lease([b], "w", 0)  # expired at once
    await store.lease([c], "w", 600)
    assert {i.id for i in await store.pending_batches()} == {b}
    assert await store.pending_batches(older_than_seconds=3600) == []
    assert {i.id for i in await store.pending_batches(redispatch_after_seconds=0)} == {a, b}
    assert (await store.get_batches([a]))[0].dispatched_run_id == "run-1"
    assert await store.pending_batches(flow="sync-identify") == []
