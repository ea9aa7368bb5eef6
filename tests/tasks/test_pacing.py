"""Pacer windows and adaptation, driven by a fake clock (no real waiting)."""

from __future__ import annotations

import random
from collections.abc import Callable

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


async def test_burst_window_delays_the_tenth_request() -> None:
    """M tier: 10/s, planned at 9/s (one of headroom for network jitter across Klaviyo's fixed windows)."""
    clock = Clock()
    pacer = InProcessPacer(clock=clock, sleep=clock.sleep)
    for _ in range(9):
        await pacer.acquire("bulk_create_events")
    assert clock.slept == []
    await pacer.acquire("merge_profiles")  # same M tier, another endpoint: its own window
    assert clock.slept == []
    await pacer.acquire("bulk_create_events")  # the 10th of this endpoint in one second waits
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


async def _drive(
    pacer: InProcessPacer,
    clock: Clock,
    *,
    seconds: float,
    idle: list[tuple[float, float]],
    jitter: Callable[[], float] = lambda: 0.0,
) -> tuple[int, int]:
    """Send bulk-create requests one after another (50 ms each) against the sandbox's fixed-window limiter,
    pausing during ``idle`` spans (a run mapping its next batch), each request arriving ``jitter()`` seconds
    after it was sent; returns (accepted, answered 429)."""
    from klaviyo_segment.devkit.sandbox.klaviyo.operations import match
    from klaviyo_segment.devkit.sandbox.klaviyo.ratelimit import RateLimiter

    op = match("POST", "/api/event-bulk-create-jobs")
    assert op is not None
    limiter = RateLimiter("on", clock=clock)
    start, accepted, throttled = clock.now, 0, 0
    while clock.now - start < seconds:
        pause = next((end for begin, end in idle if begin <= clock.now - start < end), None)
        if pause is not None:
            clock.now = start + pause
            continue
        await pacer.acquire("bulk_create_events")
        clock.now += jitter()  # the way there: Klaviyo counts the request when it arrives
        decision = limiter.check("pk_test", op[0])
        assert decision is not None
        clock.now += 0.05
        if decision.allowed:
            accepted += 1
            headers = {"RateLimit-Remaining": str(decision.remaining), "RateLimit-Reset": str(decision.reset)}
            pacer.observe("bulk_create_events", httpx.Response(202, headers=headers))
        else:
            throttled += 1
            pacer.observe("bulk_create_events", httpx.Response(429, headers={"Retry-After": str(decision.retry_after)}))
    return accepted, throttled


async def test_pauses_are_made_up_against_klaviyos_fixed_windows() -> None:
    """Klaviyo counts fixed windows and says what is left of the current one: a producer that pauses for 10 s
    of every 30 s (a flow run between batches) still gets every request of each minute accepted, none
    answered 429 (the sliding window lets the next burst make up the pause)."""
    clock = Clock()
    clock.now = 6_000.0  # a minute boundary: three whole fixed windows
    pacer = InProcessPacer(clock=clock, sleep=clock.sleep)
    idle = [(t, t + 10.0) for t in range(20, 180, 30)]
    accepted, throttled = await _drive(pacer, clock, seconds=180.0, idle=idle)
    assert throttled == 0
    assert accepted >= 3 * 150  # the whole steady budget of three windows (+1 sent as the fourth one opens)


async def test_network_jitter_across_fixed_burst_windows_draws_no_429() -> None:
    """Requests reach Klaviyo 0-100 ms after they leave, so a second's last request can be counted in the next
    fixed second. Pacing exactly at 10/s drew a 429 about once a minute at Klaviyo's real limits; 9/s does not."""
    rng = random.Random(7)
    clock = Clock()
    clock.now = 6_000.0
    pacer = InProcessPacer(clock=clock, sleep=clock.sleep)
    idle = [(t, t + 20.0) for t in range(10, 600, 60)]  # a backlog after each pause: sent at the burst rate
    accepted, throttled = await _drive(pacer, clock, seconds=600.0, idle=idle, jitter=lambda: rng.uniform(0, 0.1))
    assert throttled == 0
    assert accepted >= 10 * 150
