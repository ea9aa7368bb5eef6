"""sync-consent against the sandbox over real HTTP, as real Prefect flow runs: Segment consent events and traits
become Klaviyo subscribe/unsubscribe jobs per channel; the newest change per person and channel wins; an older
subscribe never undoes a newer opt-out (in Segment or in Klaviyo); historical_import only when configured."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from klaviyo_segment.config import AppConfig
from klaviyo_segment.flows.sync_consent import routes, sync_consent

NOW = datetime.now(UTC)


@pytest.fixture
def env(flow_env: Any) -> httpx.Client:
    return flow_env.http


def track(mid: str, event: str, user: str, at: datetime | None = None, **traits: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": mid,
        "userId": user,
        "event": event,
        "timestamp": (at or NOW - timedelta(minutes=5)).isoformat(),
        "properties": {},
        "context": {"traits": {"email": f"{user}@example.com", **traits}},
    }


def identify(mid: str, user: str, at: datetime | None = None, **traits: Any) -> dict[str, Any]:
    return {
        "type": "identify",
        "messageId": mid,
        "userId": user,
        "timestamp": (at or NOW - timedelta(minutes=5)).isoformat(),
        "traits": {"email": f"{user}@example.com", **traits},
    }


def marketing(env: httpx.Client, channel: str, **attrs: Any) -> dict[str, Any]:
    found = [
        p for p in env.get("/__sandbox/profiles").json() if all(p["attributes"].get(k) == v for k, v in attrs.items())
    ]
    assert len(found) == 1, found
    return found[0]["attributes"]["subscriptions"][channel]["marketing"]


ENABLED = {"consent": {"enabled": True}}


def test_routes_only_when_enabled() -> None:
    off, on = AppConfig(), AppConfig.model_validate(ENABLED)
    subscribed = track("r1", "User Subscribed", "ann")
    trait = identify("r2", "ann", email_subscribed=False)
    assert not routes(subscribed, off) and not routes(trait, off)  # default: existing users see no change
    assert routes(subscribed, on) and routes(trait, on)
    assert routes(track("r3", "User Unsubscribed", "ann"), on)
    assert not routes(track("r4", "Order Completed", "ann"), on) and not routes(identify("r5", "ann", plan="x"), on)


async def test_events_and_traits_subscribe_and_unsubscribe_per_channel(env: httpx.Client, by_id: Any) -> None:
    phone = "+14155550150"
    messages = [
        track("s1", "User Subscribed", "ann"),
        identify("s2", "bob", sms_subscribed=True, phone=phone),
        track("u0", "User Subscribed", "cid", at=NOW - timedelta(minutes=9)),
        track("u1", "User Unsubscribed", "cid", at=NOW - timedelta(minutes=8)),
        identify("u2", "dan", email_subscribed=False),
        identify("x1", "eve", plan="pro"),
    ]
    result = await sync_consent(messages=messages, config=ENABLED)
    out = by_id(result)
    assert [out[m]["status"] for m in ("s1", "s2", "u1", "u2")] == ["sent"] * 4, out
    assert out["u0"]["status"] == "skipped" and out["u0"]["reason"] == "superseded by a newer change"
    assert out["x1"]["status"] == "skipped"
    assert marketing(env, "email", email="ann@example.com")["consent"] == "SUBSCRIBED"
    assert marketing(env, "sms", phone_number=phone)["consent"] == "SUBSCRIBED"
    assert not [
        p
        for p in env.get("/__sandbox/profiles").json()  # the trait named SMS only: email untouched
        if p["attributes"]["subscriptions"]["email"]["marketing"]["consent"] == "SUBSCRIBED"
        and p["attributes"].get("email") == "bob@example.com"
    ]
    assert marketing(env, "email", email="cid@example.com")["consent"] == "UNSUBSCRIBED"
    assert marketing(env, "email", email="dan@example.com")["consent"] == "UNSUBSCRIBED"

    late = await sync_consent(
        messages=[track("u0-late", "User Subscribed", "cid", at=NOW - timedelta(minutes=9))], config=ENABLED
    )
    assert by_id(late)["u0-late"]["reason"] == "older than the applied change"
    assert marketing(env, "email", email="cid@example.com")["consent"] == "UNSUBSCRIBED"


async def test_subscribe_older_than_a_klaviyo_opt_out_is_skipped(env: httpx.Client, by_id: Any) -> None:
    """A subscribe event delayed past an unsubscribe made in Klaviyo must not clear that unsubscribe."""
    r = env.post(
        "/api/profile-subscription-bulk-delete-jobs",
        json={
            "data": {
                "type": "profile-subscription-bulk-delete-job",
                "attributes": {
                    "profiles": {
                        "data": [
                            {
                                "type": "profile",
                                "attributes": {
                                    "email": "fay@example.com",
                                    "subscriptions": {"email": {"marketing": {"consent": "UNSUBSCRIBED"}}},
                                },
                            }
                        ]
                    }
                },
            }
        },
    )
    assert r.status_code == 202, r.text
    result = await sync_consent(
        messages=[
            track("f1", "User Subscribed", "fay", at=NOW - timedelta(hours=1)),
            track("g1", "User Subscribed", "gus", at=NOW - timedelta(days=3)),
        ],
        config=ENABLED,
    )
    out = by_id(result)
    assert out["f1"]["status"] == "skipped" and "opted out in Klaviyo after" in out["f1"]["reason"], out["f1"]
    assert marketing(env, "email", email="fay@example.com")["consent"] == "UNSUBSCRIBED"
    # historical_import is off by default, whatever the event's age: Klaviyo stamps consent now, not 3 days ago
    gus = marketing(env, "email", email="gus@example.com")
    assert gus["consent"] == "SUBSCRIBED"
    assert datetime.fromisoformat(gus["consent_timestamp"]) > NOW - timedelta(hours=1)


async def test_historical_import_list_and_unsubscribe_batches(env: httpx.Client, by_id: Any) -> None:
    r = env.post("/api/lists", json={"data": {"type": "list", "attributes": {"name": "Newsletter"}}})
    list_id = r.json()["data"]["id"]
    at = NOW - timedelta(days=2)
    config = {"consent": {"enabled": True, "list_id": list_id, "historical_import": True, "custom_source": "Web"}}
    result = await sync_consent(messages=[track("h1", "User Subscribed", "hal", at=at)], config=config)
    assert by_id(result)["h1"]["status"] == "sent"
    hal = marketing(env, "email", email="hal@example.com")
    assert datetime.fromisoformat(hal["consent_timestamp"]) == at.replace(microsecond=at.microsecond // 1000 * 1000)
    lists = {k["id"]: k for k in env.get("/__sandbox/lists").json()}
    assert len(lists[list_id]["members"]) == 1
    before = env.get("/__sandbox/stats").json()["requests"].get("bulk_unsubscribe_profiles", 0)
    many = [track(f"m{i}", "User Unsubscribed", f"user{i}") for i in range(150)]
    result = await sync_consent(messages=many, config={"consent": {"enabled": True}})
    assert result["sent"] == 150
    assert env.get("/__sandbox/stats").json()["requests"]["bulk_unsubscribe_profiles"] - before == 2  # <= 100 each
    assert marketing(env, "email", email="user149@example.com")["consent"] == "UNSUBSCRIBED"
