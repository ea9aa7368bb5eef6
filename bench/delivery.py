"""``delivery``: track events through ``forward-track`` (real Prefect flow runs, inbox batches as ``serve``
hands them over) against the bulk-create ceiling, and the naive SDK client over the same window.

Throughput is measured over whole steady windows: the backlog is larger than what the window admits, and the
events Klaviyo accepted are counted at the window's end, so start-up and the tail never flatter the figure.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from klaviyo_segment.bench.runner import (
    EVENTS_PER_JOB,
    JOBS_PER_MINUTE,
    NAIVE_PER_MINUTE,
    WINDOW_SECONDS,
    BenchEnv,
    BenchResult,
    Options,
    add_end_to_end,
    bench_env,
    throttled_share,
    track_messages,
)

FLOW_EVENT = "Bench Product Viewed"
INGRESS_EVENT = "Bench Ingress Viewed"
NAIVE_EVENT = "Bench Naive Viewed"
#: Messages per flow run: several bulk jobs per run amortise the run's own overhead.
RUN_MESSAGES = 5_000
#: Flow runs in flight, so one run's start/finish overlaps another's sending.
RUN_CONCURRENCY = 2


@dataclass
class FlowRuns:
    """Totals over every flow run of one benchmark."""

    runs: int = 0
    received: int = 0
    sent: int = 0
    failed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


async def stage(env: BenchEnv, flow: str, messages: list[dict[str, Any]], *, per_run: int = RUN_MESSAGES) -> list[str]:
    """Accept the messages into the inbox in ``per_run`` batches (the receiver's job): the backlog a run finds."""
    from klaviyo_segment.store import Store

    store = await Store.open(env.store_url)
    try:
        batch_ids = []
        for start in range(0, len(messages), per_run):
            accepted = await store.accept(
                messages[start : start + per_run], key=lambda m: m.get("messageId"), route=lambda m: [flow]
            )
            batch_ids.append(accepted.batches[flow])
    finally:
        await store.close()
    return batch_ids


async def run_flows(
    env: BenchEnv,
    flow: str,
    messages: list[dict[str, Any]],
    *,
    per_run: int = RUN_MESSAGES,
    concurrency: int = RUN_CONCURRENCY,
) -> FlowRuns:
    """Accept the messages into the inbox in ``per_run`` batches, then run the flow once per batch."""
    return await run_batches(env, flow, await stage(env, flow, messages, per_run=per_run), concurrency=concurrency)


async def run_batches(
    env: BenchEnv, flow: str, batch_ids: list[str], *, concurrency: int = RUN_CONCURRENCY
) -> FlowRuns:
    """Run the flow once per inbox batch, ``concurrency`` runs at a time."""
    from klaviyo_segment.flows import get_spec

    spec = get_spec(flow)
    totals = FlowRuns()
    gate = asyncio.Semaphore(concurrency)

    async def one(batch_id: str) -> None:
        async with gate:
            from klaviyo_segment.run_state import call_flow

            summary, _state = await call_flow(spec.flow, batch_ids=[batch_id], config={})
        totals.runs += 1
        for key in ("received", "sent", "failed"):
            setattr(totals, key, getattr(totals, key) + int(summary[key]))
        for outcome in summary.get("outcomes", []):
            if outcome.get("status") == "failed":
                reason = str(outcome.get("reason"))[:80]
                totals.reasons[reason] = totals.reasons.get(reason, 0) + 1

    await asyncio.gather(*(one(b) for b in batch_ids))
    return totals


async def windowed(
    env: BenchEnv, seconds: float, work: Callable[[], Awaitable[Any]], count: Callable[[dict[str, Any]], int]
) -> tuple[int, Any, float]:
    """Run ``work``; sample ``count(summary)`` when ``seconds`` have passed (or when work ends, if earlier).
    Returns (count in the window, work's result, seconds the count covers)."""
    started = time.monotonic()
    task = asyncio.create_task(work())
    await asyncio.wait({task}, timeout=seconds)
    in_window = count(await asyncio.to_thread(env.summary))
    window = min(seconds, time.monotonic() - started)
    result = await task
    return in_window, result, window


async def warm_up(env: BenchEnv) -> None:
    """One tiny flow run before the clock starts: Prefect's ephemeral server start-up (~15 s) and first
    imports are a one-off cost of the process, not of delivery."""
    await run_flows(env, "forward-track", track_messages(1, 999, event="Bench Warm-up"))


def jobs_per_minute(scale: float) -> int:
    """The emulator's scaled steady ceiling for bulk jobs (it floors, and never goes below 1)."""
    return max(1, math.floor(JOBS_PER_MINUTE * scale + 1e-9))


def ceiling_events_per_s(scale: float) -> float:
    return EVENTS_PER_JOB * jobs_per_minute(scale) / WINDOW_SECONDS


def run(options: Options) -> BenchResult:
    return asyncio.run(_run(options))


async def through_ingress(env: BenchEnv, seconds: float, count: int, seed: int) -> tuple[int, float, dict[str, Any]]:
    """The same backlog as Segment would deliver it: batched, signed requests from a load generator process to
    ``serve``'s receiver in this process; the dispatcher starts inline forward-track runs as commits land.
    Returns (events Klaviyo holds after the window, window seconds, the generator's report)."""
    from klaviyo_segment.bench.procs import run_client
    from klaviyo_segment.bench.serving import SECRET, drained, ingress

    async with ingress(env.store_url, flows=["forward-track"], document={}) as (running, _):

        async def work() -> dict[str, Any]:
            report = await run_client(
                "deliver",
                "--url",
                f"{running.url}/segment",
                "--secret",
                SECRET,
                "--count",
                str(count),
                "--batch",
                "1000",
                "--concurrency",
                "2",
                "--seed",
                str(seed),
                "--event",
                INGRESS_EVENT,
            )
            await drained(env.store_url, 3600.0)
            return report

        in_window, report, window = await windowed(
            env, seconds, work, lambda s: int(s.get("events_by_metric", {}).get(INGRESS_EVENT, 0))
        )
    return in_window, window, report


async def _run(options: Options) -> BenchResult:
    from klaviyo_segment.bench.naive import run_naive

    result = BenchResult(bench="delivery")
    seconds = options.window_count * options.window_s
    ceiling = ceiling_events_per_s(options.scale)
    count = options.messages or int(ceiling * seconds * 1.05) + EVENTS_PER_JOB
    messages = track_messages(count, options.seed, event=FLOW_EVENT)
    naive_messages = track_messages(
        int(NAIVE_PER_MINUTE * options.scale * options.window_count * 1.5) + 10, options.seed + 1, event=NAIVE_EVENT
    )
    with bench_env(options.scale) as env:
        await warm_up(env)
        # The backlog is in the inbox before the clock starts, as it is when serve's receiver has taken a burst:
        # staging (the receiver's work, measured by the ingress phase and `bench ingress`) is not delivery time.
        staged_at = time.monotonic()
        batch_ids = await stage(env, "forward-track", messages)
        result.add("staging the backlog into the inbox", time.monotonic() - staged_at, "s", note=f"{count:,} messages")
        stop = threading.Event()
        naive = asyncio.create_task(
            asyncio.to_thread(
                run_naive,
                env.sandbox.klaviyo_url,
                env.sandbox.klaviyo_api_key,
                naive_messages,
                seconds=seconds,
                stop=stop,
            )
        )
        started = time.monotonic()
        in_window, runs, window = await windowed(
            env,
            seconds,
            lambda: run_batches(env, "forward-track", batch_ids),
            lambda s: int(s.get("events_by_metric", {}).get(FLOW_EVENT, 0)),
        )
        total_s = time.monotonic() - started
        stop.set()
        naive_stats = await naive
        stats = await asyncio.to_thread(env.stats)
        rate = in_window / window if window > 0 else 0.0
        naive_rate = naive_stats.sent / naive_stats.elapsed_s if naive_stats.elapsed_s > 0 else 0.0
        requests, throttled = throttled_share(stats, "bulk_create_events")
        result.add(f"forward-track events/s over {window:.0f} s", rate, "events/s")
        result.add(
            "forward-track vs bulk ceiling",
            rate / ceiling * 100,
            "% ceiling",
            95.0,
            note=f"ceiling {ceiling:,.0f} events/s at scale={options.scale:g}",
        )
        result.add(
            "naive SDK client events/s (same window)",
            naive_rate,
            "events/s",
            note=f"ceiling {NAIVE_PER_MINUTE * options.scale / 60:,.1f}/s; errors {naive_stats.errors}",
        )
        result.add("forward-track / naive", rate / naive_rate if naive_rate else None, "x", 35.0)
        result.add(
            "bulk requests answered 429",
            throttled / requests * 100 if requests else 0.0,
            "%",
            0.5,
            lower_is_better=True,
            note=f"{throttled} of {requests}",
        )
        result.messages = count + naive_stats.sent + count  # direct, naive, through ingress
        add_end_to_end(result, runs, len(messages), total_s, "messages")  # printed before the ingress phase
        via_ingress, ingress_window, _ = await through_ingress(env, seconds, count, options.seed + 2)
    ingress_rate = via_ingress / ingress_window if ingress_window > 0 else 0.0
    result.add(f"through ingress (serve, inline) events/s over {ingress_window:.0f} s", ingress_rate, "events/s")
    result.add(
        "through ingress vs bulk ceiling",
        ingress_rate / ceiling * 100,
        "% ceiling",
        95.0,
        note="load generator -> receiver -> group commit -> dispatcher -> inline forward-track runs",
    )
    naive_requests, naive_throttled = throttled_share(stats, "create_event")
    result.add(
        "naive requests answered 429",
        naive_throttled / naive_requests * 100 if naive_requests else 0.0,
        "%",
        note=f"{naive_throttled} of {naive_requests}",
    )
    return result
