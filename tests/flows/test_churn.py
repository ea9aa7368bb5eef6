"""churn-winback against the sandbox over real HTTP, as real Prefect flow runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from klaviyo_segment.flows.churn_winback import churn_winback
from klaviyo_segment.run_state import run_summary  # a run with dead letters ends Failed

T0 = datetime(2026, 7, 1, tzinfo=UTC)


@pytest.fixture
def env(flow_env: Any) -> httpx.Client:
    return flow_env.http


def setup_list(env: httpx.Client) -> tuple[str, dict[str, Any]]:
    r = env.post("/api/lists", json={"data": {"type": "list", "attributes": {"name": "Win-back"}}})
    r.raise_for_status()
    list_id = r.json()["data"]["id"]
    return list_id, {"churn": {"list_id": list_id, "threshold": 0.7}}


def score(mid: str, user: str, value: Any, minutes: int) -> dict[str, Any]:
    return {
        "type": "identify",
        "messageId": mid,
        "userId": user,
        "timestamp": (T0 + timedelta(minutes=minutes)).isoformat(),
        "traits": {"churn_risk_score": value, "email": f"{user}@example.com"},
    }


def audience(mid: str, user: str, enter: bool, minutes: int) -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": mid,
        "userId": user,
        "timestamp": (T0 + timedelta(minutes=minutes)).isoformat(),
        "event": "Audience Entered" if enter else "Audience Exited",
        "properties": {"audience_key": "churn_risk_users", "email": f"{user}@example.com"},
    }


def state(env: httpx.Client, list_id: str) -> tuple[set[str], dict[str, dict[str, Any]]]:
    profiles = {p["id"]: p["attributes"] for p in env.get("/__sandbox/profiles").json()}
    lists = {k["id"]: k for k in env.get("/__sandbox/lists").json()}
    members = {profiles[pid]["email"] for pid in lists[list_id]["members"]}
    return members, {a["email"]: a.get("properties") or {} for a in profiles.values()}


async def test_score_transitions_audience_form_and_bad_items(env: httpx.Client, by_id: Any) -> None:
    list_id, config = setup_list(env)
    first = await run_summary(
        churn_winback,
        messages=[
            score("s1", "low", 0.2, 0),
            score("s2", "high", 0.9, 0),
            audience("a1", "aud", True, 0),
            score("bad", "x", "very", 0),
            {"type": "identify", "messageId": "other", "userId": "o", "traits": {"a": 1}},
        ],
        config=config,
    )
    out = by_id(first)
    assert out["s1"]["reason"] == "no churn transition"
    assert out["s2"]["status"] == out["a1"]["status"] == "sent"
    assert out["bad"]["status"] == "failed" and out["other"]["reason"] == "not for this flow"
    members, props = state(env, list_id)
    assert members == {"high@example.com", "aud@example.com"}
    assert props["high@example.com"]["churn_risk"] is True
    assert props["high@example.com"]["churn_risk_score"] == 0.9
    assert props["high@example.com"]["churn_risk_entered_at"].startswith("2026-07-01T00:00")

    second = await run_summary(
        churn_winback,
        messages=[
            score("s3", "low", 0.8, 5),
            score("s4", "high", 0.95, 5),
            score("s5", "high", 0.3, 6),
            audience("a2", "aud", False, 5),
            score("late", "low", 0.1, 1),
        ],
        config=config,
    )
    out = by_id(second)
    assert out["s3"]["status"] == "sent" and out["s5"]["status"] == "sent"
    assert out["s4"]["reason"] == "superseded by a newer change"
    assert out["late"]["reason"] == "superseded by a newer change"
    members, props = state(env, list_id)
    assert members == {"low@example.com"}
    assert props["high@example.com"]["churn_risk"] is False and props["aud@example.com"]["churn_risk"] is False

    replay = await run_summary(churn_winback, messages=[score("late-2", "low", 0.1, 1)], config=config)
    assert by_id(replay)["late-2"]["reason"] == "older than the applied change"
    assert state(env, list_id)[0] == {"low@example.com"}
    again = await run_summary(churn_winback, messages=[score("s3", "low", 0.8, 5)], config=config)
    assert again["sent"] == 0
    assert len(env.get("/__sandbox/profiles").json()) == 3


async def test_transient_fault_is_retried_by_redelivery(env: httpx.Client, by_id: Any) -> None:
    list_id, config = setup_list(env)
    env.post("/__sandbox/config", json={"faults": "add_profiles_to_list:503=1.0"}).raise_for_status()
    failed = await run_summary(churn_winback, messages=[score("f", "u", 0.9, 0)], config=config)
    assert failed["failed"] == 1
    env.post("/__sandbox/config", json={"faults": None}).raise_for_status()
    retried = await run_summary(churn_winback, messages=[score("f", "u", 0.9, 0)], config=config)
    assert retried["sent"] == 1  # neither the score nor the version was stored by the failed run
    assert state(env, list_id)[0] == {"u@example.com"}


def test_superseded_score_is_still_remembered_as_previous() -> None:
    """A score superseded by a newer audience change in the same batch was still the person's latest score
    report: it must become the stored previous value (else a later drop below the threshold looks like no
    transition); a person with a failed change keeps the old value so a redelivery compares correctly."""
    from datetime import datetime, timedelta

    from klaviyo_segment.flows.churn_winback import latest_scores
    from klaviyo_segment.membership import SUPERSEDED, Change
    from klaviyo_segment.runtime import Item

    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def change(i: int, person: str, score: float | None, **state: Any) -> Change:
        c = Change(
            item=Item(i, f"m{i}", {}),
            version_key=f"churn:{person}",
            at=t0 + timedelta(minutes=i),
            identity={},
            data={"score": score, "value_key": f"churn:{person}"},
        )
        for key, value in state.items():
            setattr(c, key, value)
        return c

    changes = [
        change(1, "a", 0.9, skip=SUPERSEDED),
        change(2, "a", None, done=True),  # audience enter wins
        change(3, "b", 0.8, done=True),
        change(4, "b", 0.3, skip=SUPERSEDED),
        change(5, "c", 0.9, fail="profile update failed"),
    ]
    assert latest_scores(changes) == {"churn:a": 0.9, "churn:b": 0.3}
