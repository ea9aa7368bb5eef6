"""``profiles``: identifies through ``sync-identify`` (bulk profile import jobs of 10,000) against the bulk
import ceiling, counted as profiles the emulator holds at the end of whole steady windows.

The default is Klaviyo's real limits (scale 1: 25,000 profiles/s ceiling), as for delivery; on a small machine
the figure then shows which process saturates (the CPU seconds per 1,000 messages of every process). The ratio
is always to the ceiling at the scale used.
"""

from __future__ import annotations

import asyncio
import time

from klaviyo_segment.bench.delivery import jobs_per_minute, run_flows, warm_up, windowed
from klaviyo_segment.bench.runner import (
    PROFILES_PER_JOB,
    WINDOW_SECONDS,
    BenchResult,
    Options,
    add_end_to_end,
    bench_env,
    identify_messages,
    throttled_share,
)

#: Scale used unless the CLI passes --scale explicitly: Klaviyo's published limits.
DEFAULT_SCALE = 1.0


def ceiling_profiles_per_s(scale: float) -> float:
    return PROFILES_PER_JOB * jobs_per_minute(scale) / WINDOW_SECONDS


def run(options: Options) -> BenchResult:
    return asyncio.run(_run(options))


async def _run(options: Options) -> BenchResult:
    result = BenchResult(bench="profiles")
    seconds = options.window_count * options.window_s
    ceiling = ceiling_profiles_per_s(options.scale)
    count = options.messages or int(ceiling * seconds * 1.05) + PROFILES_PER_JOB
    messages = identify_messages(count, options.seed)
    with bench_env(options.scale) as env:
        await warm_up(env)
        baseline = int((await asyncio.to_thread(env.summary)).get("profiles", 0))
        started = time.monotonic()
        in_window, runs, window = await windowed(
            env,
            seconds,
            lambda: run_flows(env, "sync-identify", messages, per_run=PROFILES_PER_JOB),
            lambda s: int(s.get("profiles", 0)) - baseline,
        )
        total_s = time.monotonic() - started
        stats = await asyncio.to_thread(env.stats)
    result.messages = len(messages)
    rate = in_window / window if window > 0 else 0.0
    requests, throttled = throttled_share(stats, "bulk_import_profiles")
    result.add(f"sync-identify profiles/s over {window:.0f} s", rate, "profiles/s")
    result.add(
        "sync-identify vs bulk import ceiling",
        rate / ceiling * 100,
        "% ceiling",
        95.0,
        note=f"ceiling {ceiling:,.0f} profiles/s at scale={options.scale:g}",
    )
    result.add(
        "import job requests answered 429",
        throttled / requests * 100 if requests else 0.0,
        "%",
        0.5,
        lower_is_better=True,
        note=f"{throttled} of {requests}",
    )
    add_end_to_end(result, runs, len(messages), total_s, "identifies")
    return result
