"""Client-side pacing of Klaviyo requests per (account, operation), at each operation's tier limits.

Klaviyo answers 429 when either the 1-second burst or the 1-minute steady window is exceeded, and the quota is
shared with every other app using the same private key. So we pace proactively from the schema's published
limits and adapt to ``RateLimit-Remaining``/``RateLimit-Reset`` and ``Retry-After``. The ``Pacer`` protocol is
deliberately tiny so the cross-worker limiter in ``global_limits`` (Prefect global concurrency limits) can wrap it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from klaviyo_segment import constants
from klaviyo_segment.clients.operations import operation
from klaviyo_segment.clients.retry import retry_after
from klaviyo_segment.errors import KlaviyoAPIError

_TIERS = {(1, 15): "XS", (3, 60): "S", (10, 150): "M", (75, 750): "L", (75, 700): "L", (350, 3500): "XL"}
_DAY = 86_400.0
#: Throttle waits longer than this are logged (they reach the flow run's logs through ``run_logs``): a run that is
#: slow because Klaviyo's quota is spent must say so in the UI, while the usual sub-second spacing stays quiet.
LOG_WAIT_OVER = 1.0

logger = logging.getLogger("klaviyo_segment.clients.pacing")


def log_wait(operation_id: str, seconds: float, why: str) -> None:
    """One warning per throttle wait over :data:`LOG_WAIT_OVER` seconds."""
    if seconds > LOG_WAIT_OVER:
        logger.warning("klaviyo throttle: %s held %.1fs (%s)", operation_id, seconds, why)


class Pacer(Protocol):
    """What the client needs from a rate limiter."""

    async def acquire(self, operation_id: str) -> None: ...

    def observe(self, operation_id: str, response: httpx.Response) -> None: ...


@dataclass
class _Window:
    burst: int
    steady: int
    daily: int | None
    sent: deque[float] = field(default_factory=deque)
    day: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0
    budget: int | None = None
    budget_until: float = 0.0


def tier_of(operation_id: str) -> tuple[str, int, int, int | None]:
    """(tier name, burst/s, steady/min, daily) for an operation; the L tier is planned at 700/min, not 750."""
    rl = operation(operation_id)["ratelimit"]
    burst, steady, daily = int(rl["burst"]), int(rl["steady"]), rl.get("daily")
    name = _TIERS.get((burst, steady), f"{burst}/s-{steady}/m")
    if name == "L":
        steady = min(steady, constants.L_TIER_STEADY_PLANNED)
    if daily:
        name = f"{name}+{daily}/d:{operation_id}"  # a daily cap is per operation (create_list), never shared
    return name, burst, steady, int(daily) if daily else None


class InProcessPacer:
    """Sliding-window pacer for one Klaviyo account, shared by every client of that account in this process.

    Thread-safe (Prefect may run async tasks on several event loops/threads); waiting happens outside the lock.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        scale: float = 1.0,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._scale = scale
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}

    def _window(self, operation_id: str) -> _Window:
        # One window per operation, with its tier's figures: Klaviyo (and the sandbox) count each endpoint on
        # its own, so job-status polls must not eat the job-submission budget of the same tier.
        win = self._windows.get(operation_id)
        if win is None:
            _, burst, steady, daily = tier_of(operation_id)
            planned = max(1, int(burst * self._scale))
            if planned >= 5:
                planned -= constants.BURST_HEADROOM
            win = self._windows[operation_id] = _Window(planned, max(1, int(steady * self._scale)), daily)
        return win

    def _try_take(self, win: _Window, now: float) -> float:
        """Record a request and return 0, or return how long to wait before trying again."""
        while win.sent and win.sent[0] <= now - 60.0:
            win.sent.popleft()
        while win.day and win.day[0] <= now - _DAY:
            win.day.popleft()
        if win.budget is not None and now >= win.budget_until:
            win.budget = None
        waits = [win.blocked_until - now]
        if win.daily is not None and len(win.day) >= win.daily:
            return float("inf")
        if len(win.sent) >= win.steady:
            waits.append(win.sent[-win.steady] + 60.0 - now)
        recent = sum(1 for t in reversed(win.sent) if t > now - 1.0) if len(win.sent) >= win.burst else 0
        if recent >= win.burst:
            waits.append(win.sent[-win.burst] + 1.0 - now)
        if win.budget is not None and win.budget <= 0:
            waits.append(win.budget_until - now)
        wait = max(waits)
        if wait > 0:
            return wait
        win.sent.append(now)
        if win.daily is not None:
            win.day.append(now)
        if win.budget is not None:
            win.budget -= 1
        return 0.0

    async def acquire(self, operation_id: str) -> None:
        """Wait until one more request of this operation fits in every window."""
        win = self._window(operation_id)
        while True:
            with self._lock:
                wait = self._try_take(win, self._clock())
            if wait == 0.0:
                return
            if wait == float("inf"):
                raise KlaviyoAPIError(
                    429,
                    message=f"daily limit of {win.daily} requests for {operation_id} reached in this process",
                    retryable=False,
                )
            log_wait(operation_id, wait, self._why(win))
            await self._sleep(wait)

    def _why(self, win: _Window) -> str:
        """Which limit holds the request back, for the log line."""
        now = self._clock()
        if win.blocked_until > now:
            return "Klaviyo answered 429 / Retry-After"
        if win.budget is not None and win.budget <= 0:
            return "RateLimit-Remaining is 0: the account's quota is shared with other apps"
        return f"client-side limit {win.burst}/s, {win.steady}/min"

    def observe(self, operation_id: str, response: httpx.Response) -> None:
        """Adapt to what the server says: other apps may be using the same account's quota."""
        win = self._window(operation_id)
        now = self._clock()
        with self._lock:
            if response.status_code == 429:
                delay = retry_after(response)
                win.blocked_until = max(win.blocked_until, now + (1.0 if delay is None else delay))
                return
            try:
                remaining = int(response.headers["RateLimit-Remaining"])
                reset = float(response.headers["RateLimit-Reset"])
            except (KeyError, ValueError):
                return
            win.budget, win.budget_until = max(0, remaining), now + max(0.0, reset)
