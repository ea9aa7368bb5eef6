"""End to end on real components: Segment delivery simulator -> receiver -> store -> inline flow runs (real Prefect
test server) -> Klaviyo sandbox, and Klaviyo engagement webhooks -> receiver -> engagement-to-segment -> Segment."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from klaviyo_segment.devkit.demo import run_pipeline, sandbox_env
from klaviyo_segment.devkit.sandbox.segment.generators import generate_stream
from klaviyo_segment.flows import names as flow_names
from klaviyo_segment.routing import audience_key
from klaviyo_segment.store import Store


@pytest.mark.slow
async def test_pipeline_covers_every_template(
    sandbox_factory, prefect_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = sandbox_factory(rate_limits="off")
    for name, value in sandbox_env(box).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KLAVIYO_SEGMENT_STORE_URL", f"sqlite:///{tmp_path}/state.db")
    store = await Store.open(f"sqlite:///{tmp_path}/state.db")
    stages: list[tuple[float, str]] = []
    try:
        result = await run_pipeline(
            box, store, count=120, seed=3, timeout=120, progress=lambda m: stages.append((time.monotonic(), m))
        )
        replay = await run_pipeline_again(box, store)
    finally:
        await store.close()
    t0 = stages[0][0]
    print("stages", [(round(t - t0, 2), m) for t, m in stages if not m.startswith("delivered ")])
    print("runs", result.runs, "durations", result.durations, "latency", result.latency)
    assert result.problems == [], (result.problems, result.flows)
    assert result.acknowledged == result.delivered == 121
    # sync-consent is off by default (the demo config leaves it off); tests/flows/test_sync_consent.py covers it.
    assert set(result.flows) == set(flow_names()) - {"sync-consent"}, f"flows that ran: {sorted(result.flows)}"
    k = result.klaviyo
    assert k["profiles"] >= 10
    for metric in ("Viewed Product", "Placed Order", "Ordered Product", "Signed Up", "Opened Email"):
        assert k["events_by_metric"].get(metric, 0) > 0, k["events_by_metric"]
    assert k["lists"]["Onboarding"] > 0
    # Every deleted person is absent. (Whether Klaviyo saw a deletion request depends on batching: when the
    # identify and the later delete share a batch, the delete runs first and the older identify is skipped
    # "older than a delete", so no profile is created at all.)
    deleted = {m["userId"] for m in generate_stream(120, seed=3) if m["type"] == "delete"}
    remaining = {p["attributes"].get("external_id") for p in httpx.get(f"{box.klaviyo_url}/__sandbox/profiles").json()}
    assert deleted and not deleted & remaining, deleted & remaining
    assert result.segment_received >= result.engagement_sent > 0
    assert sum(v["failed"] for v in result.flows.values()) == 1  # the deliberately invalid message
    assert replay == k["events_by_metric"]
    expected = expected_memberships(generate_stream(120, seed=3))
    assert sum(expected.values()) > 0  # the stream leaves some members, so the check below can fail
    for key in ("vip_customers", "first_time_shopper", "high_intent_browsers", "lapsed_90_days"):
        assert k["lists"][key] == expected.get(key, 0), (key, k["lists"], expected)
    stats = httpx.get(f"{box.klaviyo_url}/__sandbox/stats").json()
    assert stats["requests"].get("add_profiles_to_list", 0) > 0  # entries were applied before the exits
    assert stats["requests"].get("remove_profiles_from_list", 0) > 0


def expected_memberships(messages: list[dict]) -> dict[str, int]:
    """Members per audience implied by the newest change per (audience, user) in the stream."""
    newest: dict[tuple[str, str], tuple[str, bool]] = {}
    for m in messages:
        key = audience_key(m)
        if not key:
            continue
        enter = m["event"] == "Audience Entered" if m["type"] == "track" else bool(m["traits"].get(key))
        person = (key, m.get("userId") or m.get("anonymousId"))
        if person not in newest or m["timestamp"] > newest[person][0]:
            newest[person] = (m["timestamp"], enter)
    counts: dict[str, int] = {}
    for (key, _), (_, member) in newest.items():
        counts[key] = counts.get(key, 0) + int(member)
    return counts


async def run_pipeline_again(box: object, store: Store) -> dict[str, int]:
    """Segment redelivering the same stream must not create a single extra Klaviyo event."""
    from klaviyo_segment.config import AppConfig
    from klaviyo_segment.devkit.demo import INVALID
    from klaviyo_segment.devkit.sandbox.segment.generators import generate_stream
    from klaviyo_segment.devkit.sandbox.segment.simulator import deliver
    from klaviyo_segment.ingress.receiver import ReceiverSettings
    from klaviyo_segment.ingress.runner import start_ingress

    ingress = await start_ingress(
        store,
        AppConfig(),
        settings=ReceiverSettings(
            box.segment_shared_secret,  # type: ignore[attr-defined]
            box.klaviyo_webhook_secret,
        ),  # type: ignore[attr-defined]
        dispatch=None,
    )
    try:
        report = await deliver(
            f"{ingress.url}/segment",
            generate_stream(120, seed=3) + [dict(INVALID)],
            box.segment_shared_secret,
            batch_size=10,
        )  # type: ignore[attr-defined]
        assert len(report.acknowledged) == 121
        assert ingress.committer.stats.accepted == 0  # every message was a duplicate: nothing new to run
    finally:
        await ingress.stop()
    async with httpx.AsyncClient(base_url=box.klaviyo_url) as client:  # type: ignore[attr-defined]
        return (await client.get("/__sandbox")).json()["events_by_metric"]
