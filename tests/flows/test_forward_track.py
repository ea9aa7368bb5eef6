"""forward-track against the real sandbox, as real Prefect flow runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from klaviyo_segment.flows.forward_track import forward_track
from klaviyo_segment.run_state import run_summary  # a run with dead letters ends Failed

NOW = datetime.now(UTC).replace(microsecond=0)


def track(
    mid: str, event: str, user: str | None = "u1", anon: str | None = None, age_hours: float = 1, **properties: Any
) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "type": "track",
        "messageId": mid,
        "event": event,
        "properties": properties,
        "timestamp": (NOW - timedelta(hours=age_hours)).isoformat().replace("+00:00", "Z"),
    }
    if user:
        msg["userId"] = user
    if anon:
        msg["anonymousId"] = anon
    return msg


ORDER = track(
    "o1",
    "Order Completed",
    order_id="A-1",
    total=30,
    currency="usd",
    products=[{"product_id": "p1", "price": 10}, {"product_id": "p2", "price": 20}],
)


async def test_mixed_batch_rules_mapping_and_rerun(flow_env: Any, by_id: Any) -> None:
    async with flow_env.store() as store:  # an earlier identify taught us who anon-9 is
        await store.put_aliases({"anon-9": {"user_id": "u-known", "email": "known@example.com"}})
    messages = [
        ORDER,
        track("v1", "Product Viewed", product_id="p1"),
        track("an", "Newsletter Opened", user=None, anon="anon-9"),
        track("aud", "Audience Entered", audience_key="vip"),
        track("loop", "Email Opened") | {"context": {"library": {"name": "klaviyo-segment"}}},
        {"type": "page", "messageId": "pg", "userId": "u1", "name": "Home"},
        track("deny", "Debug Ping"),
        {"type": "track", "messageId": "bad", "userId": "u1", "properties": {}},
        {"type": "identify", "messageId": "idf", "userId": "u1"},
    ]
    config = {"track": {"deny": ["Debug *"]}}
    result = await run_summary(forward_track, messages=messages, config=config)
    out = by_id(result)
    assert (result["received"], result["sent"], result["skipped"], result["failed"]) == (9, 3, 5, 1)
    assert out["aud"]["reason"] == "not for this flow" and out["idf"]["reason"] == "not for this flow"
    assert out["loop"]["reason"] == "sent by klaviyo-segment: loop prevention"
    assert out["pg"]["reason"] == "page/screen disabled"
    assert out["deny"]["reason"] == "filtered: event in deny list"
    assert out["bad"]["status"] == "failed"
    by_metric = flow_env.summary()["events_by_metric"]
    assert by_metric == {"Placed Order": 1, "Ordered Product": 2, "Viewed Product": 1, "Newsletter Opened": 1}
    products = flow_env.events("Ordered Product")
    assert sorted(e["properties"]["$event_id"] for e in products) == ["A-1:0", "A-1:1"]  # order id + line
    opened = flow_env.events("Newsletter Opened")[0]
    assert flow_env.profile(external_id="u-known")["id"] == opened["profile_id"]  # alias resolved

    again = await run_summary(forward_track, messages=messages, config=config)
    assert again["sent"] == 0 and by_id(again)["o1"]["reason"] == "duplicate of an already delivered messageId"
    assert flow_env.summary()["events"] == 5


async def test_page_and_screen_when_enabled(flow_env: Any, by_id: Any) -> None:
    messages = [
        {
            "type": "page",
            "messageId": "pg1",
            "userId": "u1",
            "name": "Pricing",
            "properties": {"url": "https://example.com/pricing"},
        },
        {"type": "screen", "messageId": "sc1", "anonymousId": "anon-s", "name": "Home"},
    ]
    result = await forward_track(messages=messages, config={"page_screen": {"enabled": True}})
    assert result["sent"] == 2
    page = flow_env.events("Viewed Page")[0]
    assert page["properties"]["name"] == "Pricing" and page["properties"]["url"] == "https://example.com/pricing"
    assert len(flow_env.events("Viewed Screen")) == 1


async def test_strict_bulk_resend_of_already_stored_events(
    sandbox_factory: Any, wire: Any, prefect_server: str, monkeypatch: Any, tmp_path: Path, by_id: Any
) -> None:
    box = wire(sandbox_factory(strict_bulk=True, rate_limits="off"))
    first = await forward_track(messages=[ORDER])
    assert first["sent"] == 1
    # Same input again from a worker without our delivered marks (e.g. a lost store): the strict job fails on
    # the stored unique_ids; the task must resend the new event and count the repeats as delivered.
    monkeypatch.setenv("KLAVIYO_SEGMENT_STORE_URL", f"sqlite:///{tmp_path}/other.db")
    again = await forward_track(messages=[ORDER, track("n1", "Product Viewed", product_id="p9")])
    assert (again["sent"], again["failed"]) == (2, 0), again["outcomes"]
    assert box.summary()["events_by_metric"] == {"Placed Order": 1, "Ordered Product": 2, "Viewed Product": 1}
    assert box.stats()["status_codes_by_operation"]["bulk_create_events"].get("400", 0) >= 1


async def test_transient_faults_fail_then_redelivery_sends_once(flow_env: Any, by_id: Any) -> None:
    flow_env.configure(faults="bulk_create_events:503=1.0")
    result = await run_summary(forward_track, messages=[ORDER])
    outcome = by_id(result)["o1"]
    assert outcome["status"] == "failed" and outcome["error"]["status"] == 503
    assert outcome["reason"].startswith("3 of 3 events failed")
    async with flow_env.store() as store:
        assert [d.message_id for d in await store.list_dead_letters(flow="forward-track")] == ["o1"]
    flow_env.configure(faults=None)
    assert (await run_summary(forward_track, messages=[ORDER]))["sent"] == 1
    assert flow_env.summary()["events"] == 3


def test_cli_preview_lines_and_backfill(flow_env: Any, tmp_path: Path) -> None:
    from klaviyo_segment.cli.app import app

    old = track("old", "Support Ticket", age_hours=48, ticket="T-1")
    new = track("new", "Plan Upgraded", user=None, anon="anon-p", plan="pro")
    path = tmp_path / "in.jsonl"
    path.write_text(f"{json.dumps(old)}\n{json.dumps(new)}\n")
    result = CliRunner().invoke(app, ["preview", "forward-track", "--input", str(path)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]

    def entry(profile: dict[str, Any], msg: dict[str, Any], backfill: bool) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "properties": msg["properties"],
            "metric": {"data": {"type": "metric", "attributes": {"name": msg["event"]}}},
            "time": msg["timestamp"].replace("Z", "+00:00"),
            "unique_id": msg["messageId"],
        }
        if backfill:
            attrs["backfill"] = True
        return {
            "type": "event-bulk-create",
            "attributes": {
                "profile": {"data": {"type": "profile", "attributes": profile}},
                "events": {"data": [{"type": "event", "attributes": attrs}]},
            },
        }

    assert lines == [
        {
            "method": "POST",
            "path": "/api/event-bulk-create-jobs",
            "body": {
                "data": {
                    "type": "event-bulk-create-job",
                    "attributes": {
                        "events-bulk-create": {
                            "data": [
                                entry({"external_id": "u1"}, old, True),
                                entry({"anonymous_id": "anon-p"}, new, False),
                            ]
                        }
                    },
                }
            },
        }
    ]


def test_cli_run_json_summary(flow_env: Any, tmp_path: Path) -> None:
    from klaviyo_segment.cli.app import app

    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(ORDER) + "\n{not json\n")
    result = CliRunner().invoke(app, ["run", "forward-track", "--input", str(path), "--json"])
    assert result.exit_code == 1, result.output  # the malformed line is one failed message
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert {k: summary[k] for k in ("flow", "received", "sent", "skipped", "failed")} == {
        "flow": "forward-track",
        "received": 2,
        "sent": 1,
        "skipped": 0,
        "failed": 1,
    }
    assert flow_env.summary()["events"] == 3
