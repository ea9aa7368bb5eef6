"""Pacer windows and adaptation, driven by a fake clock (no real waiting)."""

from __future__ import annotations

import httpx
import pytest

from klaviyo_segment.clients.pacing import InProcessPacer, tier_of
from klaviyo_segment.clients.retry import retry_after
from klaviyo_segment.errors import KlaviyoAPIError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_tiers_from_schema() -> None:
    assert tier_of("create_or_update_profile")[:3] == ("L", 75, 700)  # planned below the spec's 750
    assert tier_of("bulk_create_events")[:3] == ("M", 10, 150)
    assert tier_of("create_list")[3] == 150


async def test_burst_window_delays_the_eleventh_request() -> None:
    clock = Clock()
    pacer = InProcessPacer(clock=clock, sleep=clock.sleep)
    for _ in range(10):
        await pacer.acquire("bulk_create_events")
    assert clock.slept == []
    await pacer.acquire("merge_profiles")  # same M tier, another endpoint: its own window
    assert clock.slept == []
    await pacer.acquire("bulk_create_events")  # the 11th of this endpoint in one second waits
    assert clock.slept == [pytest.approx(1.0)]


async def test_steady_window_limits_per_minute() -> None:
    clock = Clock()
    pacer = InProcessPacer(clock=clock, sleep=clock.sleep)
    for _ in range(151):
        await pacer.acquire("add_profiles_to_list")
        clock.now += 0.11  # under the burst limit
    assert clock.now - 1000.0 >= 60.0


async def test_rate_limit_headers_and_retry_after_adapt() -> None:
    clock = Clock()
    pacer = InProcessPacer(clock=clock, sleep=clock.sleep)
    pacer.observe("get_profiles", httpx.Response(200, headers={"RateLimit-Remaining": "1", "RateLimit-Reset": "20"}))
    await pacer.acquire("get_profiles")
    assert clock.slept == []
    await pacer.acquire("get_profiles")  # budget used up by another app sharing the account
    assert clock.slept == [pytest.approx(20.0)]
    pacer.observe("get_events", httpx.Response(429, headers={"Retry-After": "3"}))
    await pacer.acquire("get_events")
    assert clock.slept[-1] == pytest.approx(3.0)


async def test_daily_cap_raises_instead_of_waiting_a_day() -> None:
    clock = Clock()
    pacer = InProcessPacer(clock=clock, sleep=clock.sleep)
    with pytest.raises(KlaviyoAPIError, match="daily"):
        for _ in range(151):
            await pacer.acquire("create_list")
            clock.now += 1.0


def test_retry_after_formats() -> None:
    assert retry_after(httpx.Response(429, headers={"Retry-After": "2"})) == 2.0
    assert retry_after(httpx.Response(429)) is None
    assert retry_after(httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0
