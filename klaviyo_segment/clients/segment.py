"""Async client for Segment's HTTP Tracking API (``/v1/batch``, ``/v1/track``, ``/v1/identify``).

Why our own client instead of analytics-python: that library queues in a background thread, drops events when
its queue is full and loses them silently after a fork (Prefect workers fork). Here every call is awaited and
either succeeds or raises :class:`SegmentAPIError`, so each message gets an outcome.

Retry policy: the project's one policy (:mod:`klaviyo_segment.clients.retry`): 429 (honouring ``Retry-After``),
5xx, timeouts and connection resets are retried with jittered exponential backoff; other 4xx never are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from klaviyo_segment.builders.segment import encode
from klaviyo_segment.clients.retry import RetryPolicy, Sleep, retryable_status, send_with_retry
from klaviyo_segment.errors import ApiError, SegmentAPIError
from klaviyo_segment.redact import install as redact_install
from klaviyo_segment.redact import redact

if TYPE_CHECKING:  # the block module imports prefect; the client itself does not need it
    from klaviyo_segment.blocks.segment import SegmentCredentials

logger = logging.getLogger("klaviyo_segment.clients.segment")
redact_install(logger)


class SegmentClient:
    """One client per credentials document; reuse it for many requests (keep-alive pool)."""

    def __init__(
        self,
        credentials: SegmentCredentials,
        *,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        max_retry_after: float = 120.0,
        sleep: Sleep = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        """``retry`` wins over ``max_retries`` (retries after the first try) / ``backoff_*`` / ``sleep``."""
        self.credentials = credentials
        #: Preview injects a recording transport so Segment requests are shown instead of sent.
        self.transport = transport
        self.retry = retry or RetryPolicy(
            attempts=max(0, max_retries) + 1,
            base=backoff_base,
            cap=backoff_max,
            retry_after_cap=max_retry_after,
            sleep=sleep,
        )
        self._client: httpx.AsyncClient | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = self.credentials.get_client()
            if self.transport is not None:
                # Same base URL, auth and headers as the block's client; only where the bytes go differs.
                client = self._client
                self._client = httpx.AsyncClient(
                    base_url=client.base_url,
                    auth=client.auth,
                    headers=client.headers,
                    timeout=client.timeout,
                    transport=self.transport,
                )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> SegmentClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def batch(self, messages: list[Mapping[str, Any]]) -> httpx.Response:
        """POST /v1/batch. Callers must split first (:func:`klaviyo_segment.builders.segment.split_batches`)."""
        sent_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return await self.post("/v1/batch", {"batch": list(messages), "sentAt": sent_at})

    async def post(self, path: str, body: Mapping[str, Any]) -> httpx.Response:
        """POST with the retry policy; returns the 2xx response or raises :class:`SegmentAPIError`."""
        content = encode(body)
        http = self.http

        async def send() -> httpx.Response:
            return await http.post(path, content=content)

        return await send_with_retry(
            send,
            self.retry,
            label=f"segment POST {path}",
            log=logger,
            error_for=_error_from,
            network_error=lambda exc, n: SegmentAPIError(
                None,
                [ApiError(code="network_error", detail=type(exc).__name__)],
                message=f"{type(exc).__name__} calling {path} ({n} attempts)",
                retryable=True,
            ),
            detail=lambda exc: redact(str(exc)),
        )


def _error_from(response: httpx.Response) -> SegmentAPIError:
    status = response.status_code
    detail = redact(response.text[:500]) if response.content else response.reason_phrase
    try:
        payload = response.json()
        if isinstance(payload, dict) and isinstance(payload.get("message"), str):
            detail = redact(payload["message"])
    except ValueError:
        pass
    retryable = retryable_status(status)
    return SegmentAPIError(
        status,
        [ApiError(status=status, code="throttled" if status == 429 else None, detail=detail)],
        retryable=retryable,
    )
