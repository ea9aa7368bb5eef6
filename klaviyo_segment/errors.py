"""Typed errors. Every failure a user can see maps to one of these, and CLI exit codes follow from them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ApiError(BaseModel):
    """One JSON:API error object, as stored in outcomes and dead letters (never holds secrets)."""

    status: int | None = None
    code: str | None = None
    title: str | None = None
    detail: str | None = None
    pointer: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


class KlaviyoSegmentError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(KlaviyoSegmentError):
    """Unusable configuration or invocation: the CLI exits 2. The message names the key and the problem."""


class APIError(KlaviyoSegmentError):
    """A request failed for good (non-retryable 4xx, or a transient error that outlived its retries)."""

    service = "api"

    def __init__(
        self,
        status: int | None,
        errors: list[ApiError] | None = None,
        *,
        message: str | None = None,
        retryable: bool = False,
    ) -> None:
        self.status = status
        self.errors = errors or []
        self.retryable = retryable
        first = self.errors[0] if self.errors else None
        text = message or (first.detail if first and first.detail else None) or f"HTTP {status}"
        super().__init__(f"{self.service} {status}: {text}")

    @property
    def first(self) -> ApiError:
        return self.errors[0] if self.errors else ApiError(status=self.status, detail=str(self))


class KlaviyoAPIError(APIError):
    service = "klaviyo"


class SegmentAPIError(APIError):
    service = "segment"


def is_transient(error: ApiError | None) -> bool:
    """An API error that may succeed later (429, 5xx, a network failure): it outlived the client's retries this
    time, so it says nothing about the message. A message failing with it is retried with its batch, never
    dead-lettered at once (see ``runtime.finish``)."""
    if error is None:
        return False
    status = error.status
    return bool(error.meta.get("retryable")) or status == 429 or (status is not None and status >= 500)


class RetryLater(KlaviyoSegmentError):
    """A run left messages that failed only transiently: its leased batches stay open and are retried after a
    backoff (the store's attempt cap bounds this), instead of those valid messages becoming dead letters."""
