"""sync-audiences against the sandbox over real HTTP, as real Prefect flow runs."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from klaviyo_segment.flows.sync_audiences import sync_audiences
from klaviyo_segment.run_state import run_summary  # a run with dead letters ends Failed

T0 = datetime(2026, 7, 1, tzinfo=UTC)


@pytest.fixture
def env(flow_env: Any) -> httpx.Client:
    """The reset shared sandbox's HTTP client (tests/flows/conftest.py wires env vars and the store)."""
    return flow_env.http


def make_list(klaviyo: httpx.Client, name: str) -> str:
    r = klaviyo.post("/api/lists", json={"data": {"type": "list", "attributes": {"name": name}}})
    r.raise_for_status()
    return r.json()["data"]["id"]


def members(klaviyo: httpx.Client, list_id: str) -> set[str]:
    """Emails of the list's members, via the inspection API."""
    lists = {k["id"]: k for k in klaviyo.get("/__sandbox/lists").json()}
    emails = {p["id"]: p["attributes"].get("email") for p in klaviyo.get("/__sandbox/profiles").json()}
    return {emails[pid] for pid in lists[list_id]["members"]}


def track(mid: str, user: str, enter: bool, at: datetime, key: str = "vip", **extra: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": mid,
        "userId": user,
        "timestamp": at.isoformat(),
        "event": "Audience Entered" if enter else "Audience Exited",
        "properties": {"audience_key": key, "email": f"{user}@example.com", **extra},
        "context": {"personas": {"computation_class": "audience", "computation_key": key}},
    }


def identify(mid: str, user: str, member: bool, at: datetime, key: str = "vip") -> dict[str, Any]:
    return {
        "type": "identify",
        "messageId": mid,
        "userId": user,
        "timestamp": at.isoformat(),
        "traits": {key: member, "email": f"{user}@example.com"},
        "context": {"personas": {"computation_class": "audience", "computation_key": key}},
    }


async def test_both_forms_bad_items_and_rerun(env: httpx.Client, by_id: Any) -> None:
    vip = make_list(env, "VIP")
    config = {"audiences": {"vip": vip}}
    messages = [
        track("m1", "u1", True, T0),
        identify("m2", "u2", True, T0),
        track("m3", "u3", True, T0, key="nobody_configured"),  # unknown audience
        {"type": "track", "messageId": "m4", "userId": "u4", "event": "Audience Entered", "properties": {}},
        identify("m5", "u5", True, T0) | {"traits": {"vip": "yes"}},  # not a boolean
        track("m6", "u6", False, T0),  # exit, no profile
        {"type": "track", "messageId": "m7", "event": "Audience Entered"},  # no identity at all
        {"type": "identify", "messageId": "m8", "userId": "u8", "traits": {"vip": True, "email": "u8@example.com"}},
        track("m9", "u9", True, T0) | {"integrations": {"Klaviyo": False}},
    ]
    result = await run_summary(sync_audiences, messages=messages, config=config)
    out = by_id(result)
    assert (result["received"], result["sent"]) == (9, 3)
    assert out["m1"]["status"] == out["m2"]["status"] == out["m8"]["status"] == "sent"  # m8: configured-key fallback
    assert out["m3"]["reason"] == "unknown audience nobody_configured"
    assert out["m4"]["status"] == "failed" and "audience_key" in out["m4"]["reason"]
    assert out["m5"]["status"] == "failed"
    assert (out["m6"]["status"], out["m6"]["reason"]) == ("skipped", "no Klaviyo profile")
    assert out["m7"]["status"] == "failed"
    assert out["m9"]["reason"] == "opted out (integrations)"
    assert members(env, vip) == {"u1@example.com", "u2@example.com", "u8@example.com"}
    profiles_before = len(env.get("/__sandbox/profiles").json())

    again = await run_summary(sync_audiences, messages=messages, config=config)
    assert again["sent"] == 0 and by_id(again)["m1"]["reason"] == "duplicate of an already delivered messageId"
    redelivered = await run_summary(sync_audiences, messages=[track("m1-bis", "u1", True, T0)], config=config)
    assert by_id(redelivered)["m1-bis"]["reason"] == "older than the applied change"
    assert members(env, vip) == {"u1@example.com", "u2@example.com", "u8@example.com"}
    assert len(env.get("/__sandbox/profiles").json()) == profiles_before


