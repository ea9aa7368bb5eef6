"""Rate limits that hold across worker processes: Prefect global concurrency limits with slot decay.

Klaviyo counts requests per account, so N workers each pacing "their" share cannot know what the others do.
A Prefect GCL with ``slot_decay_per_second`` is a token bucket held by the Prefect server that every worker
already talks to; ``rate_limit(names, strict=True)`` takes one token from both buckets of a tier atomically.

A token bucket of capacity C refilled at r/s admits at most ``C + r*W`` requests in ANY window of W seconds,
so the buckets are sized to make that bound fit each Klaviyo window (burst: W=1, steady: W=60) instead of
naively using the limit as capacity (which would admit nearly twice the steady limit in a minute).

It costs one server round trip per request, which is why it guards *requests* (bulk calls of up to 1,000
items), never messages. Adaptive pacing from ``RateLimit-*``/``Retry-After`` stays in the in-process pacer
that wraps it, because other apps sharing the account's quota are invisible to our GCLs.

Opt-in: ``KLAVIYO_SEGMENT_GLOBAL_LIMITS=prefect``; without a Prefect API URL we fall back to in-process pacing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import time
from dataclasses import dataclass
from typing import Any

import httpx

from klaviyo_segment import constants
from klaviyo_segment.clients.pacing import InProcessPacer, log_wait, tier_of

logger = logging.getLogger("klaviyo_segment.global_limits")

ENV_GLOBAL_LIMITS = constants.ENV_GLOBAL_LIMITS
#: Multiplies every planned limit; only for sandboxes started with ``--rate-limits scale=F``.
ENV_RATE_SCALE = constants.ENV_RATE_SCALE
#: Headroom under the published limits: request arrival jitter and clock skew eat into exact windows.
DEFAULT_MARGIN = 0.9
#: Slots per request. The server decays ``floor(rate * seconds since the last update)`` slots and every update
#: restarts that clock, so up to one slot of decay is lost per update; at 10 slots per request that loss is a
#: tenth of a request instead of a whole one. (Measured: the larger loss is the server's Poisson Retry-After
#: on 423 under contention; 2 workers reach ~65% of the steady ceiling with 0 throttled, docs/reliability.md.)
SLOTS_PER_REQUEST = 10
_NAME_SAFE = re.compile(r"[^A-Za-z0-9_.:-]+")


@dataclass(frozen=True)
class BucketSpec:
    """One token bucket in requests: capacity ``limit``, refilled at ``decay`` requests per second.

    The Prefect GCL holds it in :data:`SLOTS_PER_REQUEST` units (see :meth:`slots`).
    """

    name: str
    limit: int
    decay: float

    def slots(self) -> tuple[int, float]:
        """(GCL limit, GCL slot_decay_per_second) in slot units."""
        return self.limit * SLOTS_PER_REQUEST, self.decay * SLOTS_PER_REQUEST


def rate_scale() -> float:
    """The configured limit multiplier (default 1); a malformed value is a configuration error, not a guess."""
    from klaviyo_segment.settings import env_settings

    return env_settings().rate_scale


def account_slug(account_key: str) -> str:
    """A short non-secret id: account keys contain URLs, and GCL names must stay simple."""
    return hashlib.sha256(account_key.encode()).hexdigest()[:12]


def bucket_specs(
    account_key: str, operation_id: str, *, scale: float = 1.0, margin: float = DEFAULT_MARGIN
) -> tuple[BucketSpec, BucketSpec]:
    """(burst, steady) GCLs of the operation's tier, sized so ``C + r*W`` stays within each window."""
    tier, burst, steady, _daily = tier_of(operation_id)
    b = max(1, math.floor(burst * scale * margin))
    s = max(1, math.floor(steady * scale * margin))
    steady_cap = max(1, min(b, s // 4))
    steady_rate = max(s - steady_cap, 1) / 60.0
    burst_cap = max(1, min(b // 2 or 1, math.floor(b - steady_rate) or 1))
    burst_rate = max(steady_rate, float(b - burst_cap))
    prefix = f"klaviyo:{account_slug(account_key)}:{_NAME_SAFE.sub('-', tier)}"
    return BucketSpec(f"{prefix}:burst", burst_cap, burst_rate), BucketSpec(f"{prefix}:steady", steady_cap, steady_rate)


async def ensure_limits(specs: tuple[BucketSpec, ...], client: Any = None) -> None:
    """Create or update the GCLs (idempotent; concurrent workers racing to create them is fine)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    async def upsert(c: Any) -> None:
        for spec in specs:
            limit, decay = spec.slots()
            try:
                current = await c.read_global_concurrency_limit_by_name(spec.name)
            except ObjectNotFound:
                try:
                    await c.create_global_concurrency_limit(
                        GlobalConcurrencyLimitCreate(
                            name=spec.name, limit=limit, slot_decay_per_second=decay, active=True
                        )
                    )
                    continue
                except (ObjectAlreadyExists, httpx.HTTPStatusError):
                    current = await c.read_global_concurrency_limit_by_name(spec.name)
            if (
                current.limit != limit
                or not current.active
                or abs((current.slot_decay_per_second or 0.0) - decay) > 1e-9
            ):
                await c.update_global_concurrency_limit(
                    spec.name, GlobalConcurrencyLimitUpdate(limit=limit, slot_decay_per_second=decay, active=True)
                )

    if client is not None:
        await upsert(client)
        return
    async with get_client() as c:
        await upsert(c)


class PrefectGlobalPacer:
    """A ``Pacer``: one token from the tier's Prefect GCLs per request, then the adaptive in-process pacer."""

    def __init__(
        self,
        account_key: str,
        *,
        local: InProcessPacer | None = None,
        scale: float = 1.0,
        margin: float = DEFAULT_MARGIN,
    ) -> None:
        self.account_key = account_key
        self.scale = scale
        self.margin = margin
        self.local = local if local is not None else InProcessPacer(scale=scale)
        self._ready: dict[str, tuple[BucketSpec, BucketSpec]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.degraded = False

    async def _specs(self, operation_id: str) -> tuple[BucketSpec, BucketSpec]:
        specs = bucket_specs(self.account_key, operation_id, scale=self.scale, margin=self.margin)
        key = specs[0].name
        if key not in self._ready:
            lock = self._locks.setdefault(key, asyncio.Lock())
            async with lock:
                if key not in self._ready:
                    await ensure_limits(specs)
                    self._ready[key] = specs
        return self._ready[key]

    async def acquire(self, operation_id: str) -> None:
        """Global token first (cross-worker windows), then local waits (Retry-After, RateLimit-*, daily caps)."""
        from prefect.concurrency.asyncio import rate_limit

        try:
            burst, steady = await self._specs(operation_id)
            began = time.monotonic()
            await rate_limit([burst.name, steady.name], occupy=SLOTS_PER_REQUEST, strict=True)
            log_wait(operation_id, time.monotonic() - began, "waited for the cross-worker Prefect rate limit")
        except (httpx.HTTPError, OSError) as exc:
            # The Prefect API being down must not stop deliveries; the local pacer and 429 retries still hold.
            if not self.degraded:
                logger.warning("global rate limits unavailable (%s); pacing in-process only", type(exc).__name__)
            self.degraded = True
        await self.local.acquire(operation_id)

    def observe(self, operation_id: str, response: httpx.Response) -> None:
        self.local.observe(operation_id, response)


def prefect_api_configured() -> bool:
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def global_pacer_from_env(account_key: str) -> PrefectGlobalPacer | None:
    """The cross-worker pacer when opted in and a Prefect API is configured, else None (in-process pacing)."""
    from klaviyo_segment.errors import ConfigError
    from klaviyo_segment.settings import env_settings

    mode = env_settings().global_limits
    if mode in ("", "off", "local", "in-process"):
        return None
    if mode != "prefect":
        raise ConfigError(f"{ENV_GLOBAL_LIMITS}={mode!r}: expected 'prefect' or 'off'")
    if not prefect_api_configured():
        logger.warning("%s=prefect but no PREFECT_API_URL is set; pacing in-process only", ENV_GLOBAL_LIMITS)
        return None
    return PrefectGlobalPacer(account_key, scale=rate_scale())
