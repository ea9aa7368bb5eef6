"""Sending messages to Segment in as few requests as the limits allow.

Why one operation for all message types: ``/v1/batch`` takes track and identify mixed, so a caller hands over
everything it produced and gets one :class:`ItemResult` per input message back, aligned by ``index``. A rejected
message (oversized) or a failed chunk never fails the other chunks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from klaviyo_segment.blocks.segment import SegmentCredentials
from klaviyo_segment.builders.segment import split_batches
from klaviyo_segment.clients.segment import SegmentClient
from klaviyo_segment.errors import SegmentAPIError
from klaviyo_segment.outcomes import ItemResult

#: Chunks in flight at once: well under Segment's 1,000 requests/s while keeping large backfills fast.
MAX_CONCURRENT_REQUESTS = 4


async def send_messages(
    messages: Sequence[Mapping[str, Any]], client: SegmentClient, concurrency: int = MAX_CONCURRENT_REQUESTS
) -> list[ItemResult]:
    """Send through an open client (receiver, bench, the task): one request per chunk, results in input order."""
    split = split_batches(messages)
    results: dict[int, ItemResult] = {r.index: r for r in split.rejected}
    gate = asyncio.Semaphore(concurrency)

    async def send(indices: list[int]) -> None:
        async with gate:
            try:
                await client.batch([messages[i] for i in indices])
            except SegmentAPIError as exc:
                for i in indices:
                    results[i] = ItemResult(index=i, ok=False, error=exc.first)
                return
        for i in indices:
            results[i] = ItemResult(index=i, ok=True, value=messages[i].get("messageId"))

    await asyncio.gather(*(send(chunk) for chunk in split.batches))
    return [results[i] for i in range(len(messages))]


async def send_to_segment(
    messages: Sequence[Mapping[str, Any]],
    credentials: SegmentCredentials | SegmentClient,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[ItemResult]:
    """``credentials`` may be an open :class:`SegmentClient` (reused, not closed); otherwise a client is opened
    for this call, over ``transport`` when given (preview records the requests instead of sending them)."""
    if isinstance(credentials, SegmentClient):
        return await send_messages(messages, credentials)
    async with SegmentClient(credentials, transport=transport) as client:
        return await send_messages(messages, client)
