"""ingest-segment: one webhook event -> messages staged per flow that has work -> one batch.ready event each,
with the messages read from Prefect's events API (the run's parameters hold only the event id)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from klaviyo_segment.deploy_steps import check_project_dir, set_project_dir

ROOT = Path(__file__).resolve().parents[2]
EMAIL = "ingest-person@example.com"


async def test_one_event_stages_per_flow_and_emits_one_ready_event_per_flow(
    prefect_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter
    from prefect.types._datetime import now

    from klaviyo_segment.flows.ingest_segment import READY_EVENT, ingest_segment
    from klaviyo_segment.store import Store

    store_url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("KLAVIYO_SEGMENT_STORE_URL", store_url)
    started = now("UTC")
    messages = [
        {"type": "identify", "userId": "ing-1", "messageId": "ing-id-1", "traits": {"email": EMAIL}},
        {
            "type": "track",
            "userId": "ing-1",
            "messageId": "ing-tr-1",
            "event": "Order Completed",
            "properties": {"email": EMAIL},
        },
        {"messageId": "bad", "userId": "ing-1"},
    ]  # no type: refused at the door, a dead letter
    event_id = str(uuid.uuid4())
    event = {
        "id": event_id,
        "occurred": started.isoformat(),
        "event": "segment.batch",
        "resource": {"prefect.resource.id": "segment.source.test"},
        "payload": {"messages": messages},
    }
    async with httpx.AsyncClient(base_url=prefect_server) as http:  # what a Cloud webhook does: one event
        assert (await http.post("/events", json=[event])).status_code == 204

    summary = await ingest_segment(event_id=event_id)
    assert set(summary["batches"]) == {"sync-identify", "forward-track"}  # not every Segment flow: only work
    assert summary["received"] == 3 and summary["accepted"] == 2 and summary["dead_letters"] == 1
    assert summary["events"] == 2
    store = await Store.open(store_url)
    try:
        infos = await store.get_batches(list(summary["batches"].values()))
        assert {(i.flow, i.size, i.status) for i in infos} == {
            ("sync-identify", 1, "pending"),
            ("forward-track", 1, "pending"),
        }
    finally:
        await store.close()
    assert (await ingest_segment(event_id=event_id))["batches"] == {}  # a redelivered event stages nothing new

    async with get_client() as client:

        async def ready() -> list[Any]:
            page = await client.read_events(
                EventFilter(event=EventNameFilter(name=[READY_EVENT]), occurred=EventOccurredFilter(since=started)),
                limit=50,
            )
            return page.events

        async def poll() -> None:
            while len(await ready()) < 2:
                await asyncio.sleep(0.5)

        await asyncio.wait_for(poll(), 60)
        emitted = {e.resource.id: e.payload for e in await ready()}
        assert emitted == {
            f"klaviyo-segment.flow.{flow}": {"batch_ids": [bid]} for flow, bid in summary["batches"].items()
        }
        runs = [r for r in await client.read_flow_runs() if r.parameters.get("event_id") == event_id]
        assert runs and all(set(r.parameters) <= {"event_id", "config_block"} for r in runs)
        assert all(EMAIL not in json.dumps(r.parameters) + str(r.state.message or "") for r in runs)


async def test_an_unknown_event_id_fails_with_the_reason(prefect_server: str) -> None:
    from klaviyo_segment.errors import ConfigError
    from klaviyo_segment.flows.ingest_segment import read_event_messages

    with pytest.raises(ConfigError, match="not found in Prefect's events"):
        await read_event_messages(str(uuid.uuid4()), wait=0)
    with pytest.raises(ConfigError, match="is not an event id"):
        await read_event_messages("{{ event.id }}", wait=0)


def test_project_dir_steps_refuse_the_unset_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in (None, "", "{{ $KLAVIYO_SEGMENT_PROJECT_DIR }}"):
        with pytest.raises(ValueError, match=r"\$KLAVIYO_SEGMENT_PROJECT_DIR is not set"):
            check_project_dir(bad)
    with pytest.raises(ValueError, match="no flows/ directory"):
        set_project_dir(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert set_project_dir(str(ROOT)) == {"directory": str(ROOT)} and Path.cwd() == ROOT
