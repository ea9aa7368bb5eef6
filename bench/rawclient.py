"""A lean HTTP/1.1 load generator for single-event deliveries (``python -m klaviyo_segment.bench.client
deliver-raw``).

Why: httpx costs ~1 ms of CPU per request at 32 connections (~6 ms at 128) in each generator process, so on 2 cores
the instrument, not the receiver, capped the single-event ingress figure (418 requests/s, generators and receiver
sharing the cores). Here every request is built and signed before the clock starts, and sent over keep-alive
connections with asyncio streams; a response is read by its Content-Length. What Segment retries (5xx, 429, a
dropped connection) is retried, as the simulator does. Loopback only.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

ATTEMPTS = 6


def build_requests(url: str, secret: str, messages: list[dict[str, Any]]) -> list[bytes]:
    """One signed ``POST`` per message, as raw bytes (Segment signs the JS-stringified body)."""
    from klaviyo_segment.devkit.sandbox.segment.simulator import js_json_stringify, sign

    parts = urlsplit(url)
    host = f"{parts.hostname}:{parts.port}"
    out = []
    for message in messages:
        body = js_json_stringify(message).encode()
        head = (
            f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"X-Signature: {sign(secret, message)}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


async def _response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, server closes the connection) of one response; its body is read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, close = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "connection" and value.strip().lower() == "close":
            close = True
    if length:
        await reader.readexactly(length)
    return status, close


async def deliver_raw(url: str, requests: list[bytes], concurrency: int, max_seconds: float) -> dict[str, Any]:
    """Send every request, ``concurrency`` connections at a time; the simulator's report shape."""
    from klaviyo_segment.devkit.sandbox.segment.simulator import is_retryable

    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost"):
        raise ValueError("the raw load generator only targets 127.0.0.1")
    pending = list(range(len(requests) - 1, -1, -1))
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    given_up = 0
    deadline = time.monotonic() + max_seconds

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(parts.hostname, parts.port)

    async def worker() -> None:
        nonlocal given_up
        reader, writer = await connect()
        try:
            while pending and time.monotonic() < deadline:
                request = requests[pending.pop()]
                for attempt in range(ATTEMPTS):
                    began = time.perf_counter()
                    status, close = 0, True
                    try:
                        writer.write(request)
                        status, close = await _response(reader)
                    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                        pass
                    statuses[status] += 1
                    if close:
                        writer.close()
                        reader, writer = await connect()
                    if 200 <= status < 300:
                        latencies.append(time.perf_counter() - began)
                        break
                    if status and not is_retryable(status):
                        given_up += 1
                        break
                    await asyncio.sleep(0.2 * 2**attempt)
                else:
                    given_up += 1
        finally:
            writer.close()

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    return {
        "acked": len(latencies),
        "elapsed": time.monotonic() - started,
        "requests": sum(statuses.values()),
        "latencies": latencies,
        "statuses": {str(k): v for k, v in statuses.items()},
        "given_up": given_up + len(pending),
    }
