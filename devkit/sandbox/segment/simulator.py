"""Segment Webhooks (Actions) delivery simulator: sends messages to a receiver the way Segment does.

Behaviour follows segmentio/action-destinations (webhook destination + actions-core): POST with
``User-Agent: Segment (Actions)``, single events or JSON arrays, ``X-Signature`` = hex HMAC-SHA1 of
``JSON.stringify(data)`` where ``data`` is the event, or the FIRST event of a batch (so a receiver must
re-serialise ``body[0]`` the JavaScript way to verify a batch). Retries 408/423/429, 5xx except 501, timeouts
and connection errors with randomized exponential backoff; any other non-2xx is given up at once. Unlike
Segment's four-hour window, attempts AND total time are bounded so tests and demos always end.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx

USER_AGENT = "Segment (Actions)"
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_MAX_SECONDS = 60.0
MAX_BACKOFF_S = 30.0

Unit = list[dict[str, Any]]


def _js_number(value: float) -> str:
    """ECMAScript Number::toString: Python's repr differs (``1.0``, ``1e-07``, ``1e+16``)."""
    if not math.isfinite(value):
        return "null"
    if value == 0:
        return "0"
    sign, digits, exponent = Decimal(repr(value)).as_tuple()
    text = "".join(map(str, digits)).rstrip("0") or "0"
    k = len(text)
    n = len(digits) + int(exponent)  # value = 0.text * 10**n
    if k <= n <= 21:
        out = text + "0" * (n - k)
    elif 0 < n <= 21:
        out = f"{text[:n]}.{text[n:]}"
    elif -6 < n <= 0:
        out = "0." + "0" * (-n) + text
    else:
        e = n - 1
        mantissa = text if k == 1 else f"{text[0]}.{text[1:]}"
        out = f"{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"
    return ("-" if sign else "") + out


def _js_string(value: str) -> str:
    """json.dumps(ensure_ascii=False) matches JSON.stringify except for lone surrogates, which JS escapes."""
    out = json.dumps(value, ensure_ascii=False)
    if any(0xD800 <= ord(c) <= 0xDFFF for c in out):
        out = "".join(f"\\u{ord(c):04x}" if 0xD800 <= ord(c) <= 0xDFFF else c for c in out)
    return out


def js_json_stringify(obj: Any) -> str:
    """Serialise exactly like JavaScript's ``JSON.stringify`` (compact, insertion order, raw unicode)."""
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, int):
        return str(obj)
    if isinstance(obj, float):
        return _js_number(obj)
    if isinstance(obj, str):
        return _js_string(obj)
    if isinstance(obj, dict):
        return "{" + ",".join(f"{_js_string(str(k))}:{js_json_stringify(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(js_json_stringify(v) for v in obj) + "]"
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sign(secret: str, data: Any) -> str:
    """The X-Signature Segment sends for ``data`` (one event)."""
    return hmac.new(secret.encode(), js_json_stringify(data).encode(), hashlib.sha1).hexdigest()


def is_retryable(status: int) -> bool:
    """actions-core ``RetryableError`` semantics: 408, 423, 429 and 5xx except 501."""
    return status in (408, 423, 429) or (500 <= status <= 599 and status != 501)


@dataclass
class DeliveryReport:
    """What the receiver acknowledged and what Segment would have given up on (message id -> last status)."""

    sent: int = 0
    acknowledged: list[str] = field(default_factory=list)
    given_up: dict[str, int | str] = field(default_factory=dict)
    attempts: int = 0
    retries: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    def percentile(self, pct: float) -> float:
        """Latency percentile in seconds (0 when nothing was sent)."""
        if not self.latencies:
            return 0.0
        if len(self.latencies) == 1:
            return self.latencies[0]
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[int(pct) - 1]

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p95(self) -> float:
        return self.percentile(95)

    def summary(self) -> dict[str, Any]:
        """The line ``klaviyo-segment simulate`` prints."""
        return {
            "sent": self.sent,
            "acknowledged": len(self.acknowledged),
            "given_up": len(self.given_up),
            "retries": self.retries,
            "elapsed_s": round(self.elapsed, 3),
        }


def _units(messages: Sequence[dict[str, Any]], batch_size: int) -> list[Unit]:
    size = max(batch_size, 1)
    return [list(messages[i : i + size]) for i in range(0, len(messages), size)]


