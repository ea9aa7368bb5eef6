"""The load generator of the ingress-side benchmarks, run as its own process (``python -m
klaviyo_segment.bench.client MODE ...``) so signing and sending never share the receiver's GIL.

* ``deliver``: the Segment delivery simulator (signed, batched or single) over N generated track calls; prints
  acknowledged count, elapsed seconds and ack latency percentiles.
* ``trickle``: audience-entered changes sent one by one at a steady rate; a poller watches the sandbox's list
  membership (``/__sandbox/lists``) and reports, per change, the seconds from its 2xx to the profile being a
  member. Both clocks are this process's ``time.time()``, so no cross-process clock skew enters the figure.

The last stdout line is always one JSON report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import httpx

POLL_S = 0.05
SETTLE_S = 60.0


async def _deliver(args: argparse.Namespace) -> dict[str, Any]:
    from klaviyo_segment.bench.runner import percentile, track_messages
    from klaviyo_segment.devkit.sandbox.segment.simulator import deliver

    messages = track_messages(args.count, args.seed, event=args.event)
    report = await deliver(
        args.url,
        messages,
        args.secret,
        batch_size=args.batch,
        concurrency=args.concurrency,
        max_seconds=args.max_seconds,
        seed=args.seed,
    )
    return {
        "acked": len(report.acknowledged),
        "elapsed": report.elapsed,
        "requests": len(report.latencies),
        "ack_p50": percentile(report.latencies, 50),
        "ack_p99": percentile(report.latencies, 99),
        "latencies": [round(x, 5) for x in report.latencies],
        "statuses": report.statuses,
        "given_up": len(report.given_up),
    }


async def _send_one(client: httpx.AsyncClient, url: str, secret: str, message: dict[str, Any]) -> float | None:
    """POST one signed change, retrying what Segment would retry; the wall time of the 2xx, or None."""
    from klaviyo_segment.devkit.sandbox.segment.simulator import is_retryable, js_json_stringify, sign

    body = js_json_stringify(message).encode()
    headers = {"Content-Type": "application/json", "X-Signature": sign(secret, message)}
    for attempt in range(5):
        try:
            response = await client.post(url, content=body, headers=headers)
        except httpx.TransportError:
            response = None
        if response is not None and 200 <= response.status_code < 300:
            return time.time()
        if response is not None and not is_retryable(response.status_code):
            return None
        await asyncio.sleep(0.2 * 2**attempt)
    return None


async def _trickle(args: argparse.Namespace) -> dict[str, Any]:
    from klaviyo_segment.devkit.sandbox.segment.generators import SegmentGenerator

    gen = SegmentGenerator(args.seed)
    messages = [gen.audience_track(gen.user(), args.audience, True) for _ in range(args.count)]
    acked: dict[str, float] = {}
    seen: dict[str, float] = {}
    sending = True
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:

        async def poll() -> None:
            while sending or (len(seen) < len(acked) and time.time() < settle_until):
                response = await client.get(f"{args.klaviyo}/__sandbox/lists")
                now = time.time()
                for lst in response.json():
                    if lst["id"] == args.list_id:
                        for member in lst["members"]:
                            seen.setdefault(member, now)
                await asyncio.sleep(POLL_S)

        async def send(message: dict[str, Any]) -> None:
            at = await _send_one(client, args.url, args.secret, message)
            if at is not None:
                acked[str(message["context"]["traits"]["email"]).lower()] = at

        settle_until = float("inf")
        poller = asyncio.create_task(poll())
        started = time.monotonic()
        tasks = []
        for i, message in enumerate(messages):
            delay = started + i / args.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(message)))
        await asyncio.gather(*tasks)
        settle_until = time.time() + SETTLE_S
        sending = False
        await poller
        profiles = (await client.get(f"{args.klaviyo}/__sandbox/profiles")).json()
    email_of = {p["id"]: str(p["attributes"].get("email") or "").lower() for p in profiles}
    latencies = sorted(at - acked[email_of[pid]] for pid, at in seen.items() if email_of.get(pid) in acked)
    return {"sent": len(messages), "acked": len(acked), "members": len(seen), "latencies": latencies, "rate": args.rate}


async def _deliver_raw(args: argparse.Namespace) -> dict[str, Any]:
    """Single events over keep-alive connections (bench/rawclient.py): requests built before the clock starts."""
    from klaviyo_segment.bench.rawclient import build_requests, deliver_raw
    from klaviyo_segment.bench.runner import percentile, track_messages

    requests = build_requests(args.url, args.secret, track_messages(args.count, args.seed, event=args.event))
    report = await deliver_raw(args.url, requests, args.concurrency, args.max_seconds)
    latencies = report["latencies"]
    return report | {
        "ack_p50": percentile(latencies, 50),
        "ack_p99": percentile(latencies, 99),
        "latencies": [round(x, 5) for x in latencies],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="klaviyo_segment.bench.client")
    sub = parser.add_subparsers(dest="mode", required=True)
    for mode in ("deliver", "deliver-raw"):
        d = sub.add_parser(mode)
        d.add_argument("--url", required=True)
        d.add_argument("--secret", required=True)
        d.add_argument("--count", type=int, required=True)
        d.add_argument("--batch", type=int, default=0)
        d.add_argument("--concurrency", type=int, default=4)
        d.add_argument("--seed", type=int, default=0)
        d.add_argument("--event", default="Bench Ingress")
        d.add_argument("--max-seconds", type=float, default=1800.0)
    t = sub.add_parser("trickle")
    t.add_argument("--url", required=True)
    t.add_argument("--secret", required=True)
    t.add_argument("--klaviyo", required=True)
    t.add_argument("--list-id", required=True)
    t.add_argument("--audience", required=True)
    t.add_argument("--count", type=int, required=True)
    t.add_argument("--rate", type=float, default=10.0)
    t.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    modes = {"deliver": _deliver, "deliver-raw": _deliver_raw, "trickle": _trickle}
    report = asyncio.run(modes[args.mode](args))
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
