"""Segment task (Prefect wrapper of ``services.segment``)."""

from __future__ import annotations

from typing import Any

import httpx
from prefect import task

from klaviyo_segment.blocks.segment import SegmentCredentials
from klaviyo_segment.clients.segment import SegmentClient
from klaviyo_segment.outcomes import ItemResult
from klaviyo_segment.services import segment as svc


@task(name="send-to-segment", description="Send track/identify messages to Segment's /v1/batch in chunks.")
async def send_to_segment(
    messages: list[dict[str, Any]],
    credentials: SegmentCredentials | SegmentClient,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[ItemResult]:
    """See :func:`klaviyo_segment.services.segment.send_to_segment`."""
    return await svc.send_to_segment(messages, credentials, transport=transport)
