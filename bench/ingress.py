"""``ingress``: the receiver + group commit + dispatcher of ``serve``, fed by the Segment delivery simulator
(signed, batched or single): events/s accepted, ack latency p50/p99, and flow runs per 1,000 events.

The receiver runs in its own thread and event loop, as in ``serve``; the simulator runs in the main loop. The
launcher only leases and completes the batches it is given (no Klaviyo sends), so "flow runs per 1,000
events" measures the dispatcher's coalescing, and the acceptance figures are not capped by the API ceiling.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
from pathlib import Path

from klaviyo_segment.bench.runner import BenchResult, Options, percentile, track_messages

SECRET = "bench-segment-shared-secret"
BATCH = 1000
TARGET_BATCHED_EVENTS_S = 5000.0
TARGET_SINGLE_REQUESTS_S = 1000.0
TARGET_ACK_P99_S = 1.0


class IngressThread:
    """``start_ingress`` in a thread with its own loop; ``runs`` counts launcher calls (would-be flow runs)."""

    def __init__(self, store_url: str) -> None:
        self.store_url = store_url
        self.url = ""
        self.runs = 0
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="bench-ingress", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - surfaced to the benchmark as its error
            self.error = exc
            self._ready.set()

    async def _serve(self) -> None:
        from klaviyo_segment.config import AppConfig
        from klaviyo_segment.ingress.receiver import ReceiverSettings
        from klaviyo_segment.ingress.runner import start_ingress
        from klaviyo_segment.store import Store

        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        store = await Store.open(self.store_url)

        async def launch(flow: str, batch_ids: list[str], key: str) -> str:
            self.runs += 1
            owner = f"bench-{self.runs}"
            for batch in await store.lease(batch_ids, owner, 600.0):
                await store.complete(batch.id, owner)
            return owner

        ingress = await start_ingress(store, AppConfig(), settings=ReceiverSettings(segment_secret=SECRET),
                                      dispatch="inline", launcher=launch)
        self.url = ingress.url
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await ingress.stop()
            await store.close()

    def __enter__(self) -> IngressThread:
        self._thread.start()
        self._ready.wait(60)
        if self.error is not None or not self.url:
            raise RuntimeError(f"ingress did not start: {self.error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


def run(options: Options) -> BenchResult:
    return asyncio.run(_run(options))


async def _run(options: Options) -> BenchResult:
    from klaviyo_segment.sandbox.segment.simulator import deliver

    result = BenchResult(bench="ingress")
    batched_count = options.messages or (20_000 if options.quick else 100_000)
    single_count = min(batched_count, 2_000 if options.quick else 10_000)
    workdir = Path(tempfile.mkdtemp(prefix="klaviyo-segment-bench-ingress-"))
    for label, count, batch, concurrency in (("batched", batched_count, BATCH, 4),
                                             ("single", single_count, 0, 32)):
        messages = track_messages(count, options.seed + (0 if batch else 7), event=f"Bench Ingress {label}")
        with IngressThread(f"sqlite:///{workdir / f'{label}.db'}") as ingress:
            report = await deliver(f"{ingress.url}/segment", messages, SECRET, batch_size=batch,
                                   concurrency=concurrency, max_seconds=600.0, seed=options.seed)
            await asyncio.sleep(0)  # the last commit's dispatch may still be running; runs are read below
            runs = ingress.runs
        acked = len(report.acknowledged)
        requests = -(-count // batch) if batch else count
        elapsed = report.elapsed or 1e-9
        if batch:
            result.add(f"batched ({batch}/request) events/s accepted", acked / elapsed, "events/s",
                       TARGET_BATCHED_EVENTS_S, note=f"{acked:,} of {count:,} in {elapsed:.1f} s")
        else:
            result.add("single-event requests/s accepted", acked / elapsed, "requests/s", TARGET_SINGLE_REQUESTS_S,
                       note=f"{acked:,} of {count:,} in {elapsed:.1f} s")
        result.add(f"{label} ack latency p50", percentile(report.latencies, 50), "s")
        result.add(f"{label} ack latency p99", percentile(report.latencies, 99), "s", TARGET_ACK_P99_S,
                   lower_is_better=True)
        result.add(f"{label} flow runs per 1,000 events", runs / acked * 1000 if acked else None, "runs",
                   note=f"{runs} runs for {requests:,} requests")
        if report.given_up:
            result.error = f"{label}: {len(report.given_up)} messages given up (statuses {report.statuses})"
    return result
