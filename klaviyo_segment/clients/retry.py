"""The one retry policy of every outbound HTTP client (Klaviyo and Segment).

What is retried: 429, 5xx, timeouts and connection resets (the request may succeed later); any other 4xx never
is (it cannot succeed unchanged). How long to wait:

- the server's ``Retry-After`` (delta seconds or HTTP date) when the response carries one, capped at
  ``retry_after_cap`` so a hostile or broken hint cannot park a flow run for hours, plus up to
  ``hint_jitter`` seconds so workers told the same instant do not all come back in the same millisecond;
- otherwise exponential backoff with *equal jitter*: half of ``min(cap, base * 2**(attempt-1))`` fixed, half
  random. The fixed half keeps a struggling server from being hit again at once; the random half spreads
  parallel workers hitting the same outage.

``attempts`` counts every try (the first included). Clock, sleep and random source are injectable so the
policy is tested without waiting (tests/tasks/test_retry_policy.py).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC

import httpx

#: Failures before any response: the request may not have reached the server, so it is safe to try again.
TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)

Sleep = Callable[[float], Awaitable[None]]


def retryable_status(status: int) -> bool:
    """429 (throttled) and 5xx may succeed later; every other error status is final."""
    return status == 429 or status >= 500


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds from delta seconds or an HTTP date; None when absent or unreadable.
    A date in the past is 0 (retry now), never negative."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds else None  # NaN is unreadable, not "now"
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def retry_after(response: httpx.Response, *, now: float | None = None) -> float | None:
    """The parsed ``Retry-After`` header of a response."""
    return parse_retry_after(response.headers.get("Retry-After"), now=now)


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts and waits; one instance per client. See the module docstring for the rules."""

    attempts: int = 6
    base: float = 0.5
    cap: float = 30.0
    retry_after_cap: float = 120.0
    hint_jitter: float = 0.25
    sleep: Sleep = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)
    #: Wall clock for HTTP-date hints (None: time.time at parse).
    clock: Callable[[], float] | None = None

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base < 0 or self.cap < 0 or self.retry_after_cap < 0:
            raise ValueError("attempts must be >= 1 and every duration >= 0")

    def backoff(self, attempt: int) -> float:
        """Wait after failed attempt ``attempt`` (1-based) when the server gave no hint: equal jitter."""
        ceiling = min(self.cap, self.base * 2 ** (attempt - 1))
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def delay(self, attempt: int, response: httpx.Response | None = None) -> float:
        """Wait after failed attempt ``attempt``: the capped ``Retry-After`` hint if any, else the backoff."""
        hint = retry_after(response, now=self.clock() if self.clock else None) if response is not None else None
        if hint is None:
            return self.backoff(attempt)
        return min(hint, self.retry_after_cap) + self.rng.uniform(0, self.hint_jitter)


async def send_with_retry(
    send: Callable[[], Awaitable[httpx.Response]],
    policy: RetryPolicy,
    *,
    label: str,
    log: logging.Logger,
    error_for: Callable[[httpx.Response], Exception],
    network_error: Callable[[BaseException, int], Exception],
    detail: Callable[[Exception], str] = str,
) -> httpx.Response:
    """Call ``send`` until it returns a response below 400, under ``policy``.

    Raises ``error_for(response)`` for a final error status (non-retryable, or the last attempt) and
    ``network_error(exc, attempts)`` when the last attempt failed before any response. Every failure is logged
    once at WARNING on ``log`` saying what happens next: "retry i/n in Xs", "not retried" or "giving up".
    ``detail`` renders an error for the log (callers redact PII there).
    """
    for attempt in range(1, policy.attempts + 1):
        last = attempt == policy.attempts
        response: httpx.Response | None = None
        try:
            response = await send()
        except TRANSIENT_EXCEPTIONS as exc:
            what = f": {type(exc).__name__}"
            if last:
                log.warning("%s%s; giving up after %d attempts", label, what, attempt)
                raise network_error(exc, attempt) from exc
        else:
            if response.status_code < 400:
                return response
            error = error_for(response)
            what = f" -> {response.status_code} {detail(error)}".rstrip()
            if not retryable_status(response.status_code):
                log.warning("%s%s (not retried)", label, what)
                raise error
            if last:
                log.warning("%s%s; giving up after %d attempts", label, what, attempt)
                raise error
        wait = policy.delay(attempt, response)
        log.warning("%s%s; retry %d/%d in %.2fs", label, what, attempt, policy.attempts - 1, wait)
        await policy.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover - the last attempt always returns or raises