async def test_newest_wins_inside_a_batch_and_exit_removes(env: httpx.Client, by_id: Any) -> None:
    vip = make_list(env, "VIP")
    config = {"audiences": {"vip": vip}}
    first = await sync_audiences(messages=[track("a", "u1", True, T0), track("b", "u2", True, T0)], config=config)
    assert first["sent"] == 2
    batch = [
        track("c", "u1", False, T0 + timedelta(minutes=2)),
        identify("d", "u1", True, T0 + timedelta(minutes=1)),
        identify("e", "u2", False, T0 + timedelta(minutes=1)),
    ]
    result = await sync_audiences(messages=batch, config=config)
    out = by_id(result)
    assert out["d"]["reason"] == "superseded by a newer change"
    assert out["c"]["status"] == out["e"]["status"] == "sent"
    assert members(env, vip) == set()


async def test_lists_from_personas_and_created_on_demand(env: httpx.Client, by_id: Any) -> None:
    given = make_list(env, "From Segment")
    msg = track("p1", "u1", True, T0, key="from_settings")
    msg["context"]["personas"]["audience_settings"] = {"listId": given}
    created = [track(f"c{i}", f"u{i}", True, T0, key="brand_new") for i in range(3)]
    result = await sync_audiences(messages=[msg, *created], config={"audiences_create_lists": True})
    assert result["sent"] == 4
    lists = {k["name"]: k for k in env.get("/__sandbox/lists").json()}
    assert len(lists["brand_new"]["members"]) == 3 and len(lists["From Segment"]["members"]) == 1
    assert sum(1 for k in env.get("/__sandbox/lists").json() if k["name"] == "brand_new") == 1


async def test_transient_faults_fail_then_redelivery_applies(env: httpx.Client, by_id: Any) -> None:
    vip = make_list(env, "VIP")
    config = {"audiences": {"vip": vip}}
    env.post("/__sandbox/config", json={"faults": "add_profiles_to_list:503=1.0"}).raise_for_status()
    result = await run_summary(sync_audiences, messages=[track("f1", "u1", True, T0)], config=config)
    assert result["failed"] == 1 and by_id(result)["f1"]["error"]["status"] == 503
    env.post("/__sandbox/config", json={"faults": None}).raise_for_status()
    retry = await run_summary(sync_audiences, messages=[track("f1", "u1", True, T0)], config=config)
    assert retry["sent"] == 1  # the version was not stored on failure, so the redelivery is applied
    assert members(env, vip) == {"u1@example.com"}


@pytest.mark.slow
async def test_shuffled_duplicated_stream_for_1000_users(env: httpx.Client) -> None:
    vip = make_list(env, "VIP")
    config = {"audiences": {"vip": vip}}
    rng = random.Random(7)
    stream: list[dict[str, Any]] = []
    expected: set[str] = set()
    for n in range(1000):
        user = f"user{n}"
        offsets = rng.sample(range(1, 10_000), 3)
        events = [(T0 + timedelta(seconds=s), rng.random() < 0.5) for s in offsets]
        for k, (at, enter) in enumerate(events):
            maker = track if k % 2 else identify
            stream.append(maker(f"{user}-{k}", user, enter, at))
        if max(events)[1]:
            expected.add(f"{user}@example.com")
    stream += rng.sample(stream, 600)  # redeliveries with the same messageId
    rng.shuffle(stream)
    for part in range(4):
        result = await sync_audiences(messages=stream[part::4], config=config)
        assert result["failed"] == 0, result["reasons"]
    assert members(env, vip) == expected


async def test_profile_merged_away_in_klaviyo_is_looked_up_again(env: httpx.Client, by_id: Any) -> None:
    """Issue 14 item 7: the identity cache holds the id of a profile Klaviyo merged away; the list call answers
    "not found", the keys are forgotten and looked up once more, and the change reaches the surviving profile."""
    vip = make_list(env, "VIP")
    config = {"audiences": {"vip": vip}}
    first = await run_summary(sync_audiences, messages=[track("m1", "u-mg", True, T0)], config=config)
    assert first["sent"] == 1  # u-mg's profile id is now cached
    stale = next(p["id"] for p in env.get("/__sandbox/profiles").json() if p["attributes"].get("external_id") == "u-mg")
    keep = env.post(
        "/api/profile-import", json={"data": {"type": "profile", "attributes": {"email": "keep-mg@example.com"}}}
    ).json()["data"]["id"]
    merge = {
        "type": "profile-merge",
        "id": keep,
        "relationships": {"profiles": {"data": [{"type": "profile", "id": stale}]}},
    }
    env.post("/api/profile-merge", json={"data": merge}).raise_for_status()
    assert members(env, vip) == {"keep-mg@example.com"}  # the membership moved with the merge
    result = await run_summary(
        sync_audiences, messages=[track("m2", "u-mg", False, T0 + timedelta(minutes=1))], config=config
    )
    assert by_id(result)["m2"]["status"] == "sent", by_id(result)["m2"]
    assert members(env, vip) == set()
