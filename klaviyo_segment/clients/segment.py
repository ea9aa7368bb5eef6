"""Async client for Segment's HTTP Tracking API (``/v1/batch``, ``/v1/track``, ``/v1/identify``).

Why our own client instead of analytics-python: that library queues in a background thread, drops events when
its queue is full and loses them silently after a fork (Prefect workers fork). Here every call is awaited and
either succeeds or raises :class:`SegmentAPIError`, so each message gets an outcome.

Retry policy (as analytics-python, but bounded for a flow run): 429 (honouring ``Retry-After``), 5xx, timeouts
and connection resets are retried with jittered exponential backoff; other 4xx never are.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from datetime import datetime, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping

import httpx

from klaviyo_segment.builders.segment import encode
from klaviyo_segment.errors import ApiError, SegmentAPIError
from klaviyo_segment.redact import redact

if TYPE_CHECKING:  # the block module imports prefect; the client itself does not need it
    from klaviyo_segment.blocks.segment import SegmentCredentials

logger = logging.getLogger("klaviyo_segment.clients.segment")

Sleep = Callable[[float], Awaitable[None]]


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Parse ``Retry-After`` (delta seconds or HTTP date); ``None`` when absent or unparseable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Full-jitter exponential backoff: spreads retries of parallel workers instead of synchronising them."""
    return random.uniform(0, min(cap, base * (2 ** attempt)))


class SegmentClient:
    """One client per credentials document; reuse it for many requests (keep-alive pool)."""

    def __init__(self, credentials: "SegmentCredentials", *, max_retries: int = 5, backoff_base: float = 0.5,
                 backoff_max: float = 30.0, max_retry_after: float = 120.0, sleep: Sleep = asyncio.sleep,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.credentials = credentials
        #: Preview injects a recording transport so Segment requests are shown instead of sent.
        self.transport = transport
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self._sleep = sleep
        self._client: httpx.AsyncClient | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = self.credentials.get_client()
            if self.transport is not None:
                # Same base URL, auth and headers as the block's client; only where the bytes go differs.
                client = self._client
                self._client = httpx.AsyncClient(base_url=client.base_url, auth=client.auth, headers=client.headers,
                                                 timeout=client.timeout, transport=self.transport)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> "SegmentClient":
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def batch(self, messages: list[Mapping[str, Any]]) -> httpx.Response:
        """POST /v1/batch. Callers must split first (:func:`klaviyo_segment.builders.segment.split_batches`)."""
        sent_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return await self.post("/v1/batch", {"batch": list(messages), "sentAt": sent_at})

    async def track(self, message: Mapping[str, Any]) -> httpx.Response:
        return await self.post("/v1/track", dict(message))

    async def identify(self, message: Mapping[str, Any]) -> httpx.Response:
        return await self.post("/v1/identify", dict(message))

    async def post(self, path: str, body: Mapping[str, Any]) -> httpx.Response:
        """POST with the retry policy; returns the 2xx response or raises :class:`SegmentAPIError`."""
        content = encode(body)
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                response = await self.http.post(path, content=content)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                error = SegmentAPIError(None, [ApiError(code="network_error", detail=type(exc).__name__)],
                                        message=f"{type(exc).__name__} calling {path}", retryable=True)
            else:
                if response.is_success:
                    return response
                error = _error_from(response)
            if not error.retryable or attempt >= self.max_retries:
                raise error
            delay = backoff_delay(attempt, self.backoff_base, self.backoff_max)
            if response is not None and response.status_code == 429:
                hinted = retry_after_seconds(response.headers.get("Retry-After"))
                if hinted is not None:
                    delay = min(hinted, self.max_retry_after)
            logger.warning("segment %s: %s; retry %d/%d in %.2fs", path, redact(str(error)), attempt + 1,
                           self.max_retries, delay)
            await self._sleep(delay)
            attempt += 1


def _error_from(response: httpx.Response) -> SegmentAPIError:
    status = response.status_code
    detail = redact(response.text[:500]) if response.content else response.reason_phrase
    try:
        payload = response.json()
        if isinstance(payload, dict) and isinstance(payload.get("message"), str):
            detail = redact(payload["message"])
    except ValueError:
        pass
    retryable = status == 429 or status >= 500
    return SegmentAPIError(status, [ApiError(status=status, code="throttled" if status == 429 else None,
                                             detail=detail)], retryable=retryable)
