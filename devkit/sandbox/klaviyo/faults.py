"""Deterministic fault injection per operation: 5xx, injected 429s, latency, resets, timeouts and "lost 202".

The failures that hurt integrations are the ones a happy-path mock never produces: a dropped connection after
Klaviyo already applied the request (a retry must not double-apply), a hang longer than the client's timeout,
a reset before any byte. They are drawn from one ``random.Random(seed)`` so a failing run can be replayed.
"""

from __future__ import annotations

import asyncio
import random
import re
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from klaviyo_segment.devkit.sandbox.klaviyo.operations import load_operations
from klaviyo_segment.devkit.sandbox.klaviyo.ratelimit import (
    SCOPE_TRANSPORT,
    ASGIApp,
    Message,
    RateLimiter,
    RateLimitMiddleware,
    Receive,
    Scope,
    Send,
    capture_transport,
    error_body,
    is_sandbox_control,
    scope_operation,
    send_response,
    throttled_body,
)
from klaviyo_segment.devkit.sandbox.klaviyo.stats import SandboxStats

GRAMMAR_HELP = """\
Fault spec: RULE[;RULE...]
  RULE    = OPS:EFFECT[,EFFECT...]
  OPS     = an operationId of the spec (e.g. bulk_create_events), several joined with '|'
            (e.g. create_event|bulk_create_events), or '*' for every operation
  EFFECT  = 500=P | 502=P | 503=P   answer that status (the request is NOT applied)
          | 429=P                   injected 429 + Retry-After: 1 (counted as a fault, not as throttling)
          | reset=P                 drop the connection before any response (request NOT applied)
          | timeout=P               hang (up to 60 s, until the client gives up), then drop the connection
          | lost=P                  "lost 202": the request IS applied, then the connection is dropped
                                    instead of sending the answer
          | latency=50ms | latency=10-80ms | latency=0.2s
                                    delay added to every matching request (a range draws uniformly)
  P       = probability in [0, 1]; the probabilities of one rule must add up to at most 1.
Each request of a matched operation draws one number from random.Random(--seed); the effects of all
matching rules are tried in the order written (first hit wins). Latency from several rules adds up.
Example: 'bulk_create_events:503=0.1,reset=0.02;*:latency=50ms'
"""

PROBABILISTIC = ("500", "502", "503", "429", "reset", "timeout", "lost")
_LATENCY = re.compile(r"^(\d+(?:\.\d+)?)(?:-(\d+(?:\.\d+)?))?(ms|s)$")
_STATUS_CODES = {
    "500": ("error", "A server error occurred."),
    "502": ("bad_gateway", "Bad gateway."),
    "503": ("service_unavailable", "Service unavailable."),
}


@dataclass(frozen=True)
class FaultRule:
    """``ops`` is ``None`` for ``*``; ``latency`` is (low, high) in seconds."""

    ops: frozenset[str] | None
    effects: tuple[tuple[str, float], ...] = ()
    latency: tuple[float, float] | None = None

    def applies_to(self, op_id: str) -> bool:
        return self.ops is None or op_id in self.ops


@dataclass(frozen=True)
class FaultSpec:
    rules: tuple[FaultRule, ...]
    text: str = ""

    def plan(self, op_id: str) -> tuple[list[tuple[str, float]], list[tuple[float, float]]]:
        """Effects and latencies configured for an operation, in the order written."""
        rules = [r for r in self.rules if r.applies_to(op_id)]
        return ([e for r in rules for e in r.effects], [r.latency for r in rules if r.latency is not None])


def _parse_probability(rule: str, name: str, value: str) -> float:
    try:
        p = float(value)
    except ValueError:
        raise ValueError(f"fault rule {rule!r}: {name}={value!r} is not a probability in [0, 1]") from None
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"fault rule {rule!r}: {name}={value} is outside [0, 1]")
    return p


def _parse_latency(rule: str, value: str) -> tuple[float, float]:
    m = _LATENCY.match(value.strip().lower())
    if not m:
        raise ValueError(f"fault rule {rule!r}: latency={value!r} must look like 50ms, 10-80ms or 0.2s")
    factor = 0.001 if m.group(3) == "ms" else 1.0
    low = float(m.group(1)) * factor
    high = float(m.group(2)) * factor if m.group(2) else low
    if high < low:
        raise ValueError(f"fault rule {rule!r}: latency range {value!r} goes backwards")
    return low, high


