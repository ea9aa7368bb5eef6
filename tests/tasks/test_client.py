"""Client edge cases with respx (127.0.0.1 passes through): retries, error parsing, pagination, headers."""

from __future__ import annotations

import logging

import httpx
import pytest
import respx

from klaviyo_segment.blocks.klaviyo import KlaviyoCredentials
from klaviyo_segment.errors import KlaviyoAPIError
from tests.tasks.conftest import KEY, Sleeps, make


async def test_headers_method_and_path_come_from_schema(mock: respx.MockRouter) -> None:
    route = mock.post("/api/lists/L1/relationships/profiles").respond(204)
    async with make(Sleeps()) as client:
        resp = await client.request("add_profiles_to_list", path_params={"id": "L1"}, json={"data": []})
    assert resp.status_code == 204
    sent = route.calls.last.request
    assert sent.headers["Authorization"] == f"Klaviyo-API-Key {KEY}"
    assert sent.headers["revision"] == "2026-07-15"
    assert sent.headers["Content-Type"] == "application/vnd.api+json"


async def test_429_honours_retry_after(mock: respx.MockRouter) -> None:
    throttled = {"errors": [{"status": 429, "code": "throttled", "detail": "Request was throttled."}]}
    route = mock.post("/api/profile-import").mock(
        side_effect=[
            httpx.Response(429, json=throttled, headers={"Retry-After": "7"}),
            httpx.Response(201, json={"data": {"id": "01P"}}),
        ]
    )
    sleeps = Sleeps()
    async with make(sleeps) as client:
        resp = await client.request("create_or_update_profile", json={"data": {}})
    assert resp.json()["data"]["id"] == "01P" and route.call_count == 2
    assert 7 <= sleeps[0] <= 7.25


async def test_500_then_success_with_backoff(mock: respx.MockRouter) -> None:
    mock.get("/api/lists").mock(
        side_effect=[
            httpx.Response(500),
            httpx.Response(503, text="<html>oops"),
            httpx.Response(200, json={"data": []}),
        ]
    )
    sleeps = Sleeps()
    async with make(sleeps, backoff_base=1.0) as client:
        resp = await client.request("get_lists")
    assert resp.status_code == 200
    assert len(sleeps) == 2 and 0.5 <= sleeps[0] <= 1.5 and 1.0 <= sleeps[1] <= 3.0


async def test_timeouts_exhaust_attempts_as_retryable_error(mock: respx.MockRouter) -> None:
    route = mock.get("/api/metrics").mock(side_effect=httpx.ReadTimeout("slow"))
    async with make(Sleeps(), max_attempts=3) as client:
        with pytest.raises(KlaviyoAPIError) as info:
            await client.request("get_metrics")
    assert info.value.retryable and info.value.status is None and route.call_count == 3


async def test_connection_reset_then_success(mock: respx.MockRouter) -> None:
    mock.get("/api/metrics").mock(side_effect=[httpx.ReadError("reset"), httpx.Response(200, json={"data": []})])
    async with make(Sleeps()) as client:
        assert (await client.request("get_metrics")).status_code == 200


async def test_409_is_not_retried_and_is_parsed(mock: respx.MockRouter) -> None:
    body = {
        "errors": [
            {
                "id": "e1",
                "status": 409,
                "code": "duplicate_profile",
                "title": "Conflict.",
                "detail": "A profile already exists with one of these identifiers.",
                "source": {"pointer": "/data/attributes"},
                "meta": {"duplicate_profile_id": "01DUP"},
            }
        ]
    }
    route = mock.post("/api/profile-import").respond(409, json=body)
    async with make(Sleeps()) as client:
        with pytest.raises(KlaviyoAPIError) as info:
            await client.request("create_or_update_profile", json={"data": {}})
    err = info.value.first
    assert route.call_count == 1 and not info.value.retryable
    assert (err.status, err.code, err.pointer, err.meta["duplicate_profile_id"]) == (
        409,
        "duplicate_profile",
        "/data/attributes",
        "01DUP",
    )


@pytest.mark.parametrize("content", [b"{not json", b'{"errors": "nope"}', b"[1,2]", b""])
async def test_malformed_error_bodies_still_raise_typed_errors(mock: respx.MockRouter, content: bytes) -> None:
    mock.post("/api/events").respond(400, content=content)
    async with make(Sleeps()) as client:
        with pytest.raises(KlaviyoAPIError) as info:
            await client.request("create_event", json={})
    assert info.value.status == 400 and info.value.first.status == 400


async def test_malformed_success_json_in_pagination_is_an_error(mock: respx.MockRouter) -> None:
    mock.get("/api/metrics").respond(200, content=b"<html>")
    async with make(Sleeps(), max_attempts=1) as client:
        with pytest.raises(KlaviyoAPIError, match="malformed"):
            _ = [p async for p in client.paginate("get_metrics")]


async def test_paginate_follows_links_next_on_our_base(mock: respx.MockRouter) -> None:
    page2 = "https://a.klaviyo.com/api/profiles?page%5Bcursor%5D=c2&filter=x"
    first = mock.get("/api/profiles", params={"filter": 'any(email,["a@b.co"])'}).respond(
        200, json={"data": [{"id": "1"}], "links": {"next": page2}}
    )
    second = mock.get("/api/profiles", params={"page[cursor]": "c2"}).respond(
        200, json={"data": [{"id": "2"}], "links": {"next": None}}
    )
    async with make(Sleeps()) as client:
        pages = [p async for p in client.paginate("get_profiles", {"filter": 'any(email,["a@b.co"])'})]
    assert [d["id"] for p in pages for d in p["data"]] == ["1", "2"]
    assert first.call_count == 1 and second.call_count == 1
    assert second.calls.last.request.url.host == "klaviyo.test"


async def test_key_and_pii_never_logged(mock: respx.MockRouter, caplog: pytest.LogCaptureFixture) -> None:
    mock.post("/api/profile-import").respond(400, json={"errors": [{"detail": "bad email zoe.long@example.com"}]})
    caplog.set_level(logging.DEBUG, logger="klaviyo_segment")
    async with make(Sleeps()) as client:
        with pytest.raises(KlaviyoAPIError):
            await client.request("create_or_update_profile", json={"data": {}})
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "profile-import" in text
    assert KEY not in text and "zoe.long@example.com" not in text


def test_block_rejects_non_private_key_and_builds_client() -> None:
    with pytest.raises(ValueError, match="pk_"):
        KlaviyoCredentials(api_key="AbC123")
    creds = KlaviyoCredentials(api_key=KEY)
    assert KEY not in repr(creds) and KEY not in creds.account_key
    http = creds.get_client()
    assert str(http.base_url) == "https://a.klaviyo.com" and http.headers["revision"] == "2026-07-15"
    assert http.headers["accept"] == "application/vnd.api+json"
