"""Hostile input at the receiver's door, over real HTTP (uvicorn on 127.0.0.1) and a real store, once on SQLite and
once on PostgreSQL: one bad message must never fail the group commit it shares with good ones, every refusal
has a reason (400 for a single event, a dead letter inside a batch), and cheap attacks cost little."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from klaviyo_segment.config import AppConfig
from klaviyo_segment.flows import names as flow_names
from klaviyo_segment.ingress.door import DOOR_FLOW
from klaviyo_segment.ingress.receiver import ReceiverSettings
from klaviyo_segment.ingress.runner import Ingress, start_ingress
from klaviyo_segment.ingress.signatures import segment_signature
from klaviyo_segment.store import Store
from tests.ingress.helpers import SEGMENT_SECRET, identify, segment_request

SETTINGS = ReceiverSettings(segment_secret=SEGMENT_SECRET)
SURROGATE = '"\\ud800"'  # a lone surrogate as a JSON escape, exactly as it arrives on the wire


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = await Store.open(store_url)
    try:
        yield opened
    finally:
        await opened.close()


async def _ingress(store: Any, settings: ReceiverSettings = SETTINGS, **committer: Any) -> Ingress:
    return await start_ingress(
        store,
        AppConfig(),
        settings=settings,
        dispatch=None,
        flows=list(flow_names()),
        committer_options=committer or None,
    )


def _raw(text: str) -> tuple[bytes, dict[str, str]]:
    """A single event whose body is exactly ``text`` (signed over those bytes, as Segment signs one event)."""
    body = text.encode()
    import hashlib
    import hmac

    sig = hmac.new(SEGMENT_SECRET.encode(), body, hashlib.sha1).hexdigest()
    return body, {"Content-Type": "application/json", "X-Signature": sig}


def _hostile_singles() -> dict[str, str]:
    return {
        "surrogate messageId": '{"type":"identify","messageId":' + SURROGATE + ',"userId":"h1"}',
        "NUL messageId": '{"type":"identify","messageId":"a\\u0000b","userId":"h2"}',
        "NUL userId": '{"type":"identify","messageId":"h-3","userId":"x\\u0000"}',
        "empty object": "{}",
        "no type": '{"messageId":"h-5","userId":"h5"}',
        "unknown type": '{"type":"bogus","messageId":"h-6","userId":"h6"}',
    }


async def test_hostile_messages_never_fail_the_group_commit_of_valid_ones(store: Store) -> None:
    """The reported failure: 109 of 200 valid deliveries answered 503 because one message broke the commit."""
    ingress = await _ingress(store, max_wait=0.05)
    hostile = _hostile_singles()
    try:
        async with httpx.AsyncClient(base_url=ingress.url, timeout=30) as client:

            async def good(i: int) -> int:
                body, headers = segment_request(identify(i))
                return (await client.post("/segment", content=body, headers=headers)).status_code

            async def bad(text: str) -> httpx.Response:
                body, headers = _raw(text)
                return await client.post("/segment", content=body, headers=headers)

            results = await asyncio.gather(*(good(i) for i in range(200)), *(bad(t) for t in hostile.values()))
        goods, bads = results[:200], results[200:]
        assert goods == [200] * 200
        for name, response in zip(hostile, bads, strict=False):
            assert response.status_code == 400, (name, response.text)  # type: ignore[union-attr]
            assert response.json()["error"], name  # type: ignore[union-attr]
        assert await store.backlog() == {"sync-identify": 200}
        assert ingress.committer.stats.failed_commits == 0
    finally:
        await ingress.stop()


async def test_hostile_elements_of_a_batch_become_dead_letters_and_the_rest_is_accepted(store: Store) -> None:
    ingress = await _ingress(store)
    elements = [
        json.dumps(identify(1)),
        *_hostile_singles().values(),
        '"not an object"',
        '{"type":"track","messageId":"ok-2","userId":"u2","event":"E","properties":{"s":' + SURROGATE + "}}",
    ]
    body_text = "[" + ",".join(elements) + "]"
    first = json.loads(elements[0])
    try:
        async with httpx.AsyncClient(base_url=ingress.url) as client:
            response = await client.post(
                "/segment",
                content=body_text.encode(),
                headers={"Content-Type": "application/json", "X-Signature": segment_signature(SEGMENT_SECRET, first)},
            )
        assert response.status_code == 200, response.text
        assert response.json() == {"accepted": 2, "dead_letters": 7}
        assert await store.backlog() == {"sync-identify": 1, "forward-track": 1}
        letters = await store.list_dead_letters(flow=DOOR_FLOW)
        assert len(letters) == 7
        reasons = " | ".join(sorted(d.reason for d in letters))
        for word in ("surrogate", "NUL", "empty", "no type", "unknown type", "not a JSON object"):
            assert word in reasons, (word, reasons)
        for letter in letters:  # stored copies hold no NUL and no lone surrogate (PostgreSQL could not store them)
            text = json.dumps(letter.message, ensure_ascii=False)
            assert "\x00" not in text and not any(0xD800 <= ord(c) <= 0xDFFF for c in text)
        # the surrogate inside a property value is replaced (U+FFFD), not a reason to drop the event
        batch = (await store.claim("t", 60, 10, flow="forward-track"))[0]
        assert batch.messages[0]["properties"]["s"] == "\ufffd"
    finally:
        await ingress.stop()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("[" * 10_000 + "]" * 10_000, "nested"),
        ('{"type":"track","messageId":"n1","userId":"u","event":"E","properties":{"n":' + "9" * 5000 + "}}", "digits"),
        ('{"type":"track","messageId":"n2","userId":"u","event":"E","properties":{"n":' + "1" * 41 + "}}", "digits"),
        ('{"type":"track","messageId":"n3","userId":"u","event":"E","properties":{"n":NaN}}', "NaN"),
        ('{"type":"track","messageId":"n4","userId":"u","event":"E","properties":{"n":1e999}}', "out of range"),
        (
            '{"type":"track","messageId":"n5","userId":"u","event":"E","properties":'
            + '{"a":' * 70
            + "1"
            + "}" * 70
            + "}",
            "nested",
        ),
    ],
)
async def test_abusive_json_is_400_with_a_reason_not_500(store: Store, body: str, reason: str) -> None:
    ingress = await _ingress(store)
    try:
        async with httpx.AsyncClient(base_url=ingress.url) as client:
            raw, headers = _raw(body)
            response = await client.post("/segment", content=raw, headers=headers)
        assert response.status_code == 400, response.text
        assert reason in response.json()["error"]
        assert await store.backlog() == {}
    finally:
        await ingress.stop()


async def test_unsigned_single_event_is_refused_before_it_is_parsed(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forged single event is never parsed (the HMAC covers the raw bytes); a forged batch parses only its
    first element."""
    from klaviyo_segment.ingress import door

    parsed: list[int] = []
    real = door.loads
    monkeypatch.setattr(door, "loads", lambda body: parsed.append(len(body)) or real(body))
    ingress = await _ingress(store)
    try:
        async with httpx.AsyncClient(base_url=ingress.url) as client:
            deep = ('{"a":' * 10_000 + "1" + "}" * 10_000).encode()
            r = await client.post("/segment", content=deep, headers={"X-Signature": "0" * 40})
            assert r.status_code == 401
            huge = ("[" + ",".join([json.dumps(identify(i)) for i in range(2000)]) + "]").encode()
            r = await client.post("/segment", content=huge, headers={"X-Signature": "0" * 40})
            assert r.status_code == 401
        assert parsed == []
    finally:
        await ingress.stop()


