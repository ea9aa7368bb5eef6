"""Klaviyo emulator over HTTP: bodies that are not JSON (NaN, Infinity, overflowing numbers) are a 400 and leave
the inspection API working; large bulk bodies go through the compiled check with the reference's errors."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from klaviyo_segment.builders.bulk_events import bulk_create_events_body
from klaviyo_segment.devkit.sandbox.klaviyo.operations import load_operations
from klaviyo_segment.devkit.sandbox.klaviyo.validation import validate_body_reference

EVENT_TEMPLATE = (
    '{"data": {"type": "event", "attributes": {"properties": {"price": NUMBER}, '
    '"metric": {"data": {"type": "metric", "attributes": {"name": "NonFinite"}}}, '
    '"profile": {"data": {"type": "profile", "attributes": {"email": "nf@example.com"}}}}}}'
)


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400", "-1e999"])
def test_non_finite_numbers_are_400_and_inspection_keeps_working(klaviyo: httpx.Client, number: str) -> None:
    r = klaviyo.post("/api/events", content=EVENT_TEMPLATE.replace("NUMBER", number).encode())
    assert r.status_code == 400, r.text
    error = r.json()["errors"][0]
    assert error["detail"] == "Request body is not valid JSON." and error["source"] == {"pointer": "/"}
    inspect = klaviyo.get("/__sandbox/events", params={"metric": "NonFinite"})
    assert inspect.status_code == 200 and inspect.json() == []
    assert klaviyo.get("/__sandbox/events").status_code == 200


def test_finite_numbers_still_accepted(klaviyo: httpx.Client) -> None:
    r = klaviyo.post("/api/events", content=EVENT_TEMPLATE.replace("NUMBER", "1.5e300").encode())
    assert r.status_code == 202, r.text
    stored = klaviyo.get("/__sandbox/events", params={"metric": "NonFinite"}).json()
    assert [e["properties"]["price"] for e in stored] == [1.5e300]


def test_engagement_with_non_finite_property_is_400(klaviyo: httpx.Client) -> None:
    raw = b'{"events": [{"metric": "Opened Email", "email": "e@example.com", "properties": {"x": NaN}}]}'
    r = klaviyo.post("/__sandbox/engagement", content=raw)
    assert r.status_code == 400
    assert klaviyo.get("/__sandbox/events").status_code == 200


def _bulk(count: int) -> dict[str, Any]:
    events = [
        {
            "metric": "Bulk Fast",
            "profile": {
                "email": f"u{i % 250}@example.com",
                "first_name": "Ann",
                "location": {"city": "Paris", "country": "FR"},
            },
            "properties": {"sku": f"SKU-{i}", "price": 9.5, "tags": ["a", "b"], "blob": "x" * 200},
            "time": "2026-07-01T12:00:00Z",
            "value": 9.5,
            "unique_id": f"bf-{i}",
        }
        for i in range(count)
    ]
    return json.loads(json.dumps(bulk_create_events_body(events).body))


def test_large_bulk_body_accepted_and_its_errors_are_the_reference_errors(klaviyo: httpx.Client) -> None:
    body = _bulk(1000)
    assert len(json.dumps(body)) > 256 * 1024  # validated off the event loop
    r = klaviyo.post("/api/event-bulk-create-jobs", json=body)
    assert r.status_code == 202, r.text[:500]
    last = body["data"]["attributes"]["events-bulk-create"]["data"][-1]["attributes"]
    last["events"]["data"][-1]["attributes"]["colour"] = "red"
    last["profile"]["data"]["attributes"]["location"]["street"] = "x"
    r = klaviyo.post("/api/event-bulk-create-jobs", json=body)
    assert r.status_code == 400
    expected = validate_body_reference(body, load_operations()["bulk_create_events"].request_schema)
    got = r.json()["errors"]
    assert len(got) == 2 and [{k: v for k, v in e.items() if k != "id"} for e in got] == [
        {k: v for k, v in e.items() if k != "id"} for e in expected
    ]
    assert {e["detail"] for e in got} == {
        "'colour' is not a valid field for the resource 'event'.",
        "'street' is not a valid field for the resource 'profile'.",
    }
