"""purge_person leaves no trace of the person (checked by scanning every table), and retention purges by age."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from klaviyo_segment.store import DeadLetterIn, Store
from klaviyo_segment.store.tables import ALL_TABLES

EMAIL, PHONE, USER, ANON, PID = "Jane.Doe@example.com", "+15551234567", "u1", "anon-1", "01PROFILEJANE"
OTHER = {"userId": "u10", "email": "bob@example.com"}


async def _dump(store: Store) -> str:
    """Every row of every table as text: what a person's trace would be found in."""
    async with store.engine.connect() as conn:
        rows = [repr(tuple(r)) for table in ALL_TABLES for r in await conn.execute(sa.select(table))]
    return "\n".join(rows)


def _key(m: dict[str, Any]) -> str | None:
    return m.get("messageId")


async def _remember_everything(store: Store) -> None:
    jane = {"messageId": "j1", "type": "identify", "userId": USER, "traits": {"email": EMAIL, "phone": PHONE}}
    bob = {"messageId": "b1", "type": "identify", **OTHER}
    done = (await store.accept([jane, bob], key=_key, route=lambda m: ["sync-identify"])).batches
    [batch] = await store.lease(list(done.values()), "w", 30)
    await store.complete(batch.id, "w")
    await store.accept([{"messageId": "b2", "type": "track", **OTHER}], key=_key, route=lambda m: ["forward-track"])
    await store.put_profile_ids(
        {f"email:{EMAIL.lower()}": PID, f"phone:{PHONE}": PID, f"external_id:{USER}": PID, "external_id:u10": "01BOB"}
    )
    await store.put_aliases({ANON: {"user_id": USER, "email": EMAIL}, "anon-bob": {"user_id": "u10"}})
    await store.apply_versions({f"audience:vip:{PID}": datetime.now(UTC), "audience:vip:01BOB": datetime.now(UTC)})
    await store.claim_once([f"onboard:{USER}", "onboard:u10"])
    await store.put_values({f"churn:{USER}": "at_risk", "churn:u10": "ok"})
    await store.add_dead_letters(
        [
            DeadLetterIn("forward-track", {"anonymousId": ANON, "event": "x"}, "d1", "bad"),
            DeadLetterIn("forward-track", {"userId": "u10"}, "d2", "bad"),
        ]
    )


async def test_purge_person_leaves_no_trace(store: Store) -> None:
    await _remember_everything(store)
    before = await _dump(store)
    assert EMAIL.lower() in before.lower() and PID in before
    removed = await store.purge_person({"user_id": USER})  # a Segment delete carries only the userId
    assert removed["profile_ids"] == 3 and removed["dead_letters"] == 1
    after = await _dump(store)
    assert EMAIL.lower() not in after.lower()
    for trace in (PHONE, PID, ANON, f":{USER}'", f"'{USER}'", f'"{USER}"'):
        assert trace not in after, trace
    # Bob, whose user id merely starts with "u1", is untouched.
    assert await store.get_profile_ids(["external_id:u10"]) == {"external_id:u10": "01BOB"}
    assert await store.get_aliases(["anon-bob"]) and await store.is_done(["onboard:u10"])
    assert await store.get_values(["churn:u10"]) == {"churn:u10": "ok"}
    assert await store.count_dead_letters() == 1 and OTHER["email"] in after


async def test_purge_person_by_email_only(store: Store) -> None:
    await _remember_everything(store)
    await store.purge_person({"email": EMAIL})
    after = await _dump(store)
    assert EMAIL.lower() not in after.lower() and PID not in after and f'"{USER}"' not in after
    assert await store.purge_person({}) == {}


async def test_retention_purges_by_age(store: Store) -> None:
    await _remember_everything(store)
    assert set((await store.purge(timedelta(days=1), timedelta(days=1))).values()) == {0}
    removed = await store.purge(timedelta(0), timedelta(0))
    assert removed["inbox_batches"] == 1 and removed["inbox_messages"] == 2 and removed["versions"] == 2
    assert await store.backlog() == {"forward-track": 1}  # unfinished work is never purged
    assert await store.count_dead_letters() == 2 and await store.is_done(["onboard:u10"])
    assert await store.get_profile_ids(["external_id:u10"]) == {}
    # Dedupe keys are gone: the same message id is accepted again.
    assert (await store.accept([{"messageId": "j1"}], key=_key, route=lambda m: ["f"])).accepted == 1
