"""Receiver over real HTTP (uvicorn on 127.0.0.1) with the real store: durable ack, group commit, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from klaviyo_segment.config import AppConfig
from klaviyo_segment.flows import names as flow_names
from klaviyo_segment.ingress.receiver import ReceiverSettings
from klaviyo_segment.ingress.runner import Ingress, start_ingress
from klaviyo_segment.store import Store
from tests.ingress.helpers import KLAVIYO_SECRET, SEGMENT_SECRET, identify, klaviyo_request, segment_request

ALL = list(flow_names())
SETTINGS = ReceiverSettings(segment_secret=SEGMENT_SECRET, klaviyo_secret=KLAVIYO_SECRET)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(f"sqlite:///{tmp_path}/state.db")
    yield s
    await s.close()


async def _ingress(store: Any, settings: ReceiverSettings = SETTINGS, **committer: Any) -> Ingress:
    return await start_ingress(
        store, AppConfig(), settings=settings, dispatch=None, flows=ALL, committer_options=committer or None
    )


async def test_concurrent_requests_share_few_transactions_and_every_200_is_committed(store: Store) -> None:
    ingress = await _ingress(store, max_wait=0.05)
    try:
        async with httpx.AsyncClient(base_url=ingress.url) as client:

            async def post(i: int) -> int:
                body, headers = segment_request(identify(i))
                return (await client.post("/segment", content=body, headers=headers)).status_code

            statuses = await asyncio.gather(*(post(i) for i in range(60)))
        assert statuses == [200] * 60
        assert ingress.committer.stats.commits <= 10, ingress.committer.stats.sizes
        assert (await store.backlog()) == {"sync-identify": 60}
    finally:
        await ingress.stop()


async def test_batch_delivery_and_redelivery_are_deduplicated(store: Store) -> None:
    ingress = await _ingress(store)
    try:
        batch = [
            identify(1),
            identify(2),
            {"type": "track", "event": "Product Viewed", "messageId": "t1", "userId": "u1"},
        ]
        body, headers = segment_request(batch)
        async with httpx.AsyncClient(base_url=ingress.url) as client:
            assert (await client.post("/segment", content=body, headers=headers)).status_code == 200
            assert (await client.post("/segment", content=body, headers=headers)).status_code == 200  # retry
        assert await store.backlog() == {"sync-identify": 2, "forward-track": 1}
        assert ingress.committer.stats.duplicates == 3
    finally:
        await ingress.stop()


async def test_rejections_401_400_413_and_healthz(store: Store) -> None:
    ingress = await _ingress(store)
    try:
        body, headers = segment_request(identify(1))
        async with httpx.AsyncClient(base_url=ingress.url) as client:
            assert (await client.post("/segment", content=body)).status_code == 401
            forged = dict(headers, **{"X-Signature": "0" * 40})
            assert (await client.post("/segment", content=body, headers=forged)).status_code == 401
            import hashlib
            import hmac

            signed_garbage = {"X-Signature": hmac.new(SEGMENT_SECRET.encode(), b"{not json", hashlib.sha1).hexdigest()}
            bad = await client.post("/segment", content=b"{not json", headers=signed_garbage)  # authentic, not JSON
            assert bad.status_code == 400 and "invalid JSON" in bad.json()["error"]
            health = await client.get("/healthz")
            assert health.status_code == 200 and health.json()["ok"] is True and health.json()["store"] == "ok"
        assert await store.backlog() == {}
    finally:
        await ingress.stop()
    small = await _ingress(store, ReceiverSettings(insecure_dev=True, max_body_bytes=1000))
    try:
        async with httpx.AsyncClient(base_url=small.url) as client:
            assert (await client.post("/segment", content=b"[" + b" " * 2000 + b"]")).status_code == 413
            assert (await client.post("/segment", json=identify(5))).status_code == 200  # unsigned: dev mode
    finally:
        await small.stop()


async def test_no_secret_configured_refuses_without_dev_flag(store: Store) -> None:
    ingress = await _ingress(store, ReceiverSettings())
    try:
        async with httpx.AsyncClient(base_url=ingress.url) as client:
            body, headers = segment_request(identify(1))
            assert (await client.post("/segment", content=body, headers=headers)).status_code == 401
    finally:
        await ingress.stop()


class _FailingStore:
    async def accept(self, *args: Any, **kwargs: Any) -> Any:
        raise OSError("disk full")


class _SlowStore:
    def __init__(self, real: Store) -> None:
        self.real, self.release = real, asyncio.Event()

    async def accept(self, *args: Any, **kwargs: Any) -> Any:
        await self.release.wait()
        return await self.real.accept(*args, **kwargs)


async def test_failed_commit_answers_503() -> None:
    ingress = await _ingress(_FailingStore())
    try:
        body, headers = segment_request(identify(1))
        async with httpx.AsyncClient(base_url=ingress.url) as client:
            response = await client.post("/segment", content=body, headers=headers)
        assert response.status_code == 503
        assert ingress.committer.stats.failed_commits == 1
    finally:
        await ingress.stop()


async def test_overload_answers_429_with_retry_after(store: Store) -> None:
    slow = _SlowStore(store)
    ingress = await _ingress(slow, max_queued=3)
    try:
        async with httpx.AsyncClient(base_url=ingress.url) as client:
            body, headers = segment_request([identify(1), identify(2)])
            first = asyncio.create_task(client.post("/segment", content=body, headers=headers))
            while ingress.committer.queued == 0:
                await asyncio.sleep(0.005)
            body2, headers2 = segment_request([identify(3), identify(4)])
            second = await client.post("/segment", content=body2, headers=headers2)
            assert second.status_code == 429 and second.headers["Retry-After"].isdigit()
            slow.release.set()
            assert (await first).status_code == 200
        assert await store.backlog() == {"sync-identify": 2}
    finally:
        await ingress.stop()


async def test_klaviyo_delivery_routes_records_to_engagement_and_dedupes(store: Store) -> None:
    ingress = await _ingress(store)
    now = datetime.now(UTC).replace(microsecond=0)
    records = [
        {"external_id": f"ev{i}", "payload": {"type": "event", "id": f"ev{i}"}, "topic": "event:klaviyo.opened_email"}
        for i in range(3)
    ]
    try:
        async with httpx.AsyncClient(base_url=ingress.url) as client:
            body, headers = klaviyo_request(records, format_datetime(now, usegmt=True), now.isoformat())
            assert (await client.post("/klaviyo", content=body, headers=headers)).status_code == 200
            assert (await client.post("/klaviyo", content=body, headers=headers)).status_code == 200
            stale, stale_headers = klaviyo_request(
                records, format_datetime(now, usegmt=True), "2020-01-01T00:00:00+00:00"
            )
            assert (await client.post("/klaviyo", content=stale, headers=stale_headers)).status_code == 401
            other = dict(headers, **{"Klaviyo-Webhook-Id": "WH9"})
            assert (await client.post("/klaviyo", content=body, headers=other)).status_code == 401
        assert await store.backlog() == {"engagement-to-segment": 3}
        batches = await store.claim("t", 60, 10)
        assert batches[0].messages[0]["external_id"] == "ev0"
        assert batches[0].messages[0]["klaviyo_account_id"] == "A1"
    finally:
        await ingress.stop()


class _UnwritableStore:
    """A real store whose writes fail while ``broken`` (a full disk, a read-only replica, a revoked grant)."""

    def __init__(self, real: Store) -> None:
        self.real, self.broken = real, True

    async def put_values(self, values: dict[str, Any]) -> None:
        if self.broken:
            raise OSError("disk full")
        await self.real.put_values(values)

    async def accept(self, *args: Any, **kwargs: Any) -> Any:
        return await self.real.accept(*args, **kwargs)


async def test_healthz_reports_a_store_that_cannot_write_as_degraded(store: Store) -> None:
    broken = _UnwritableStore(store)
    ingress = await _ingress(broken, ReceiverSettings(segment_secret=SEGMENT_SECRET, health_cache_seconds=0.2))
    try:
        async with httpx.AsyncClient(base_url=ingress.url) as client:
            sick = await client.get("/healthz")
            assert sick.status_code == 503, sick.text
            assert sick.json()["ok"] is False and "store cannot write" in sick.json()["reason"]
            broken.broken = False
            assert (await client.get("/healthz")).status_code == 503  # cached for a moment: probes stay cheap
            await asyncio.sleep(0.3)
            well = await client.get("/healthz")
            assert well.status_code == 200 and well.json()["ok"] is True
    finally:
        await ingress.stop()


async def test_klaviyo_delivery_that_is_not_an_object_is_400_not_401(store: Store) -> None:
    ingress = await _ingress(store)
    now = datetime.now(UTC).replace(microsecond=0)
    from klaviyo_segment.ingress.signatures import klaviyo_signature
    from tests.ingress.helpers import KLAVIYO_SECRET as secret

    stamp = format_datetime(now, usegmt=True)
    try:
        async with httpx.AsyncClient(base_url=ingress.url) as client:
            for body in (b'[{"external_id":"e1"}]', b'{"data":[]}'):
                r = await client.post(
                    "/klaviyo",
                    content=body,
                    headers={
                        "Klaviyo-Timestamp": stamp,
                        "Klaviyo-Webhook-Id": "WH1",
                        "Klaviyo-Signature": klaviyo_signature(secret, body, stamp),
                    },
                )
                assert r.status_code == 400 and "meta" in r.json()["error"], (body, r.text)
            forged = await client.post(
                "/klaviyo",
                content=b"[" * 10_000,
                headers={"Klaviyo-Timestamp": stamp, "Klaviyo-Webhook-Id": "WH1", "Klaviyo-Signature": "0" * 64},
            )
            assert forged.status_code == 401  # checked over the raw bytes, before any parsing
    finally:
        await ingress.stop()


class _PoisonStore:
    """Fails any transaction holding the message ``poison`` (something the door could not foresee)."""

    def __init__(self, real: Store) -> None:
        self.real = real

    async def accept(self, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
        if any(m.get("messageId") == "poison" for m in messages):
            raise ValueError("cannot store this one")
        return await self.real.accept(messages, **kwargs)


async def test_a_request_the_store_refuses_fails_alone_not_its_whole_group(store: Store) -> None:
    ingress = await _ingress(_PoisonStore(store), max_wait=0.1)
    try:
        async with httpx.AsyncClient(base_url=ingress.url) as client:

            async def post(message: dict[str, Any]) -> int:
                body, headers = segment_request(message)
                return (await client.post("/segment", content=body, headers=headers)).status_code

            statuses = await asyncio.gather(
                *(post(identify(i)) for i in range(20)), post(identify(99, messageId="poison"))
            )
        assert statuses[:20] == [200] * 20 and statuses[20] == 503
        assert await store.backlog() == {"sync-identify": 20}
    finally:
        await ingress.stop()
