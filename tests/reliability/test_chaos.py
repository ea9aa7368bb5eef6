"""Chaos, CI-sized: a generated stream through the receiver and dispatcher while the sandbox injects 5xx, 429s,
resets, lost 202s and latency, and the worker is SIGKILLed mid-run. Klaviyo must end up holding exactly what the
stream says (events, profiles and their properties, list memberships, subscriptions, churn flags, nothing of
deleted people), and the dead letters must be exactly the invalid messages, each with a reason."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import pytest

from klaviyo_segment.config import AppConfig
from klaviyo_segment.devkit.chaos_expect import Expected, compare, expected_state, failures
from klaviyo_segment.devkit.cli.chaos import _with_invalid, failed_checks, run_chaos
from klaviyo_segment.devkit.demo import demo_config
from klaviyo_segment.devkit.sandbox.segment.generators import CHURN_AUDIENCE, generate_stream
from tests.fixtures.postgres import create_database

MESSAGES = int(os.environ.get("KS_CHAOS_MESSAGES", "20000"))
PG_MESSAGES = int(os.environ.get("KS_CHAOS_PG_MESSAGES", "5000"))
LISTS = {
    name: name.upper()[:6]
    for name in [
        "vip_customers",
        "first_time_shopper",
        "high_intent_browsers",
        "lapsed_90_days",
        CHURN_AUDIENCE,
        "Onboarding",
        "Churn Win-back",
    ]
}


def _expected(count: int) -> tuple[AppConfig, Expected]:
    stream, invalid = _with_invalid(generate_stream(count, seed=3), 97)
    config = AppConfig.from_document(demo_config(LISTS))
    return config, expected_state(stream, invalid, config, datetime.now(UTC))


def test_expectation_covers_every_category() -> None:
    """The computed state is not vacuous: every category the chaos run checks has items to miss."""
    _, expected = _expected(3000)
    assert len(expected.events) > 500 and len(expected.profiles) > 300
    assert expected.subscribed and expected.deleted
    assert any(expected.churn.values()) and not all(expected.churn.values())
    members = expected.lists
    assert set(members) == set(LISTS.values())
    assert all(any(m.values()) for m in members.values()) and any(not v for m in members.values() for v in m.values())
    assert not expected.deleted & set(expected.profiles)


def test_compare_reports_each_kind_of_drift() -> None:
    """Feed the comparison a Klaviyo that holds the expected state, then break one thing per category."""
    _, exp = _expected(1500)
    users = sorted(exp.profiles)

    def profile(i: int, user: str) -> dict[str, Any]:
        churn = {"churn_risk": exp.churn[user]} if user in exp.churn else {}
        consent = "SUBSCRIBED" if user in exp.subscribed else "NEVER_SUBSCRIBED"
        return {
            "id": f"p{i}",
            "attributes": {
                "external_id": user,
                "properties": dict(exp.profiles[user]) | churn,
                "subscriptions": {"email": {"marketing": {"consent": consent}}},
            },
        }

    profiles = [profile(i, u) for i, u in enumerate(users)]
    pid = {u: f"p{i}" for i, u in enumerate(users)}
    events = [
        {"profile_id": pid.get(u, u), "metric": m, "properties": {"$event_id": uid}} for (u, m, uid) in exp.events
    ]
    lists = [{"id": lid, "members": [pid[u] for u, ok in m.items() if ok]} for lid, m in exp.lists.items()]
    assert failures(compare(exp, profiles, events, lists)) == []

    deleted = sorted(exp.deleted)[0]
    profiles[0]["attributes"]["properties"] = {k: "changed" for k in profiles[0]["attributes"]["properties"]}
    broken = compare(
        exp,
        profiles[1:] + [profiles[0], {"id": "ghost", "attributes": {"external_id": deleted}}],
        events[1:] + events[:2],
        lists[1:] + [{"id": lists[0]["id"], "members": []}],
    )
    assert broken["events"]["duplicates"] == 1 and broken["events"]["missing"] == 0
    assert broken["deleted_remaining"]["unexpected"] == 1 and broken["profiles"]["unexpected"] == 1
    assert broken["list_memberships"]["missing"] == len(lists[0]["members"])
    if exp.profiles[users[0]]:
        assert broken["profile_properties"]["first_missing"] == [users[0]]
        assert set(broken["profile_properties"]["wrong_values_by_property"]) <= set(exp.profiles[users[0]])
    assert set(failures(broken)) >= {"events", "profiles", "deleted_remaining", "list_memberships"}


def test_poison_mix_refuses_repairs_and_expects_the_repaired_form() -> None:
    from klaviyo_segment.devkit import chaos_poison as poison

    stream, _ = _with_invalid(generate_stream(2000, seed=3), 97)
    mixed, refused, repaired = poison.with_poison(stream, 89)
    assert len(mixed) == len(stream) + len(refused) and refused and repaired
    kinds = {mid.split("-")[1] for mid in refused}
    assert kinds == set(poison.REFUSED_KINDS)
    stored = poison.as_stored(mixed, refused, repaired)
    assert len(stored) == len(stream)
    fixed = [m for m in stored if m["messageId"] in repaired]
    assert fixed and all("\ufffd" in repr(m) and "\\ud8" not in repr(m) for m in fixed)
    singles = poison.single_requests()
    assert {} in singles and any(m.get("messageId") == "poison-deep" for m in singles)
    legacy, bad = poison.legacy_batch(8, ["u1"], "2026-01-01T00:00:00Z")
    assert len(legacy) == 8 and len(bad) == 2


def _assert_exact(figures: dict[str, Any]) -> None:
    """Faults and the kill happened, poison was mixed in, and the run ended exact (see ``failed_checks``)."""
    assert figures["faults"].get("503", 0) > 0 and figures["faults"].get("reset", 0) > 0
    assert figures["worker_kills"] == 1
    assert figures["invalid"] > 0 and figures["dead_letters"] >= figures["invalid"]
    poisoned = figures["poison"]  # hostile input: door-refused, door-repaired, stored before the door, singles
    assert poisoned["batch_elements_refused"] > 0 and poisoned["repaired_delivered"] > 0
    assert poisoned["legacy_poison"] > 0 and poisoned["dead_letters_by_flow"].get("forward-track", 0) > 0
    assert poisoned["dead_letters_by_flow"]["receiver"] == poisoned["batch_elements_refused"]
    singles = poisoned["single_requests"]
    assert singles["requests"] == singles["answered_4xx_with_reason"] > 0, singles
    assert all(figures["expected"].values()), figures["expected"]  # every category had something to check
    assert {name: figures["exactness"][name] for name in failures(figures["exactness"])} == {}
    assert failed_checks(figures) == []


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_chaos_run(prefect_server: str) -> None:
    figures = await run_chaos(MESSAGES, max_seconds=600, rate_scale=10.0)
    print(f"\nchaos figures: {figures}")
    _assert_exact(figures)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(900)
async def test_chaos_run_postgres_two_receivers(prefect_server: str, postgres_url: str) -> None:
    """The multi-receiver layout: two receiver processes group-commit into one PostgreSQL store while the worker
    process (SIGKILLed mid-run) dispatches; deliveries alternate between the receivers."""
    store_url = create_database(postgres_url)
    figures = await run_chaos(PG_MESSAGES, store_url=store_url, receivers=2, max_seconds=600, rate_scale=10.0)
    print(f"\nchaos figures (PostgreSQL, 2 receivers): {figures}")
    assert figures["store"] == "postgresql+asyncpg" and figures["receivers"] == 2
    assert len(figures["batches_per_receiver"]) == 2 and min(figures["batches_per_receiver"]) > 0
    _assert_exact(figures)


def test_one_valid_message_dead_lettered_fails_the_run() -> None:
    """No tolerance: a single valid message dead-lettered fails the run, even with Klaviyo's state exact."""
    figures: dict[str, Any] = {
        "exactness": {},
        "backlog_left": {},
        "dead_letters_without_reason": 0,
        "invalid_not_dead_lettered": [],
        "dead_letters_not_invalid": [],
        "messages": 20_000,
        "poison": {},
    }
    assert failed_checks(figures) == []
    assert failed_checks(figures | {"dead_letters_not_invalid": ["m-1"]}) == ["dead_letters_not_invalid"]
