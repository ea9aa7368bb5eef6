"""Task edges the emulator cannot produce on demand (respx, 127.0.0.1 passes through): error pointer shapes
the emulator never emits, import errors carrying only ``original_payload``, and duplicate metric names."""

from __future__ import annotations

import json
from typing import Any

import httpx
import respx
from prefect.logging import disable_run_logger

from klaviyo_segment.tasks import klaviyo_events as ev
from klaviyo_segment.tasks import klaviyo_metrics as me
from klaviyo_segment.tasks import klaviyo_profiles as pf
from tests.tasks.conftest import Sleeps, make


def err(status: int, code: str, pointer: str | None = None) -> dict[str, Any]:
    e: dict[str, Any] = {"status": status, "code": code, "title": code, "detail": code}
    if pointer:
        e["source"] = {"pointer": pointer}
    return {"errors": [e]}


async def test_bulk_events_event_and_group_pointers(mock: respx.MockRouter) -> None:
    """An event-level pointer fails one event; a group-level duplicate pointer marks the group duplicate."""

    def reply(request: httpx.Request) -> httpx.Response:
        groups = json.loads(request.content)["data"]["attributes"]["events-bulk-create"]["data"]
        for n, g in enumerate(groups):
            for m, e in enumerate(g["attributes"]["events"]["data"]):
                props = e["attributes"]["properties"]
                if props.get("bad"):
                    return httpx.Response(
                        400,
                        json=err(
                            400,
                            "invalid",
                            f"/data/attributes/events-bulk-create/"
                            f"data/{n}/attributes/events/data/{m}/attributes/properties",
                        ),
                    )
                if props.get("seen"):
                    return httpx.Response(
                        400, json=err(400, "duplicate_unique_id", f"/data/attributes/events-bulk-create/data/{n}")
                    )
        return httpx.Response(202)

    route = mock.post("/api/event-bulk-create-jobs").mock(side_effect=reply)
    events = [
        {"metric": "Paid", "profile": {"email": f"u{i}@x.io"}, "properties": {"i": i}, "unique_id": f"m{i}"}
        for i in range(6)
    ]
    events[2]["properties"]["bad"] = True
    events[4]["properties"]["seen"] = True
    async with make(Sleeps()) as client:
        with disable_run_logger():
            out = await ev.bulk_create_events.fn(events, client)
    assert [r.ok for r in out] == [True, True, False, True, True, True]
    assert out[2].error.pointer.endswith("/events/data/0/attributes/properties")
    assert out[4].value == {"duplicate": True}
    assert route.call_count == 3
    last = json.loads(route.calls.last.request.content)["data"]["attributes"]["events-bulk-create"]["data"]
    assert len(last) == 4  # 0, 1, 3, 5 resent


async def test_import_errors_matched_by_original_payload(mock: respx.MockRouter) -> None:
    mock.post("/api/profile-bulk-import-jobs").respond(202, json={"data": {"id": "JOB1"}})
    mock.get("/api/profile-bulk-import-jobs/JOB1").respond(
        200, json={"data": {"id": "JOB1", "attributes": {"status": "complete", "failed_count": 1}}}
    )
    mock.get("/api/profile-bulk-import-jobs/JOB1/import-errors").respond(
        200,
        json={
            "data": [
                {
                    "type": "import-error",
                    "attributes": {"code": "invalid", "detail": "bad", "original_payload": {"email": "c@x.io"}},
                }
            ],
            "links": {},
        },
    )
    async with make(Sleeps()) as client:
        with disable_run_logger():
            out = await pf.bulk_import_profiles.fn([{"email": "a@x.io"}, {"email": "c@x.io"}], client, poll_interval=0)
    assert out[0].ok and out[0].value == {"job_id": "JOB1"}
    assert not out[1].ok and out[1].error.detail == "bad"


async def test_duplicate_metric_names_keep_the_first(mock: respx.MockRouter) -> None:
    mock.get("/api/metrics").respond(
        200,
        json={
            "data": [
                {"id": "M1", "attributes": {"name": "Opened Email"}},
                {"id": "M2", "attributes": {"name": "Opened Email"}},
            ]
        },
    )
    async with make(Sleeps()) as client:
        with disable_run_logger():
            assert await me.get_metrics.fn(client) == {"Opened Email": "M1"}