def parse_faults(spec: str, known_operations: set[str] | None = None) -> FaultSpec:
    """Parse the grammar in :data:`GRAMMAR_HELP`; unknown operationIds are errors so typos never go silent."""
    known = known_operations if known_operations is not None else set(load_operations())
    rules: list[FaultRule] = []
    for raw_rule in (spec or "").split(";"):
        rule = raw_rule.strip()
        if not rule:
            continue
        ops_text, sep, effects_text = rule.partition(":")
        if not sep or not ops_text.strip() or not effects_text.strip():
            raise ValueError(f"fault rule {rule!r} must be OPS:EFFECT[,EFFECT...]\n\n{GRAMMAR_HELP}")
        ops: frozenset[str] | None = None
        if ops_text.strip() != "*":
            names = [n.strip() for n in ops_text.split("|")]
            unknown = [n for n in names if n not in known]
            if unknown:
                raise ValueError(
                    f"fault rule {rule!r}: unknown operation(s) {', '.join(map(repr, unknown))}; "
                    f"known: {', '.join(sorted(known))} or '*'"
                )
            ops = frozenset(names)
        effects: list[tuple[str, float]] = []
        latency: tuple[float, float] | None = None
        for raw_effect in effects_text.split(","):
            name, eq, value = (part.strip() for part in raw_effect.partition("="))
            name = name.lower()
            if not eq or not value:
                raise ValueError(f"fault rule {rule!r}: effect {raw_effect.strip()!r} must be NAME=VALUE")
            if name == "latency":
                if latency is not None:
                    raise ValueError(f"fault rule {rule!r}: latency given twice")
                latency = _parse_latency(rule, value)
            elif name in PROBABILISTIC:
                if any(n == name for n, _ in effects):
                    raise ValueError(f"fault rule {rule!r}: {name} given twice")
                effects.append((name, _parse_probability(rule, name, value)))
            else:
                raise ValueError(
                    f"fault rule {rule!r}: unknown effect {name!r}; expected one of {', '.join(PROBABILISTIC)}, latency"
                )
        if sum(p for _, p in effects) > 1.0 + 1e-9:
            raise ValueError(f"fault rule {rule!r}: probabilities add up to more than 1")
        rules.append(FaultRule(ops, tuple(effects), latency))
    return FaultSpec(tuple(rules), spec or "")


def _abort(scope: Scope, *, rst: bool) -> bool:
    """Drop the connection without a response; ``rst`` makes it a TCP reset (SO_LINGER 0) rather than a FIN."""
    transport = scope.get(SCOPE_TRANSPORT)
    if transport is None:
        return False
    if rst:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:  # pragma: no cover - already closed by the peer
                pass
    transport.abort()
    return True


async def _wait_disconnect(receive: Receive, limit: float) -> None:
    """Consume the request until the client goes away (or ``limit`` passes) so a hang ends with the client."""

    async def drain() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    try:
        await asyncio.wait_for(drain(), limit)
    except (TimeoutError, RuntimeError):
        pass


class FaultMiddleware:
    """Pure ASGI: applies the :class:`FaultSpec` to matched operations; ``/__sandbox/*`` is never touched."""

    def __init__(
        self,
        app: ASGIApp,
        spec: FaultSpec | None,
        seed: int,
        stats: SandboxStats,
        hang_seconds: float = 60.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.app = app
        self.stats = stats
        self.hang_seconds = hang_seconds
        self._sleep = sleep
        self.spec = spec
        self.seed = seed
        self.rng = random.Random(seed)

    def configure(self, spec: FaultSpec | None, seed: int | None = None) -> None:
        """Replace the spec; a new seed (or the old one) restarts the random sequence for replayability."""
        self.spec = spec
        if seed is not None:
            self.seed = seed
        self.rng = random.Random(self.seed)

    def draw(self, op_id: str) -> tuple[str | None, float]:
        """The effect and the added latency for one request; consumes the seeded sequence."""
        effects, latencies = self.spec.plan(op_id) if self.spec else ([], [])
        if not effects and not latencies:
            return None, 0.0
        u = self.rng.random()
        delay = sum(lo if lo == hi else self.rng.uniform(lo, hi) for lo, hi in latencies)
        acc = 0.0
        for name, p in effects:
            acc += p
            if u < acc:
                return name, delay
        return None, delay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        op = None if is_sandbox_control(scope) or self.spec is None else scope_operation(scope)
        if op is None:
            await self.app(scope, receive, send)
            return
        capture_transport(scope, send)
        effect, delay = self.draw(op.id)
        if delay > 0:
            self.stats.record_fault(op.id, "latency")
            await self._sleep(delay)
        if effect is None:
            await self.app(scope, receive, send)
            return
        self.stats.record_fault(op.id, effect)
        if effect in _STATUS_CODES:
            code, title = _STATUS_CODES[effect]
            await send_response(send, int(effect), error_body(int(effect), code, title, title, pointer="/"))
        elif effect == "429":
            await send_response(send, 429, throttled_body(1), [(b"retry-after", b"1")])
        elif effect == "reset":
            await self._drop(scope, receive, rst=True)
        elif effect == "timeout":
            await _wait_disconnect(receive, self.hang_seconds)
            await self._drop(scope, receive, rst=False)
        elif effect == "lost":

            async def discard(message: Message) -> None:
                return None

            await self.app(scope, receive, discard)
            await self._drop(scope, receive, rst=False)

    async def _drop(self, scope: Scope, receive: Receive, *, rst: bool) -> None:
        if not _abort(scope, rst=rst):
            # No transport to cut (e.g. an in-process ASGI transport): failing loudly beats a fake 500.
            raise ConnectionResetError("sandbox fault: connection dropped")
        # Let uvicorn notice the loss so it does not try to answer 500 on a dead connection.
        await _wait_disconnect(receive, 1.0)


def wrap_app(
    app: ASGIApp,
    *,
    stats: SandboxStats,
    rate_limits: str = "on",
    faults: FaultSpec | None = None,
    seed: int = 0,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> RateLimitMiddleware:
    """The sandbox's wrapping in the one correct order: rate limits outside, faults inside, then the core.

    Runtime handles: ``outer.limiter`` (``.configure(mode)``, ``.reset()``) and ``outer.app`` (the
    :class:`FaultMiddleware`, ``.configure(spec, seed)``). ``sleep`` serves injected latency (tests record it).
    """
    limiter = RateLimiter(rate_limits) if clock is None else RateLimiter(rate_limits, clock=clock)
    return RateLimitMiddleware(FaultMiddleware(app, faults, seed, stats, sleep=sleep), limiter, stats)
