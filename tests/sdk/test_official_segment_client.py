"""The official ``segment-analytics-python`` client against the Segment emulator: gzip on and off, sync and batched.

Why: the client always posts to ``/v1/batch`` with Basic auth plus ``writeKey`` in the body and, with
``gzip=True``, a gzip body; the emulator once ignored ``Content-Encoding`` and answered 400 to every such call.
Each test checks what the emulator stored, not only that the client saw no error.
"""

from __future__ import annotations

import gzip as gzip_mod
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from segment.analytics import Client

from klaviyo_segment.devkit.sandbox.server import Sandbox


@pytest.fixture
def segment(sandbox: Sandbox) -> Iterator[httpx.Client]:
    """Inspection client on the shared sandbox's Segment emulator, reset for each test."""
    with httpx.Client(base_url=sandbox.segment_url, trust_env=False, timeout=10) as http:
        http.post("/__sandbox/reset").raise_for_status()
        yield http


def _client(sandbox: Sandbox, errors: list[Any], **options: Any) -> Client:
    return Client(
        sandbox.segment_write_key,
        host=sandbox.segment_url,
        max_retries=0,
        on_error=lambda exc, batch: errors.append((exc, batch)),
        **options,
    )


def _stored(segment: httpx.Client, **query: str) -> list[dict[str, Any]]:
    return segment.get("/__sandbox/messages", params=query).json()


@pytest.mark.parametrize("gzip", [True, False], ids=["gzip", "plain"])
def test_identify_and_track_sync_mode(sandbox: Sandbox, segment: httpx.Client, gzip: bool) -> None:
    errors: list[Any] = []
    client = _client(sandbox, errors, gzip=gzip, sync_mode=True)
    user = f"u-{uuid.uuid4().hex[:8]}"
    client.identify(user, {"email": f"{user}@example.com", "plan": "pro"})
    client.track(user, "Order Completed", {"revenue": 42.5, "currency": "EUR"})
    assert errors == []
    stats = segment.get("/__sandbox/stats").json()
    assert stats["requests"] == 2 and stats["stored"] == 2 and stats["bad_request"] == 0
    assert stats.get("gzip", 0) == (2 if gzip else 0)
    [identify] = _stored(segment, type="identify", userId=user)
    assert identify["traits"] == {"email": f"{user}@example.com", "plan": "pro"}
    assert identify["context"]["library"]["name"] == "analytics-python" and "writeKey" not in identify
    [track] = _stored(segment, type="track", userId=user)
    assert track["event"] == "Order Completed" and track["properties"] == {"revenue": 42.5, "currency": "EUR"}
    assert track["sentAt"] and track["receivedAt"] and track["messageId"]


@pytest.mark.parametrize("gzip", [True, False], ids=["gzip", "plain"])
def test_batched_messages_flush_as_one_request(sandbox: Sandbox, segment: httpx.Client, gzip: bool) -> None:
    errors: list[Any] = []
    # upload_size equal to the message count: the consumer uploads as soon as the batch is full (the 1 s
    # interval only bounds how long shutdown waits for the idle consumer)
    client = _client(sandbox, errors, gzip=gzip, upload_size=6, upload_interval=1)
    user = f"u-{uuid.uuid4().hex[:8]}"
    client.identify(user, {"name": "Batch"}, anonymous_id="anon-1")
    for i in range(5):
        client.track(user, "Viewed Product", {"sku": f"SKU-{i}"})
    client.flush()
    client.shutdown()
    assert errors == []
    stats = segment.get("/__sandbox/stats").json()
    assert stats["requests"] == 1 and stats["stored"] == 6 and stats["bad_request"] == 0
    assert stats.get("gzip", 0) == (1 if gzip else 0)
    tracks = _stored(segment, type="track", userId=user)
    assert [t["properties"]["sku"] for t in tracks] == [f"SKU-{i}" for i in range(5)]
    assert _stored(segment, type="identify", userId=user)[0]["anonymousId"] == "anon-1"


def test_client_resend_of_the_same_batch_is_deduplicated(sandbox: Sandbox, segment: httpx.Client) -> None:
    """The client's retry resends the same messageIds; the emulator keeps one copy, as Segment does."""
    errors: list[Any] = []
    client = _client(sandbox, errors, gzip=True, sync_mode=True)
    client.track("u-dup", "Signed Up", message_id="fixed-message-id")
    client.track("u-dup", "Signed Up", message_id="fixed-message-id")
    assert errors == [] and len(_stored(segment, userId="u-dup")) == 1
    assert segment.get("/__sandbox/stats").json()["deduplicated"] == 1


@pytest.mark.parametrize(
    "body",
    [b"{not gzip at all", gzip_mod.compress(b'{"batch": []}')[:-6], gzip_mod.compress(b'{"batch": []}') + b"junk"],
    ids=["not-gzip", "truncated", "trailing-junk"],
)
def test_corrupt_gzip_body_is_400(sandbox: Sandbox, segment: httpx.Client, body: bytes) -> None:
    r = segment.post(
        "/v1/batch",
        content=body,
        auth=(sandbox.segment_write_key, ""),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["code"] == "invalid_gzip"
    assert segment.get("/__sandbox/stats").json()["stored"] == 0