def _ids(unit: Unit, offset: int) -> list[str]:
    return [str(m.get("messageId") or f"#{offset + i}") for i, m in enumerate(unit)]


class _Delivery:
    """One delivery run: shared client, RNG, deadline and report."""

    def __init__(
        self,
        url: str,
        secret: str,
        batched: bool,
        max_attempts: int,
        timeout: float,
        backoff_base: float,
        deadline: float,
        rng: random.Random,
        report: DeliveryReport,
        progress: Callable[[int, int], None] | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.url, self.secret, self.batched = url, secret, batched
        self.clock, self.sleep = clock, sleep
        self.max_attempts, self.timeout = max_attempts, timeout
        self.backoff_base, self.deadline = backoff_base, deadline
        self.rng, self.report, self.progress = rng, report, progress
        self.done = 0

    def _request(self, unit: Unit) -> tuple[bytes, dict[str, str]]:
        body = js_json_stringify(unit if self.batched else unit[0]).encode()
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if self.secret:
            headers["X-Signature"] = sign(self.secret, unit[0])
        return body, headers

    async def send(self, client: httpx.AsyncClient, unit: Unit, ids: list[str]) -> None:
        body, headers = self._request(unit)
        outcome: int | str = "not_attempted"
        attempt = 0
        while attempt < self.max_attempts and self.clock() < self.deadline:
            attempt += 1
            self.report.attempts += 1
            if attempt > 1:
                self.report.retries += 1
            started = self.clock()
            try:
                response = await client.post(
                    self.url,
                    content=body,
                    headers=headers,
                    timeout=max(0.001, min(self.timeout, self.deadline - started)),
                )
                outcome = response.status_code
            except httpx.TimeoutException:
                outcome = "timeout"
            except httpx.TransportError:
                outcome = "connection_error"
            self.report.latencies.append(self.clock() - started)
            self.report.statuses[str(outcome)] = self.report.statuses.get(str(outcome), 0) + 1
            if isinstance(outcome, int) and 200 <= outcome < 300:
                self.report.acknowledged.extend(ids)
                break
            if isinstance(outcome, int) and not is_retryable(outcome):
                break
            delay = self.rng.uniform(0, min(MAX_BACKOFF_S, self.backoff_base * 2 ** (attempt - 1)))
            if attempt >= self.max_attempts or self.clock() + delay >= self.deadline:
                break
            await self.sleep(delay)
        if not (isinstance(outcome, int) and 200 <= outcome < 300):
            self.report.given_up.update(dict.fromkeys(ids, outcome))
        self.done += len(ids)
        if self.progress:
            self.progress(self.done, self.report.sent)


async def deliver(
    url: str,
    messages: Sequence[dict[str, Any]],
    secret: str,
    *,
    batch_size: int = 0,
    concurrency: int = 4,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    timeout: float = 10.0,
    backoff_base: float = 0.2,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    seed: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> DeliveryReport:
    """Deliver ``messages`` to ``url``; ``batch_size`` 0/1 sends single events, N > 1 JSON arrays of up to N.

    ``max_seconds`` bounds the whole run (no new attempt starts after it), ``max_attempts`` each request.
    ``seed`` makes the backoff jitter reproducible; ``progress(done, total)`` is called after each request unit.
    ``clock``/``sleep`` time the deadline and backoff (tests inject a virtual clock instead of waiting).
    """
    if max_attempts < 1 or concurrency < 1 or timeout <= 0 or max_seconds <= 0 or batch_size < 0:
        raise ValueError("max_attempts, concurrency, timeout and max_seconds must be positive, batch_size >= 0")
    started = clock()
    report = DeliveryReport(sent=len(messages))
    units = _units(messages, batch_size)
    delivery = _Delivery(
        url,
        secret,
        batch_size > 1,
        max_attempts,
        timeout,
        backoff_base,
        started + max_seconds,
        random.Random(seed),
        report,
        progress,
        clock,
        sleep,
    )
    queue: asyncio.Queue[tuple[Unit, list[str]]] = asyncio.Queue()
    offset = 0
    for unit in units:
        queue.put_nowait((unit, _ids(unit, offset)))
        offset += len(unit)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            unit, ids = queue.get_nowait()
            await delivery.send(client, unit, ids)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout), limits=limits, trust_env=False) as client:
        await asyncio.gather(*(worker(client) for _ in range(min(concurrency, max(len(units), 1)))))
    report.elapsed = clock() - started
    return report
