"""replay-dead-letters against the real sandbox: messages that failed (a missing API scope) are replayed
through their flow once the cause is fixed; what now succeeds is resolved, what still fails stays."""

from __future__ import annotations

from typing import Any

import httpx

from klaviyo_segment.flows.engagement_to_segment import engagement_to_segment
from klaviyo_segment.flows.forward_track import forward_track
from klaviyo_segment.flows.replay_dead_letters import mark_replay, replay_dead_letters
from klaviyo_segment.run_state import call_flow, run_summary  # a run with dead letters ends Failed
from klaviyo_segment.runtime import maybe_emit_threshold_event
from klaviyo_segment.store import DeadLetterIn

TRACK = {
    "type": "track",
    "messageId": "rp-1",
    "userId": "rp-user",
    "event": "Order Completed",
    "timestamp": "2026-07-20T10:01:00Z",
    "context": {"traits": {"email": "rp@example.com"}},
}
ALL_BUT_PROFILES_READ = [
    "events:read",
    "events:write",
    "metrics:read",
    "profiles:write",
    "lists:read",
    "lists:write",
    "subscriptions:write",
]


def _engage(flow_env: Any) -> list[dict[str, Any]]:
    """Two engagement events as webhook-shaped records (payload = the Get Events resource)."""
    for attrs in ({"email": "cy@example.com", "external_id": "user-cy"}, {"email": "di@example.com"}):
        flow_env.http.post("/api/profiles", json={"data": {"type": "profile", "attributes": attrs}}).raise_for_status()
    flow_env.http.post(
        "/__sandbox/engagement",
        json={
            "events": [
                {"metric": "Opened Email", "email": "cy@example.com", "properties": {"$message": "C1"}},
                {"metric": "Unsubscribed", "email": "di@example.com", "properties": {"List": "Newsletter"}},
            ]
        },
    ).raise_for_status()
    events = flow_env.http.get("/api/events", params={"filter": "has(profile)"}).json()["data"]
    topics = {"Opened Email": "event:klaviyo.opened_email", "Unsubscribed": "event:klaviyo.unsubscribed"}
    names = {e["metric_id"]: e["metric"] for e in flow_env.events()}
    return [
        {"external_id": e["id"], "payload": e, "topic": topics[names[e["relationships"]["metric"]["data"]["id"]]]}
        for e in events
    ]


async def test_replay_resolves_fixed_failures_and_keeps_the_rest(flow_env: Any) -> None:
    segment = flow_env.box.segment_url
    httpx.post(f"{segment}/__sandbox/reset").raise_for_status()
    records = _engage(flow_env)
    broken = {"external_id": "BROKEN2", "topic": "event:klaviyo.opened_email"}
    flow_env.configure(scopes=ALL_BUT_PROFILES_READ)
    try:
        first = await run_summary(engagement_to_segment, messages=[*records, broken])
    finally:
        flow_env.configure(scopes=None)
    assert first["failed"] == 3 and first["sent"] == 0
    async with flow_env.store() as store:
        await store.add_dead_letters(
            [
                DeadLetterIn(
                    flow="backfill-profiles",
                    message={"email": "x@example.com"},
                    message_id="row-1",
                    reason="not replayable here",
                )
            ]
        )

    replay, state = await call_flow(replay_dead_letters, flow="engagement-to-segment")

    assert (replay["received"], replay["sent"], replay["failed"]) == (3, 2, 1)
    # one letter failed again: the run says so (an automation on failed runs fires), not Completed
    assert state.is_failed() and state.name == "PartlyFailed"
    assert state.message.startswith("1 of 3 messages failed — see dead letters (sent 2")
    assert replay["resolved"] == 2 and replay["remaining"] == 1
    sent = httpx.get(f"{segment}/__sandbox/messages").json()
    assert {m["event"] for m in sent} == {"Email Opened", "Email Unsubscribed"}
    async with flow_env.store() as store:
        left = {d.message_id: d for d in await store.list_dead_letters()}
    assert set(left) == {"BROKEN2", "row-1"} and left["BROKEN2"].attempts == 2
    assert left["BROKEN2"].message["context"] == {"replay": True}

    everything, state = await call_flow(replay_dead_letters)

    assert state.is_failed() and state.name == "Failed"  # nothing delivered: every letter failed again
    assert state.message.startswith("2 of 2 messages failed")
    assert everything["sent"] == 0 and everything["resolved"] == 0 and everything["remaining"] == 2
    assert "unknown flow" in everything["flows"]["backfill-profiles"]["error"]
    assert len(httpx.get(f"{segment}/__sandbox/messages").json()) == 2, "replaying twice sends nothing new"

    only, _ = await call_flow(replay_dead_letters, ids=[left["row-1"].id])
    assert only["received"] == 1 and "engagement-to-segment" not in only["flows"]


async def test_replay_that_fixes_everything_completes(flow_env: Any) -> None:
    flow_env.configure(scopes=["profiles:read"])  # forward-track needs events:write
    first = await run_summary(forward_track, messages=[TRACK], config={})
    assert first["failed"] == 1
    flow_env.configure(scopes=None)
    replay, state = await call_flow(replay_dead_letters, flow="forward-track")
    assert (replay["sent"], replay["resolved"], replay["remaining"]) == (1, 1, 0)
    assert state.is_completed() and state.name == "Completed" and not state.message
    nothing, state = await call_flow(replay_dead_letters)
    assert nothing["received"] == 0 and state.is_completed()


def test_mark_replay_keeps_the_key_and_flags_the_copy() -> None:
    original = {"type": "track", "event": "Order Completed", "userId": "u1", "context": {"ip": "1.2.3.4"}}
    copy = mark_replay(original, "sha1:abc")
    assert copy["context"] == {"ip": "1.2.3.4", "replay": True} and copy["messageId"] == "sha1:abc"
    assert "replay" not in original["context"]
    assert mark_replay({"messageId": "m1"}, "other")["messageId"] == "m1"


async def test_threshold_event(flow_env: Any, monkeypatch: Any) -> None:
    emitted: list[dict[str, Any]] = []
    import prefect.events

    monkeypatch.setattr(prefect.events, "emit_event", lambda **kw: emitted.append(kw))
    async with flow_env.store() as store:
        await store.add_dead_letters(
            [DeadLetterIn(flow="forward-track", message={}, message_id=f"m{i}", reason="x") for i in range(3)]
        )
        assert await maybe_emit_threshold_event(store, 4) is False
        assert await maybe_emit_threshold_event(store, 3) is True
    assert emitted[0]["event"] == "klaviyo-segment.dead-letters.threshold"
    assert emitted[0]["resource"] == {"prefect.resource.id": "klaviyo-segment.dead-letters"}
    assert emitted[0]["payload"] == {"count": 3, "threshold": 3}
    from klaviyo_segment.config import AppConfig

    assert AppConfig.from_document({"dead_letters": {"threshold": 5}}).dead_letters.threshold == 5
    assert AppConfig().dead_letters.threshold == 100
