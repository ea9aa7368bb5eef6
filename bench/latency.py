"""``latency``: audience enter -> Klaviyo list membership with ``serve``'s embedded default.

Set-up, each part in its own process so none shares another's GIL: the sandbox (``klaviyo-segment sandbox``,
Klaviyo's real limits unless ``--scale`` says otherwise), ``serve``'s ingress with inline dispatch in this
process (durable group commit -> in-process dispatcher -> inline Prefect flow runs of ``sync-audiences``), and
a load generator that sends signed ``Audience Entered`` changes as a steady trickle and polls
``/__sandbox/lists``. The figure is, per change, the seconds from the delivery's 2xx to the profile appearing
in the list (poll resolution 50 ms).

Why it can beat a default ``serve`` (3-7 s event -> flow start): no deployment polling and no subprocess per
run; a commit wakes the flow's dispatcher at once, and a run in flight collects what arrives meanwhile into
the next run, so the worst case is about two run durations, not a poll interval plus a process start.
"""

from __future__ import annotations

import asyncio

from klaviyo_segment.bench.procs import run_client
from klaviyo_segment.bench.runner import BenchResult, Options, bench_env, percentile
from klaviyo_segment.bench.serving import SECRET, ingress

TARGET_P95_S = 5.0
AUDIENCE = "bench_vip"
LIST_ID = "VIPLST"
#: Changes per second of the trickle (the issue: a realistic 5-20/s).
RATE = 10.0
FLOW = "sync-audiences"


def run(options: Options) -> BenchResult:
    return asyncio.run(_run(options))


async def _run(options: Options) -> BenchResult:
    result = BenchResult(bench="latency")
    count = options.messages or 240
    document = {"audiences": {AUDIENCE: LIST_ID}}
    with bench_env(options.scale) as env:
        async with ingress(env.store_url, flows=[FLOW], document=document) as (running, _):
            common = [
                "--url",
                f"{running.url}/segment",
                "--secret",
                SECRET,
                "--klaviyo",
                env.sandbox.klaviyo_url,
                "--list-id",
                LIST_ID,
                "--audience",
                AUDIENCE,
            ]
            # warm-up: Prefect's ephemeral server start and first imports are per process, not per change
            await run_client("trickle", *common, "--count", "2", "--rate", "5", "--seed", "991")
            stats = running.dispatcher.stats
            runs_before, durations_before = stats.total_runs, len(stats.durations.get(FLOW, []))
            report = await run_client(
                "trickle", *common, "--count", str(count), "--rate", f"{RATE:g}", "--seed", str(options.seed)
            )
            durations = stats.durations.get(FLOW, [])[durations_before:]
            runs = stats.total_runs - runs_before
            outcomes = dict(stats.outcomes.get(FLOW, {}))
    latencies: list[float] = report["latencies"]
    note = f"{report['members']} of {report['acked']} acked changes became members at {RATE:g} changes/s"
    result.add(f"enter -> member p50 ({len(latencies)} changes)", percentile(latencies, 50), "s")
    result.add("enter -> member p95", percentile(latencies, 95), "s", TARGET_P95_S, lower_is_better=True, note=note)
    result.add("enter -> member max", max(latencies) if latencies else None, "s")
    result.add("sync-audiences flow run duration p50", percentile(durations, 50), "s")
    result.add("sync-audiences flow run duration p95", percentile(durations, 95), "s")
    result.add(
        "flow runs per 1,000 changes",
        runs / report["acked"] * 1000 if report["acked"] else None,
        "runs",
        note=f"{runs} runs; outcomes {outcomes}",
    )
    if report["members"] < report["acked"]:
        result.error = f"only {report['members']} of {report['acked']} changes reached the list"
    return result
