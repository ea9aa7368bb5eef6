"""Segment Tracking API emulator over real HTTP: auth, size/count limits, batch merge, storage, inspection."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from klaviyo_segment.devkit.sandbox.segment.app import create_app, get_state
from klaviyo_segment.devkit.sandbox.segment.serve import serve_in_thread

WRITE_KEY = "wk_test_123"


@pytest.fixture(scope="module")
def segment() -> Iterator[tuple[httpx.Client, Any]]:
    app = create_app(WRITE_KEY)
    base_url, stop = serve_in_thread(app)
    with httpx.Client(base_url=base_url, trust_env=False, timeout=10) as client:
        yield client, app
    stop()


@pytest.fixture()
def client(segment: tuple[httpx.Client, Any]) -> httpx.Client:
    http, _ = segment
    assert http.post("/__sandbox/reset").status_code == 200
    return http


def _basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def _stats(client: httpx.Client) -> dict[str, int]:
    return client.get("/__sandbox/stats").json()


def _msg(i: int, **extra: Any) -> dict[str, Any]:
    return {"type": "track", "userId": f"u{i}", "event": "Order Completed", "messageId": f"m{i}", **extra}


def test_basic_auth_stores_message_with_received_at(client: httpx.Client) -> None:
    r = client.post(
        "/v1/identify", json={"userId": "u1", "traits": {"email": "a@example.com"}}, headers=_basic(WRITE_KEY)
    )
    assert r.status_code == 200 and r.json() == {"success": True}
    [stored] = client.get("/__sandbox/messages").json()
    assert stored["type"] == "identify" and stored["traits"]["email"] == "a@example.com"
    assert stored["receivedAt"].endswith("Z") and stored["messageId"]


def test_write_key_in_body_is_accepted_and_not_stored(client: httpx.Client) -> None:
    r = client.post("/v1/track", json={"writeKey": WRITE_KEY, "userId": "u1", "event": "Signed Up"})
    assert r.status_code == 200
    [stored] = client.get("/__sandbox/messages", params={"type": "track"}).json()
    assert stored["event"] == "Signed Up" and "writeKey" not in stored


@pytest.mark.parametrize(
    "headers,body_key",
    [({}, None), (_basic("wrong"), None), ({}, "wrong"), ({"Authorization": "Basic !!notbase64"}, None)],
)
def test_wrong_or_missing_write_key_answers_200_but_loses_data(
    client: httpx.Client, headers: dict[str, str], body_key: str | None
) -> None:
    body: dict[str, Any] = {"userId": "u1", "event": "x"}
    if body_key:
        body["writeKey"] = body_key
    assert client.post("/v1/track", json=body, headers=headers).status_code == 200
    assert client.get("/__sandbox/messages").json() == []
    stats = _stats(client)
    assert stats["unauthorized"] == 1 and stats["unauthorized_messages"] == 1 and stats["stored"] == 0


def test_invalid_json_is_400(client: httpx.Client) -> None:
    r = client.post(
        "/v1/track", content=b"{not json", headers={**_basic(WRITE_KEY), "Content-Type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["code"] == "invalid_json"
    assert _stats(client)["bad_request"] == 1


def test_message_over_32kb_is_400_and_just_under_is_accepted(client: httpx.Client) -> None:
    big = {"userId": "u1", "event": "x", "properties": {"blob": "a" * (32 * 1024)}}
    assert client.post("/v1/track", json=big, headers=_basic(WRITE_KEY)).status_code == 400
    ok = {"userId": "u1", "event": "x", "properties": {"blob": "a" * (31 * 1024)}}
    assert client.post("/v1/track", json=ok, headers=_basic(WRITE_KEY)).status_code == 200
    # inside a batch the per-message limit applies too
    batch = {"batch": [_msg(1, properties={"blob": "b" * (33 * 1024)})]}
    assert client.post("/v1/batch", json=batch, headers=_basic(WRITE_KEY)).status_code == 400
    assert _stats(client)["stored"] == 1


def test_request_over_500kb_is_400(client: httpx.Client) -> None:
    items = [_msg(i, properties={"blob": "c" * 20_000}) for i in range(26)]  # ~520 KB, each under 32 KB
    r = client.post("/v1/batch", json={"batch": items}, headers=_basic(WRITE_KEY))
    assert r.status_code == 400 and r.json()["code"] == "request_too_large"
    assert client.post("/v1/batch", json={"batch": items[:20]}, headers=_basic(WRITE_KEY)).status_code == 200
    assert _stats(client)["stored"] == 20


def test_batch_over_2500_is_200_but_dropped_and_counted(client: httpx.Client) -> None:
    items = [{"type": "track", "userId": "u", "event": "e", "messageId": f"m{i}"} for i in range(2501)]
    r = client.post("/v1/batch", json={"batch": items}, headers=_basic(WRITE_KEY))
    assert r.status_code == 200
    stats = _stats(client)
    assert stats["dropped_over_limit"] == 2501 and stats["stored"] == 0
    assert client.post("/v1/batch", json={"batch": items[:2500]}, headers=_basic(WRITE_KEY)).status_code == 200
    assert _stats(client)["stored"] == 2500


def test_batch_merges_context_and_integrations_item_values_win(client: httpx.Client) -> None:
    body = {
        "writeKey": WRITE_KEY,
        "sentAt": "2026-01-01T00:00:00.000Z",
        "context": {"library": {"name": "analytics-python", "version": "2.3.4"}, "app": {"name": "shop"}},
        "integrations": {"All": True, "Mixpanel": False},
        "batch": [
            _msg(1),
            _msg(2, context={"app": {"version": "9"}, "ip": "203.0.113.1"}, integrations={"Mixpanel": True}),
        ],
    }
    assert client.post("/v1/batch", json=body).status_code == 200
    first, second = client.get("/__sandbox/messages").json()
    assert first["context"] == body["context"] and first["integrations"] == {"All": True, "Mixpanel": False}
    assert second["context"] == {
        "library": {"name": "analytics-python", "version": "2.3.4"},
        "app": {"name": "shop", "version": "9"},
        "ip": "203.0.113.1",
    }
    assert second["integrations"] == {"All": True, "Mixpanel": True}
    assert first["sentAt"] == "2026-01-01T00:00:00.000Z"


def test_filters_dedup_and_invalid_messages(segment: tuple[httpx.Client, Any], client: httpx.Client) -> None:
    batch = [
        _msg(1),
        _msg(2, event="Product Viewed"),
        _msg(1),  # duplicate messageId
        {"type": "identify", "userId": "u3", "messageId": "m3"},
        {"type": "track", "messageId": "m4", "event": "no id"},  # semantic error: 200, never delivered
        {"type": "track", "userId": "u5", "messageId": "m5"},
    ]  # track without event
    assert client.post("/v1/batch", json={"batch": batch}, headers=_basic(WRITE_KEY)).status_code == 200
    assert [m["messageId"] for m in client.get("/__sandbox/messages", params={"type": "track"}).json()] == ["m1", "m2"]
    assert [m["userId"] for m in client.get("/__sandbox/messages", params={"event": "Product Viewed"}).json()] == ["u2"]
    assert [m["type"] for m in client.get("/__sandbox/messages", params={"userId": "u3"}).json()] == ["identify"]
    stats = _stats(client)
    assert stats["deduplicated"] == 1 and stats["invalid"] == 2 and stats["stored"] == 3
    assert {i["reason"] for i in client.get("/__sandbox/invalid").json()} == {
        "userId or anonymousId is required",
        "track requires event",
    }
    _, app = segment
    assert [m["messageId"] for m in get_state(app).query(type_="identify")] == ["m3"]


def test_reset_and_unknown_endpoint(client: httpx.Client) -> None:
    client.post("/v1/page", json={"anonymousId": "a1", "name": "Home"}, headers=_basic(WRITE_KEY))
    assert len(client.get("/__sandbox/messages").json()) == 1
    assert client.post("/__sandbox/reset").json() == {"reset": True}
    assert client.get("/__sandbox/messages").json() == [] and _stats(client)["requests"] == 0
    assert client.post("/v1/nope", json={}, headers=_basic(WRITE_KEY)).status_code == 404
    assert (
        json.loads(client.post("/v1/batch", json={"batch": "x"}, headers=_basic(WRITE_KEY)).text)["code"]
        == "invalid_batch"
    )


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_invalid_json(client: httpx.Client, number: str) -> None:
    raw = ('{"userId": "u1", "event": "E", "messageId": "nf", "properties": {"x": ' + number + "}}").encode()
    r = client.post("/v1/track", content=raw, headers={**_basic(WRITE_KEY), "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_json"
    assert client.get("/__sandbox/messages").status_code == 200
