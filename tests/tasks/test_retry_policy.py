"""The one retry policy (klaviyo_segment.clients.retry), tested once with an injected clock, sleep and rng:
Retry-After parsing, backoff bounds and cap, which statuses are retried, and what is logged."""

from __future__ import annotations

import logging
import random

import httpx
import pytest

from klaviyo_segment.clients.retry import RetryPolicy, parse_retry_after, retryable_status, send_with_retry

NOW = 1767225600.0  # Thu, 01 Jan 2026 00:00:00 GMT


class Sleeps(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


class MaxRng(random.Random):
    """Always the top of the range: exposes the upper bound of every jittered delay."""

    def uniform(self, a: float, b: float) -> float:
        return b


class MinRng(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return a


def test_parse_retry_after_seconds_and_http_dates() -> None:
    assert parse_retry_after("3") == 3.0 and parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:10 GMT", now=NOW) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=NOW) == 0.0  # in the past: now, not negative
    assert parse_retry_after("-4") == 0.0
    for unreadable in (None, "", "soon", "nan", "Thu, 99 Foo 2026"):
        assert parse_retry_after(unreadable, now=NOW) is None


def test_retryable_statuses() -> None:
    assert [s for s in (400, 401, 403, 404, 409, 413, 422, 429, 500, 502, 503, 504) if retryable_status(s)] == [
        429,
        500,
        502,
        503,
        504,
    ]


def test_backoff_is_equal_jitter_and_capped() -> None:
    high = RetryPolicy(base=0.5, cap=4.0, rng=MaxRng())
    low = RetryPolicy(base=0.5, cap=4.0, rng=MinRng())
    assert [high.backoff(a) for a in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert [low.backoff(a) for a in range(1, 7)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    seeded = RetryPolicy(base=1.0, cap=30.0, rng=random.Random(3))
    assert all(2 ** (a - 2) <= seeded.backoff(a) <= 2 ** (a - 1) for a in range(1, 6))


def test_retry_after_hint_wins_and_is_capped() -> None:
    policy = RetryPolicy(retry_after_cap=120.0, hint_jitter=0.25, rng=MaxRng(), clock=lambda: NOW)
    assert policy.delay(1, httpx.Response(429, headers={"Retry-After": "7"})) == 7.25
    assert policy.delay(1, httpx.Response(503, headers={"Retry-After": "Thu, 01 Jan 2026 00:00:10 GMT"})) == 10.25
    assert policy.delay(1, httpx.Response(429, headers={"Retry-After": "86400"})) == 120.25
    assert policy.delay(2, httpx.Response(500)) == policy.backoff(2) == 1.0  # no hint: backoff


def test_invalid_policy_is_rejected() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


def _scripted(*outcomes: httpx.Response | Exception) -> tuple[list[int], object]:
    calls: list[int] = []

    async def send() -> httpx.Response:
        calls.append(1)
        outcome = outcomes[len(calls) - 1]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return calls, send


class Failed(Exception):
    def __init__(self, status: int | None) -> None:
        super().__init__(f"failed {status}")
        self.status = status


async def _run(policy: RetryPolicy, *outcomes: httpx.Response | Exception) -> tuple[list[int], httpx.Response]:
    calls, send = _scripted(*outcomes)
    response = await send_with_retry(
        send,
        policy,
        label="test GET /x",
        log=logging.getLogger("klaviyo_segment.t"),
        error_for=lambda r: Failed(r.status_code),
        network_error=lambda exc, n: Failed(None),
    )
    return calls, response


async def test_transient_failures_then_success(caplog: pytest.LogCaptureFixture) -> None:
    sleeps = Sleeps()
    policy = RetryPolicy(attempts=6, base=1.0, sleep=sleeps, rng=MaxRng())
    with caplog.at_level(logging.WARNING, "klaviyo_segment.t"):
        calls, response = await _run(
            policy,
            httpx.Response(503),
            httpx.ReadTimeout("slow"),
            httpx.Response(429, headers={"Retry-After": "3"}),
            httpx.Response(200),
        )
    assert response.status_code == 200 and len(calls) == 4
    assert sleeps == [1.0, 2.0, 3.25]
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("test GET /x -> 503") and "retry 1/5 in 1.00s" in messages[0]
    assert messages[1] == "test GET /x: ReadTimeout; retry 2/5 in 2.00s"
    assert "retry 3/5 in 3.25s" in messages[2]


async def test_final_status_is_not_retried_nor_logged_as_an_attempt(caplog: pytest.LogCaptureFixture) -> None:
    sleeps = Sleeps()
    with caplog.at_level(logging.WARNING, "klaviyo_segment.t"), pytest.raises(Failed) as info:
        await _run(RetryPolicy(sleep=sleeps), httpx.Response(403), httpx.Response(200))
    assert info.value.status == 403 and sleeps == []
    [message] = [r.getMessage() for r in caplog.records]
    assert message.endswith("(not retried)") and "attempt" not in message and "1/" not in message


async def test_attempts_are_bounded(caplog: pytest.LogCaptureFixture) -> None:
    sleeps = Sleeps()
    with caplog.at_level(logging.WARNING, "klaviyo_segment.t"), pytest.raises(Failed) as info:
        await _run(RetryPolicy(attempts=3, sleep=sleeps), *[httpx.Response(502)] * 3)
    assert info.value.status == 502 and len(sleeps) == 2
    assert caplog.records[-1].getMessage().endswith("giving up after 3 attempts")
    with pytest.raises(Failed) as net:
        await _run(RetryPolicy(attempts=2, sleep=Sleeps()), httpx.ConnectError("x"), httpx.ConnectError("y"))
    assert net.value.status is None
