"""Dead letters, version compare-and-set, cursors, once-only markers, identity cache and key-value state."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from klaviyo_segment.store import DeadLetterIn, Store

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


async def test_dead_letters_upsert_list_resolve_purge(store: Store) -> None:
    err = {"code": "invalid", "detail": "bad email", "pointer": "/data/attributes/email"}
    first = await store.add_dead_letters(
        [
            DeadLetterIn("sync-identify", {"messageId": "m1"}, "m1", "invalid", err),
            DeadLetterIn("forward-track", {"n": 1}, None, "permanent"),
        ]
    )
    again = await store.add_dead_letters([DeadLetterIn("sync-identify", {"messageId": "m1", "v": 2}, "m1", "retry")])
    assert again[0] == first[0] and len(first[0]) == 12
    dl = await store.get_dead_letter(first[0])
    assert dl is not None and (dl.attempts, dl.reason, dl.error, dl.message) == (
        2,
        "retry",
        None,
        {"messageId": "m1", "v": 2},
    )
    assert dl.updated_at >= dl.created_at
    assert [d.id for d in await store.list_dead_letters(flow="forward-track")] == [first[1]]
    assert len(await store.list_dead_letters(limit=1)) == 1
    assert await store.count_dead_letters() == 2
    assert await store.resolve_dead_letters([first[0], "nope"]) == 1
    assert await store.get_dead_letter(first[0]) is None
    assert await store.purge_dead_letters(timedelta(days=1)) == 0  # too young
    assert await store.purge_dead_letters(None) == 1 and await store.count_dead_letters() == 0


async def test_versions_only_move_forward(store: Store) -> None:
    key = "audience:vip:u1"
    sequence = [T0, T0 + timedelta(minutes=5), T0 + timedelta(minutes=2), T0 + timedelta(minutes=5)]
    outcomes = [bool(await store.apply_versions({key: ts})) for ts in sequence]
    assert outcomes == [True, True, False, False]  # late older change and an equal replay both lose
    assert (await store.get_versions([key]))[key] == T0 + timedelta(minutes=5)
    won = await store.apply_versions({key: T0 + timedelta(hours=1), "audience:vip:u2": T0})
    assert won == {key, "audience:vip:u2"}
    naive = datetime(2025, 3, 1, 12, 0)  # taken as UTC
    assert await store.apply_versions({"audience:vip:u2": naive}) == set()


async def test_versions_concurrent_writers_newest_wins(store: Store) -> None:
    stamps = [T0 + timedelta(seconds=s) for s in (3, 9, 1, 7, 5, 2, 8, 4, 6)]
    await asyncio.gather(*(store.apply_versions({"k": ts}) for ts in stamps))
    assert (await store.get_versions(["k"]))["k"] == max(stamps)


async def test_cursors_and_checkpoints(store: Store) -> None:
    assert await store.get_cursor("engagement") is None
    await store.set_cursor("engagement", "2025-03-01T00:00:00Z")
    await store.set_cursor("engagement", "2025-03-02T00:00:00Z")
    assert await store.get_cursor("engagement") == "2025-03-02T00:00:00Z"
    await store.set_checkpoint("backfill:abc", {"rows_done": 500, "file": "x.csv"})
    assert await store.get_checkpoint("backfill:abc") == {"rows_done": 500, "file": "x.csv"}
    assert await store.get_checkpoint("other") is None


async def test_claim_once_is_exclusive_and_unmark_allows_retry(store: Store) -> None:
    keys = [f"onboard:u{i}" for i in range(5)]
    results = await asyncio.gather(store.claim_once(keys), store.claim_once(keys))
    assert results[0] | results[1] == set(keys) and not results[0] & results[1]
    assert await store.is_done(keys + ["onboard:zz"]) == set(keys)
    await store.unmark(["onboard:u0"])
    assert await store.claim_once(["onboard:u0", "onboard:u1"]) == {"onboard:u0"}


async def test_identity_cache_and_alias_merge(store: Store) -> None:
    await store.put_profile_ids({"email:a@b.com": "P1", "external_id:u1": "P1"})
    await store.put_profile_ids({"email:a@b.com": "P2"})
    assert await store.get_profile_ids(["email:a@b.com", "external_id:u1", "phone:+1"]) == {
        "email:a@b.com": "P2",
        "external_id:u1": "P1",
    }
    await store.forget_profile_ids(["email:a@b.com"])
    assert await store.get_profile_ids(["email:a@b.com"]) == {}
    await store.put_aliases({"anon1": {"user_id": "u1", "traits": {"plan": "pro"}}})
    await store.put_aliases({"anon1": {"email": "a@b.com", "user_id": None, "traits": {"seats": 3}}})
    await asyncio.gather(
        store.put_aliases({"anon2": {"user_id": "u2"}}), store.put_aliases({"anon2": {"email": "c@d.com"}})
    )
    got = await store.get_aliases(["anon1", "anon2", "anon3"])
    assert got["anon1"] == {"user_id": "u1", "email": "a@b.com", "traits": {"plan": "pro", "seats": 3}}
    assert got["anon2"] == {"user_id": "u2", "email": "c@d.com"} and "anon3" not in got


async def test_key_value_state(store: Store) -> None:
    await store.put_values({"churn:u1": "at_risk", "churn:u2": {"v": 1}})
    await store.put_values({"churn:u1": None})
    assert await store.get_values(["churn:u1", "churn:u2", "churn:u3"]) == {"churn:u1": None, "churn:u2": {"v": 1}}
    await store.delete_values(["churn:u2"])
    assert await store.get_values(["churn:u2"]) == {}
