"""SegmentClient and send_to_segment against a real HTTP server on 127.0.0.1 (respx only for timeouts)."""

from __future__ import annotations

import httpx
import pytest
import respx
from pydantic import SecretStr

from klaviyo_segment.blocks.segment import SegmentCredentials
from klaviyo_segment.builders.segment import build_track
from klaviyo_segment.clients.segment import SegmentClient
from klaviyo_segment.constants import SEGMENT_MESSAGE_MAX_BYTES, SEGMENT_REGIONS
from klaviyo_segment.errors import SegmentAPIError
from klaviyo_segment.services.segment import send_messages
from klaviyo_segment.tasks.segment import send_to_segment

from .conftest import FakeSegment


class Sleeps(list[float]):
    """Records backoff delays instead of waiting: retry tests stay instant and can assert the delays."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def _credentials(url: str, **extra: object) -> SegmentCredentials:
    return SegmentCredentials(write_key=SecretStr("wk_secret"), base_url=url, **extra)


def test_block_region_base_url_and_client() -> None:
    assert SegmentCredentials(write_key="k").resolved_base_url == SEGMENT_REGIONS["us"]
    assert SegmentCredentials(write_key="k", region="eu").resolved_base_url == SEGMENT_REGIONS["eu"]
    explicit = SegmentCredentials(write_key="k", region="eu", base_url="http://127.0.0.1:1/v1/")
    assert explicit.resolved_base_url == "http://127.0.0.1:1"
    assert "wk_secret" not in repr(_credentials("http://x"))
    with pytest.raises(ValueError):
        SegmentCredentials(write_key="k", region="apac")


async def test_batch_sends_basic_auth_and_body(segment: FakeSegment) -> None:
    sleeps = Sleeps()
    async with SegmentClient(_credentials(segment.url), sleep=sleeps) as client:
        await client.batch([build_track("Clicked", user_id="u1", message_id="m1")])
        await client.post("/v1/identify", {"type": "identify", "userId": "u1", "traits": {}})
    assert [r["path"] for r in segment.requests] == ["/v1/batch", "/v1/identify"]
    assert segment.requests[0]["basic_user"] == "wk_secret:"
    assert segment.batches[0][0]["messageId"] == "m1" and "sentAt" in segment.requests[0]["body"]
    assert sleeps == []


async def test_429_honours_retry_after_then_succeeds(segment: FakeSegment) -> None:
    segment.script[:] = [(429, {"Retry-After": "7"}), (200, {})]
    sleeps = Sleeps()
    async with SegmentClient(_credentials(segment.url), sleep=sleeps) as client:
        response = await client.post("/v1/track", {"type": "track", "event": "e", "userId": "u"})
    assert response.status_code == 200 and len(sleeps) == 1 and 7.0 <= sleeps[0] <= 7.25
    assert len(segment.requests) == 2


async def test_5xx_retried_with_bounded_backoff(segment: FakeSegment) -> None:
    segment.script[:] = [(500, {}), (503, {}), (200, {})]
    sleeps = Sleeps()
    async with SegmentClient(_credentials(segment.url), sleep=sleeps, backoff_base=0.5, backoff_max=1) as client:
        await client.batch([{"type": "track", "event": "e", "userId": "u"}])
    assert len(segment.requests) == 3 and len(sleeps) == 2 and all(0 <= s <= 1 for s in sleeps)


async def test_other_4xx_never_retried(segment: FakeSegment) -> None:
    segment.script[:] = [(400, {})]
    sleeps = Sleeps()
    async with SegmentClient(_credentials(segment.url), sleep=sleeps) as client:
        with pytest.raises(SegmentAPIError) as info:
            await client.batch([{"type": "track"}])
    assert info.value.status == 400 and not info.value.retryable
    assert len(segment.requests) == 1 and sleeps == []


async def test_retries_exhausted_raise(segment: FakeSegment) -> None:
    segment.script[:] = [(502, {})] * 3
    async with SegmentClient(_credentials(segment.url), sleep=Sleeps(), max_retries=2) as client:
        with pytest.raises(SegmentAPIError) as info:
            await client.batch([{"type": "track"}])
    assert info.value.status == 502 and info.value.retryable and len(segment.requests) == 3


async def test_timeout_is_retried() -> None:
    url = "https://segment.invalid"
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        route = mock.post(f"{url}/v1/batch").mock(side_effect=[httpx.ReadTimeout("slow"), httpx.Response(200)])
        sleeps = Sleeps()
        async with SegmentClient(_credentials(url), sleep=sleeps) as client:
            await client.batch([{"type": "track"}])
    assert route.call_count == 2 and len(sleeps) == 1


async def test_send_messages_aligns_results_with_input(segment: FakeSegment) -> None:
    messages = [
        build_track("e", user_id=f"u{i}", message_id=f"m{i}", properties={"p": "x" * 20_000}) for i in range(40)
    ]
    messages.insert(3, build_track("big", user_id="u", properties={"p": "x" * SEGMENT_MESSAGE_MAX_BYTES}))
    segment.script[:] = [(400, {})]  # the first chunk to arrive is rejected for good; others succeed
    async with SegmentClient(_credentials(segment.url), sleep=Sleeps()) as client:
        results = await send_messages(messages, client, concurrency=1)
    assert [r.index for r in results] == list(range(41))
    assert results[3].error.code == "message_too_large"
    sent_ids = {m["messageId"] for batch in segment.batches[1:] for m in batch}
    failed_first_chunk = {m["messageId"] for m in segment.batches[0]}
    assert len(segment.batches) >= 2
    for result, message in zip(results, messages, strict=False):
        if result.index == 3:
            continue
        if message["messageId"] in failed_first_chunk:
            assert not result.ok and result.error.status == 400
        else:
            assert result.ok and result.value == message["messageId"] and message["messageId"] in sent_ids


async def test_send_to_segment_task_fn(segment: FakeSegment) -> None:
    messages = [build_track("e", user_id=f"u{i}") for i in range(3)]
    results = await send_to_segment.fn(messages, _credentials(segment.url))
    assert [r.ok for r in results] == [True] * 3 and len(segment.batches) == 1 and len(segment.batches[0]) == 3
