"""Klaviyo's fixed-window rate limits per API key and operation, as an ASGI middleware.

Klaviyo counts a burst (1 s) and a steady (60 s) fixed window, plus a daily one for a few operations (Create
List: 150/day); exceeding any answers 429 + ``Retry-After`` with the JSON:API ``throttled`` error and *no*
``RateLimit-*`` headers, while every other response describes the steady window. Modelling exactly that lets
the project's pacing and retry code be proven against the spec's figures instead of against a guess.

Order of the middlewares (use :func:`klaviyo_segment.devkit.sandbox.klaviyo.faults.wrap_app`): this one is the
OUTER wrapper, so it sees uvicorn's own ``send`` and can hand the connection's transport to the fault
middleware, and so injected faults still count against the limits like every request Klaviyo receives.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from klaviyo_segment.constants import JSONAPI_CONTENT_TYPE
from klaviyo_segment.devkit.sandbox.klaviyo.operations import Operation, match
from klaviyo_segment.devkit.sandbox.klaviyo.stats import SandboxStats

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SANDBOX_PREFIX = "/__sandbox"
#: Scope keys shared with the fault middleware and the core (the matched operation, the raw transport).
SCOPE_OPERATION = "klaviyo_sandbox.operation"
SCOPE_TRANSPORT = "klaviyo_sandbox.transport"

BURST_SECONDS = 1
STEADY_SECONDS = 60
DAILY_SECONDS = 86_400
_KEY = re.compile(r"^\s*Klaviyo-API-Key\s+(pk_\S+)\s*$")
_SCALE = re.compile(r"^scale=([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)$")


@dataclass(frozen=True)
class RateLimitMode:
    """``enabled=False`` is ``off``; ``scale`` multiplies every ceiling (``on`` is ``scale=1``)."""

    enabled: bool
    scale: float = 1.0


def parse_mode(text: str) -> RateLimitMode:
    """Parse ``on`` | ``off`` | ``scale=F`` (F > 0); the CLI turns the ValueError into exit 2."""
    value = (text or "").strip().lower()
    if value == "on":
        return RateLimitMode(True, 1.0)
    if value == "off":
        return RateLimitMode(False, 1.0)
    m = _SCALE.match(value)
    if m:
        scale = float(m.group(1))
        if scale > 0 and math.isfinite(scale):
            return RateLimitMode(True, scale)
    raise ValueError(
        f"invalid rate-limit mode {text!r}: expected 'on', 'off' or 'scale=F' with F a number > 0 "
        "(e.g. scale=0.1 makes every ceiling ten times lower, scale=10 ten times higher)"
    )


def _variant_limits(op: Operation, query: str) -> tuple[str, int | None, int | None, int | None]:
    """Tiers the spec documents per query: include=list/segment on Get Profile is XS, predictive analytics M."""
    if op.id == "get_profile" and re.search(r"(?:^|&)include=[^&]*(?:list|segment)", query):
        return f"{op.id}[include]", 1, 15, None
    if op.id == "get_profiles" and "predictive_analytics" in query:
        return f"{op.id}[predictive_analytics]", 10, 150, None
    return op.id, op.burst, op.steady, op.daily


@dataclass(frozen=True)
class Decision:
    """Outcome of one check: ``allowed`` or a ``retry_after``; ``limit/remaining/reset`` describe steady."""

    allowed: bool
    retry_after: int = 0
    limit: int | None = None
    remaining: int | None = None
    reset: int | None = None


class RateLimiter:
    """Fixed windows per (API key, operation bucket); ``clock`` returns epoch seconds and is injectable."""

    def __init__(self, mode: str = "on", clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str, int], tuple[int, int]] = {}
        self.mode = parse_mode(mode)

    def configure(self, mode: str) -> None:
        """Switch mode at runtime; counts already taken in the current windows stay."""
        self.mode = parse_mode(mode)

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()

    def ceiling(self, spec_limit: int | None) -> int | None:
        """The scaled ceiling: never below 1, or a window could never admit anything."""
        if spec_limit is None:
            return None
        return max(1, math.floor(spec_limit * self.mode.scale + 1e-9))

    def check(self, key: str, op: Operation, query: str = "") -> Decision | None:
        """Count one request; ``None`` when limiting is off or the operation has no limits in the spec."""
        if not self.mode.enabled:
            return None
        bucket, burst, steady, daily = _variant_limits(op, query)
        windows = [
            (size, self.ceiling(lim))
            for size, lim in ((BURST_SECONDS, burst), (STEADY_SECONDS, steady), (DAILY_SECONDS, daily))
            if lim
        ]
        if not windows:
            return None
        now = self.clock()
        with self._lock:
            state = []
            for size, ceiling in windows:
                start = math.floor(now / size) * size
                prev_start, count = self._windows.get((key, bucket, size), (start, 0))
                count = count if prev_start == start else 0
                state.append((size, ceiling or 1, start, count))
            blocked = [start + size - now for size, ceiling, start, count in state if count >= ceiling]
            if blocked:
                return Decision(False, retry_after=max(1, math.ceil(max(blocked) - 1e-9)))
            for size, _ceiling, start, count in state:
                self._windows[(key, bucket, size)] = (start, count + 1)
        steady_state = next((s for s in state if s[0] == STEADY_SECONDS), state[0])
        size, ceiling, start, count = steady_state
        return Decision(
            True,
            limit=ceiling,
            remaining=max(0, ceiling - count - 1),
            reset=max(0, math.ceil(start + size - now - 1e-9)),
        )


def api_key(scope: Scope) -> str | None:
    """The private key from ``Authorization: Klaviyo-API-Key pk_...``; anything else is the core's 401."""
    for name, value in scope.get("headers") or []:
        if name.lower() == b"authorization":
            m = _KEY.match(value.decode("latin-1"))
            return m.group(1) if m else None
    return None