async def test_oversized_body_is_413_before_it_is_read(store: Store) -> None:
    ingress = await _ingress(store)
    host, port = ingress.url.removeprefix("http://").split(":")
    try:
        # An honest Content-Length of 15 MiB: answered at once, although only 1 KiB of the body was sent.
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /segment HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {15 * 1024 * 1024}\r\n\r\n".encode()
            + b"["
            + b" " * 1023
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the stream limit stops it
            yield b"["
            for _ in range(15 * 1024):
                yield b" " * 1024

        async with httpx.AsyncClient(base_url=ingress.url, timeout=30) as client:
            response = await client.post("/segment", content=chunks(), headers={"X-Signature": "0" * 40})
        assert response.status_code == 413
    finally:
        await ingress.stop()


async def test_idle_and_slow_clients_are_disconnected(store: Store) -> None:
    settings = ReceiverSettings(segment_secret=SEGMENT_SECRET, header_timeout=0.5, body_timeout=0.5)
    ingress = await _ingress(store, settings)
    host, port = ingress.url.removeprefix("http://").split(":")
    try:
        loop = asyncio.get_running_loop()
        # headers that never finish: the connection is closed by the server
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /segment HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        started = loop.time()
        await asyncio.wait_for(reader.read(), 5)  # returns at EOF: the server hung up
        assert loop.time() - started < 3
        writer.close()
        # a body that trickles: 408 after the body deadline
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /segment HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n[")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), 5)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        writer.close()
    finally:
        await ingress.stop()
