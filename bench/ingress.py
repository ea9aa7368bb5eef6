"""``ingress``: the receiver + group commit + dispatcher of ``serve`` in this process, fed by the Segment delivery
simulator (signed, batched or single) from its OWN process(es): events/s accepted, ack latency p50/p99, and flow
runs per 1,000 events.

The launcher only leases and completes the batches it is given (no Klaviyo sends), so "flow runs per 1,000
events" measures the dispatcher's coalescing, and the acceptance figures are not capped by the API ceiling.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from klaviyo_segment.bench.procs import deliver_from
from klaviyo_segment.bench.runner import BenchResult, Options
from klaviyo_segment.bench.serving import SECRET, drained, ingress

BATCH = 1000
TARGET_BATCHED_EVENTS_S = 5000.0
TARGET_SINGLE_REQUESTS_S = 1000.0
TARGET_ACK_P99_S = 1.0
FLOW = "forward-track"


def run(options: Options) -> BenchResult:
    return asyncio.run(_run(options))


async def _run(options: Options) -> BenchResult:
    result = BenchResult(bench="ingress")
    batched_count = options.messages or (20_000 if options.quick else 100_000)
    single_count = min(batched_count, 2_000 if options.quick else 20_000)
    workdir = Path(tempfile.mkdtemp(prefix="klaviyo-segment-bench-ingress-"))
    for label, count, batch, concurrency, processes in (
        ("batched", batched_count, BATCH, 4, 1),
        # 128 connections in flight, as a busy source's deliveries are: each request waits for its group commit
        # (~70 ms), so 32 connections capped the figure at ~460 requests/s with the receiver mostly idle.
        ("single", single_count, 0, 128, 2),
    ):
        store_url = f"sqlite:///{workdir / f'{label}.db'}"
        async with ingress(store_url, flows=[FLOW], counting=True) as (running, counter):
            report = await deliver_from(
                processes,
                f"{running.url}/segment",
                SECRET,
                count,
                batch=batch,
                concurrency=concurrency,
                seed=options.seed + (0 if batch else 7),
                event=f"Bench Ingress {label}",
            )
            complete = await drained(store_url, 60.0)
            runs = counter.runs if counter else 0
            commits = running.committer.stats.commits
        acked, elapsed = report["acked"], report["elapsed"] or 1e-9
        requests = report["requests"]
        if batch:
            result.add(
                f"batched ({batch}/request) events/s accepted",
                acked / elapsed,
                "events/s",
                TARGET_BATCHED_EVENTS_S,
                note=f"{acked:,} of {count:,} in {elapsed:.1f} s",
            )
        else:
            result.add(
                "single-event requests/s accepted",
                requests / elapsed,
                "requests/s",
                TARGET_SINGLE_REQUESTS_S,
                note=f"{acked:,} of {count:,} in {elapsed:.1f} s",
            )
        result.add(f"{label} ack latency p50", report["ack_p50"], "s")
        result.add(f"{label} ack latency p99", report["ack_p99"], "s", TARGET_ACK_P99_S, lower_is_better=True)
        result.add(
            f"{label} flow runs per 1,000 events",
            runs / acked * 1000 if acked else None,
            "runs",
            note=f"{runs} runs, {commits} commits, {requests:,} requests",
        )
        if report["given_up"] or not complete:
            result.error = (
                f"{label}: {report['given_up']} messages given up (statuses {report['statuses']})"
                if report["given_up"]
                else f"{label}: backlog not drained"
            )
    return result