def scope_operation(scope: Scope) -> Operation | None:
    """The operation of this request, matched once and remembered in the scope for the inner layers."""
    if SCOPE_OPERATION not in scope:
        found = match(scope.get("method", "GET"), scope.get("path", ""))
        scope[SCOPE_OPERATION] = found[0] if found else None
    return scope[SCOPE_OPERATION]


def capture_transport(scope: Scope, send: Send) -> None:
    """Remember uvicorn's transport (reachable from its bound ``send``) so a fault can drop the connection."""
    if SCOPE_TRANSPORT not in scope:
        cycle = getattr(send, "__self__", None)
        scope[SCOPE_TRANSPORT] = getattr(cycle, "transport", None)


def error_body(
    status: int, code: str, title: str, detail: str, *, pointer: str = "/data/", links: dict[str, str] | None = None
) -> bytes:
    """One JSON:API error document in Klaviyo's shape (``id, status, code, title, detail, source``)."""
    error = {
        "id": str(uuid.uuid4()),
        "status": status,
        "code": code,
        "title": title,
        "detail": detail,
        "source": {"pointer": pointer},
        "links": links or {},
        "meta": {},
    }
    return json.dumps({"errors": [error]}).encode()


def throttled_body(retry_after: int) -> bytes:
    unit = "second" if retry_after == 1 else "seconds"
    return error_body(
        429,
        "throttled",
        "Request was throttled.",
        f"Request was throttled. Expected available in {retry_after} {unit}.",
        links={"type": "https://developers.klaviyo.com/en/docs/rate_limits_and_error_handling#rate-limits"},
    )


async def send_response(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", JSONAPI_CONTENT_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def is_sandbox_control(scope: Scope) -> bool:
    return scope.get("type") != "http" or str(scope.get("path", "")).startswith(SANDBOX_PREFIX)


class RateLimitMiddleware:
    """Pure ASGI: throttles per key+operation, adds ``RateLimit-*`` headers, counts requests and statuses."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter, stats: SandboxStats) -> None:
        self.app = app
        self.limiter = limiter
        self.stats = stats

    def configure(self, mode: str) -> None:
        self.limiter.configure(mode)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if is_sandbox_control(scope):
            await self.app(scope, receive, send)
            return
        capture_transport(scope, send)
        op = scope_operation(scope)
        op_id = op.id if op else "unknown"
        self.stats.record_request(op_id)
        key = api_key(scope)
        query = (scope.get("query_string") or b"").decode("latin-1")
        decision = self.limiter.check(key, op, query) if (op and key) else None
        if decision is not None and not decision.allowed:
            self.stats.record_throttled(op_id)
            self.stats.record_status(op_id, 429)
            await send_response(
                send, 429, throttled_body(decision.retry_after), [(b"retry-after", str(decision.retry_after).encode())]
            )
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                self.stats.record_status(op_id, status)
                if decision is not None and status != 429:
                    message = dict(message)
                    message["headers"] = [
                        *message.get("headers", []),
                        (b"ratelimit-limit", str(decision.limit).encode()),
                        (b"ratelimit-remaining", str(decision.remaining).encode()),
                        (b"ratelimit-reset", str(decision.reset).encode()),
                    ]
            await send(message)

        await self.app(scope, receive, send_with_headers)
