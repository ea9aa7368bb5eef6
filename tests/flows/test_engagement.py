"""engagement-to-segment against the real sandbox: Klaviyo engagement events (delivered as signed system
webhooks to a local capture server, or polled) become Segment track calls in the Segment emulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from typer.testing import CliRunner

from klaviyo_segment.devkit.sandbox.segment.serve import serve_in_thread
from klaviyo_segment.flows.engagement_to_segment import CURSOR, engagement_to_segment
from klaviyo_segment.run_state import run_summary  # a run with dead letters ends Failed
from klaviyo_segment.runtime import MALFORMED

FlowSandbox = Any  # tests/flows/conftest.py's FlowSandbox (fixture ``flow_env``)


def by_id(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["message_id"]: o for o in result["outcomes"]}


class Capture:
    """A webhook endpoint on 127.0.0.1 that keeps every delivery body the Klaviyo sandbox posts."""

    def __init__(self) -> None:
        self.deliveries: list[dict[str, Any]] = []
        app = Starlette(routes=[Route("/hook", self._hook, methods=["POST"])])
        self.base, self.stop = serve_in_thread(app)
        self.url = f"{self.base}/hook"

    async def _hook(self, request: Request) -> JSONResponse:
        self.deliveries.append(json.loads(await request.body()))
        return JSONResponse({"ok": True})


@pytest.fixture(scope="module")
def capture() -> Iterator[Capture]:
    box = Capture()
    yield box
    box.stop()


@pytest.fixture
def box(flow_env: FlowSandbox, capture: Capture) -> FlowSandbox:
    """Shared sandbox, reset; Segment emulator emptied; webhooks go to the capture server."""
    httpx.post(f"{flow_env.box.segment_url}/__sandbox/reset").raise_for_status()
    flow_env.configure(webhook_url=capture.url)
    capture.deliveries.clear()
    return flow_env


def make_profile(box: FlowSandbox, **attrs: Any) -> str:
    response = box.http.post("/api/profiles", json={"data": {"type": "profile", "attributes": attrs}})
    response.raise_for_status()
    return response.json()["data"]["id"]


def engage(box: FlowSandbox, *events: dict[str, Any]) -> list[str]:
    response = box.http.post("/__sandbox/engagement", json={"events": list(events)})
    response.raise_for_status()
    return response.json()["event_ids"]


def segment_messages(box: FlowSandbox, **params: str) -> list[dict[str, Any]]:
    return httpx.get(f"{box.box.segment_url}/__sandbox/messages", params=params).json()


def segment_stats(box: FlowSandbox) -> dict[str, Any]:
    return httpx.get(f"{box.box.segment_url}/__sandbox/stats").json()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def seed_engagement(box: FlowSandbox) -> tuple[str, str]:
    """An opened campaign email (known user) and a clicked flow email (email-only profile)."""
    make_profile(box, email="ada@example.com", external_id="user-ada")
    make_profile(box, email="bob@example.com")
    when = datetime.now(UTC) - timedelta(minutes=30)
    opened, clicked = engage(
        box,
        {
            "metric": "Opened Email",
            "email": "ada@example.com",
            "datetime": _iso(when),
            "properties": {"$message": "CAMP1", "Campaign Name": "Spring Sale", "Subject": "20% off"},
        },
        {
            "metric": "Clicked Email",
            "email": "bob@example.com",
            "datetime": _iso(when + timedelta(minutes=1)),
            "properties": {
                "$message": "FMSG1",
                "$flow": "FLOW1",
                "URL": "https://shop.example/sale",
                "Subject": "Welcome",
            },
        },
    )
    return opened, clicked


async def test_webhook_delivery_with_bad_records(box: FlowSandbox, capture: Capture) -> None:
    opened, clicked = seed_engagement(box)
    assert len(capture.deliveries) == 1, "the sandbox delivers the events as one signed system webhook"
    delivery = capture.deliveries[0]
    sms = {"external_id": "SMS1", "topic": "event:klaviyo.sent_sms", "payload": {"type": "event", "id": "SMS1"}}
    no_payload = {"external_id": "BROKEN1", "topic": "event:klaviyo.opened_email"}
    messages = [delivery, sms, no_payload, {MALFORMED: "line 4: Expecting value (column 1)"}]

    result = await run_summary(engagement_to_segment, messages=messages)

    assert (result["received"], result["sent"], result["skipped"], result["failed"]) == (5, 2, 1, 2)
    outcomes = by_id(result)
    assert outcomes[opened]["status"] == "sent" and outcomes[clicked]["status"] == "sent"
    assert outcomes["SMS1"]["reason"] == "not for this flow"
    assert "payload" in outcomes["BROKEN1"]["reason"]
    [open_msg] = segment_messages(box, event="Email Opened")
    assert open_msg["userId"] == "user-ada" and "anonymousId" not in open_msg
    assert open_msg["messageId"] == f"klaviyo-event-{opened}"
    assert open_msg["integrations"] == {"Klaviyo": False, "Klaviyo (Actions)": False}
    assert open_msg["context"]["library"]["name"] == "klaviyo-segment"
    assert open_msg["properties"]["campaign_id"] == "CAMP1"
    assert open_msg["properties"]["campaign_name"] == "Spring Sale"
    assert open_msg["properties"]["email_subject"] == "20% off"
    [click_msg] = segment_messages(box, event="Email Link Clicked")
    assert click_msg["anonymousId"] == "bob@example.com" and "userId" not in click_msg
    assert click_msg["properties"]["link_url"] == "https://shop.example/sale"
    assert click_msg["properties"]["flow_id"] == "FLOW1"
    async with box.store() as store:
        letters = await store.list_dead_letters(flow="engagement-to-segment")
    assert "BROKEN1" in {d.message_id for d in letters} and len(letters) == 2  # + the malformed line

    again = await run_summary(engagement_to_segment, messages=messages)

    assert again["sent"] == 0
    assert by_id(again)[opened]["reason"] == "duplicate of an already delivered messageId"
    assert len(segment_messages(box)) == 2 and segment_stats(box)["deduplicated"] == 0


async def test_record_without_usable_profile_is_skipped(box: FlowSandbox) -> None:
    pid = make_profile(box, phone_number="+15005550006")
    [event_id] = engage(box, {"metric": "Bounced Email", "profile_id": pid, "properties": {"Bounce Type": "hard"}})
    events = box.http.get("/api/events", params={"filter": f'equals(profile_id,"{pid}")'}).json()["data"]
    record = {"external_id": event_id, "payload": events[0], "topic": "event:klaviyo.bounced_email"}
    gone = {
        "external_id": "GONE1",
        "topic": "event:klaviyo.opened_email",
        "payload": {
            **events[0],
            "id": "GONE1",
            "relationships": {"profile": {"data": {"type": "profile", "id": "NOSUCHPROFILE"}}},
        },
    }

    result = await engagement_to_segment(messages=[record, gone])

    outcomes = by_id(result)
    assert outcomes[event_id]["reason"].startswith("no Klaviyo identifier")
    assert outcomes["GONE1"]["reason"] == "profile not found in Klaviyo"
    assert result["failed"] == 0 and segment_messages(box) == []


async def test_transient_lookup_faults_are_retried(box: FlowSandbox, capture: Capture) -> None:
    opened, clicked = seed_engagement(box)
    box.configure(faults="get_profiles:503=0.6", seed=7)
    try:
        result = await engagement_to_segment(messages=capture.deliveries[0]["data"])
    finally:
        box.configure(faults=None)
    assert result["sent"] == 2, result
    assert {m["messageId"] for m in segment_messages(box)} == {f"klaviyo-event-{opened}", f"klaviyo-event-{clicked}"}


async def test_poll_advances_cursor_and_rerun_sends_nothing(box: FlowSandbox) -> None:
    opened, clicked = seed_engagement(box)
    old = datetime.now(UTC) - timedelta(hours=30)
    [stale] = engage(
        box,
        {
            "metric": "Received Email",
            "email": "ada@example.com",
            "datetime": _iso(old),
            "properties": {"$message": "CAMP0", "Subject": "Old news"},
        },
    )

    first = await engagement_to_segment(poll=True)

    assert first["sent"] == 2 and first["received"] == 2, "a first poll reads 24 h back, not the 30 h old event"
    async with box.store() as store:
        cursor = await store.get_cursor(CURSOR)
    assert cursor is not None and datetime.fromisoformat(cursor) > old + timedelta(hours=6)

    second = await engagement_to_segment(poll=True)

    assert second["sent"] == 0 and second["skipped"] == second["received"] == 2  # lookback re-reads them
    backfill = await engagement_to_segment(poll=True, since=_iso(old - timedelta(minutes=1)))
    assert backfill["sent"] == 1 and by_id(backfill)[stale]["status"] == "sent"
    [delivered] = segment_messages(box, event="Email Delivered")
    assert delivered["timestamp"].startswith(_iso(old)[:19])
    assert len(segment_messages(box)) == 3


def test_run_json_and_preview_cli(box: FlowSandbox, capture: Capture, tmp_path: Path) -> None:
    from klaviyo_segment.cli.app import app

    opened, _ = seed_engagement(box)
    path = tmp_path / "engagement.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in capture.deliveries[0]["data"]) + "\n{not json\n")
    runner = CliRunner()

    preview = runner.invoke(app, ["preview", "engagement-to-segment", "--input", str(path)])
    lines = [json.loads(line) for line in preview.stdout.splitlines() if line.startswith("{")]
    assert preview.exit_code == 1  # the malformed line is a failed message
    assert lines[0]["method"] == "GET" and lines[0]["path"].startswith("/api/profiles")
    [batch] = [line for line in lines if line["path"] == "/v1/batch"]
    assert {m["messageId"] for m in batch["body"]["batch"]} >= {f"klaviyo-event-{opened}"}
    assert segment_messages(box) == [], "preview sends nothing"

    run = runner.invoke(app, ["run", "engagement-to-segment", "--input", str(path), "--json"])
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert run.exit_code == 1
    assert (summary["received"], summary["sent"], summary["failed"]) == (3, 2, 1)
    assert len(segment_messages(box)) == 2
