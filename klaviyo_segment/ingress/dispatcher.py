"""Turns committed inbox batches into flow runs, coalescing so flow runs stay few however many deliveries arrive.

One drain loop per flow: woken by a commit (or the sweeper), it takes every dispatchable batch of that flow (capped
at ``max_batches`` / ``max_messages``) into ONE run. Two launchers:

* ``inline`` — the serve process runs the flow itself (``await FLOW(batch_ids=...)``, a real Prefect flow run):
  no worker poll interval between delivery and flow start, which is what makes the embedded default fast.
* ``deployments`` — ``run_deployment(..., timeout=0)`` with an idempotency key derived from the batch ids and
  their previous dispatch, so a retried dispatch never creates a second run, but a re-dispatch of a dead run does.
  In-flight runs are bounded; while they are busy, batches pile up and the next run takes them all.

Coalescing without a latency cost: a commit wakes an idle flow's loop at once (no poll interval), while a run in
flight collects everything committed meanwhile into the next run. ``min_interval`` spaces the starts of two runs of
one flow, so a stream of single-event deliveries (one small batch per commit window) still becomes a few runs per
second instead of one per commit; an idle flow's first run never waits for it.

The sweeper wakes every loop periodically: batches whose dispatch failed, whose run died before leasing them
(``redispatch_after``) or whose lease expired (a worker killed mid-run) are dispatched again.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("klaviyo_segment.ingress.dispatcher")

#: (flow, batch_ids, idempotency_key) -> run id once the run was created; inline: the run's summary dict.
Launcher = Callable[[str, list[str], str], Awaitable[Any]]
MODES = ("inline", "deployments")


@dataclass
class DispatchStats:
    runs: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    messages: int = 0
    failures: int = 0
    #: inline mode: per flow, the run summaries' sent/skipped/failed/received added up
    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)
    #: inline mode: per flow, seconds from commit to run end, one entry per message
    latencies: dict[str, list[float]] = field(default_factory=dict)
    #: inline mode: per flow, wall-clock seconds of each run
    durations: dict[str, list[float]] = field(default_factory=dict)

    def record(self, flow: str, summary: Any) -> None:
        if isinstance(summary, dict):
            totals = self.outcomes.setdefault(flow, {})
            for key in ("received", "sent", "skipped", "failed"):
                totals[key] = totals.get(key, 0) + int(summary.get(key) or 0)

    @property
    def total_runs(self) -> int:
        return sum(self.runs.values())


def idempotency_key(flow: str, batches: Sequence[Any]) -> str:
    """Same batches + same previous dispatch -> same key (a retry is deduplicated by Prefect)."""
    parts = sorted(f"{b.id}:{b.dispatched_run_id or ''}:{b.attempts}" for b in batches)
    return f"{flow}:" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def inline_launcher(config: dict[str, Any] | None = None) -> Launcher:
    """Run the flow in this process as a Prefect flow run; ``config`` is the mapping document (no secrets)."""

    async def launch(flow: str, batch_ids: list[str], _key: str) -> Any:
        from klaviyo_segment.flows import get_spec
        from klaviyo_segment.run_state import call_flow

        # A run that ends Failed because messages failed finished its batches (dead letters recorded): it is not a
        # crashed dispatch, so it must not raise into the retry path. Only a crash raises (call_flow re-raises it).
        summary, _state = await call_flow(get_spec(flow).flow, batch_ids=batch_ids, config=config)
        return summary

    return launch


def deployment_launcher(targets: dict[str, str] | None = None) -> Launcher:
    """Start a run of an existing deployment (``targets[flow]``, default ``"<flow>/<flow>"``, the one
    ``prefect deploy`` creates) with ``batch_ids`` only; the deployment itself is never created or changed here."""

    async def launch(flow: str, batch_ids: list[str], key: str) -> str:
        from prefect.deployments import run_deployment

        name = (targets or {}).get(flow, f"{flow}/{flow}")
        run = await run_deployment(
            name=name,
            parameters={"batch_ids": batch_ids},  # type: ignore[misc]
            idempotency_key=key,
            timeout=0,
        )
        return str(run.id)

    return launch


def _overlapping_runs(flow: str) -> int:
    """How many inline runs of ``flow`` may overlap (its FlowSpec); 1 for names the registry does not know."""
    from klaviyo_segment.errors import ConfigError
    from klaviyo_segment.flows import get_spec

    try:
        return get_spec(flow).overlapping_runs
    except ConfigError:
        return 1


class Dispatcher:
    def __init__(
        self,
        store: Any,
        launcher: Launcher,
        *,
        mode: str = "inline",
        flows: Sequence[str] | None = None,
        max_batches: int = 200,
        max_messages: int = 5000,
        max_in_flight: int = 4,
        sweep_interval: float = 5.0,
        redispatch_after: float = 120.0,
        min_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``clock``/``sleep`` drive ``min_interval`` pacing only; tests inject a virtual clock so pacing is
        checked exactly instead of against a busy machine's wall clock."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.store, self.launcher, self.mode = store, launcher, mode
        if flows is None:
            from klaviyo_segment.flows import names

            flows = names()
        self.flows = list(flows)
        self.max_batches, self.max_messages = max_batches, max_messages
        self.sweep_interval, self.redispatch_after = sweep_interval, redispatch_after
        self.min_interval = min_interval
        self._clock, self._sleep = clock, sleep
        self._last_start: dict[str, float] = {}
        self.stats = DispatchStats()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._wake = {f: asyncio.Event() for f in self.flows}
        self._in_flight: dict[str, list[str]] = {}  # deployments mode: run id -> its batch ids
        self._tasks: list[asyncio.Task[None]] = []
        #: inline mode: run slots of the flows whose runs may overlap (FlowSpec.overlapping_runs > 1), and the runs
        self._overlap_slots = {f: asyncio.Semaphore(n) for f in self.flows if (n := _overlapping_runs(f)) > 1}
        self._runs: set[asyncio.Task[None]] = set()
        #: flows whose first drain after start also takes batches a previous process dispatched but never ran
        self._recovering = set(self.flows)

    def notify(self, batches: dict[str, str]) -> None:
        """Committer callback: these flows have new batches."""
        for flow in batches:
            if flow in self._wake:
                self._wake[flow].set()

    def wake_all(self) -> None:
        for event in self._wake.values():
            event.set()

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop(f), name=f"dispatch-{f}") for f in self.flows]
        self._tasks.append(asyncio.create_task(self._sweep(), name="dispatch-sweeper"))
        self.wake_all()  # batches left over from the previous process

    async def stop(self) -> None:
        tasks = self._tasks + list(self._runs)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = []
        self._runs.clear()

    async def wait_runs(self) -> None:
        """Until the inline runs started so far (overlapping flows run them beside the loop) have ended."""
        while self._runs:
            await asyncio.gather(*list(self._runs), return_exceptions=True)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            self.wake_all()

    async def _loop(self, flow: str) -> None:
        while True:
            await self._wake[flow].wait()
            self._wake[flow].clear()
            try:
                while await self.dispatch_once(flow):
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - never let the loop die; the sweeper retries
                self.stats.failures += 1
                log.exception("dispatch of %s failed; will retry on the next sweep", flow)

    def _take(self, candidates: Sequence[Any]) -> list[Any]:
        chosen: list[Any] = []
        size = 0
        for info in candidates:
            if chosen and (len(chosen) >= self.max_batches or size + info.size > self.max_messages):
                break
            chosen.append(info)
            size += info.size
        return chosen

    async def _wait_for_capacity(self) -> None:
        """Deployments mode: runs already created whose batches are all finished free their slot."""
        for run_id, ids in list(self._in_flight.items()):
            infos = await self.store.get_batches(ids)
            if all(i.status in ("done", "partial") for i in infos):
                del self._in_flight[run_id]
                self._slots.release()

    async def _candidates(self, flow: str) -> list[Any]:
        """At start-up, batches marked dispatched by a dead process count at once (a second run of a batch is
        harmless: only one run can lease it); afterwards only once ``redispatch_after`` passed."""
        after = 0.0 if flow in self._recovering else self.redispatch_after
        self._recovering.discard(flow)
        return await self.store.pending_batches(flow=flow, redispatch_after_seconds=after)

    async def _pace(self, flow: str) -> None:
        """Hold the next run of ``flow`` until ``min_interval`` after the previous start: what commits meanwhile
        joins it. Costs nothing when the flow was idle that long (the usual case for a trickle)."""
        wait = self._last_start.get(flow, float("-inf")) + self.min_interval - self._clock()
        if wait > 0:
            await self._sleep(wait)

    def _run_ended(self, slots: asyncio.Semaphore, task: asyncio.Task[None]) -> None:
        self._runs.discard(task)
        slots.release()

    async def _run_inline(self, flow: str, chosen: list[Any], key: str) -> None:
        """One inline run; a crash leaves the batches in the store for the sweeper (never raised into the loop)."""
        ids = [b.id for b in chosen]
        async with self._slots:
            began = time.monotonic()
            try:
                summary = await self.launcher(flow, ids, key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the batches stay in the store; the sweeper retries
                self.stats.failures += 1
                log.warning("inline run of %s over %d batches failed: %s", flow, len(ids), type(exc).__name__)
                return
        self.stats.record(flow, summary)
        self.stats.durations.setdefault(flow, []).append(round(time.monotonic() - began, 3))
        ended = time.time()
        self.stats.latencies.setdefault(flow, []).extend(
            ended - b.created_at.timestamp() for b in chosen for _ in range(b.size)
        )

    async def dispatch_once(self, flow: str) -> bool:
        """Dispatch one coalesced run of ``flow``; False when nothing was waiting. For a flow whose runs may
        overlap (inline), a free run slot is awaited first, so the run takes everything committed meanwhile."""
        slots = self._overlap_slots.get(flow) if self.mode == "inline" else None
        if slots is None:
            return await self._dispatch(flow, None)
        await slots.acquire()
        try:
            started = await self._dispatch(flow, slots)
        except BaseException:
            slots.release()
            raise
        if not started:
            slots.release()
        return started

    async def _dispatch(self, flow: str, slots: asyncio.Semaphore | None) -> bool:
        candidates = await self._candidates(flow)
        if candidates and self.min_interval > 0 and flow in self._last_start:
            await self._pace(flow)
            candidates = await self._candidates(flow)  # take what arrived during the pause as well
        chosen = self._take(candidates)
        if not chosen:
            return False
        if self.mode == "deployments":
            while self._slots.locked():
                await self._wait_for_capacity()
                if self._slots.locked():
                    await asyncio.sleep(0.5)
            chosen = self._take(await self._candidates(flow))  # coalesce what arrived while waiting
            if not chosen:
                return False
        ids = [b.id for b in chosen]
        key = idempotency_key(flow, chosen)
        self._last_start[flow] = self._clock()
        self.stats.runs[flow] = self.stats.runs.get(flow, 0) + 1
        self.stats.batches += len(ids)
        self.stats.messages += sum(b.size for b in chosen)
        if self.mode == "inline":
            await self.store.mark_dispatched(ids, f"inline-{uuid.uuid4().hex[:12]}")
            if slots is None:  # one run at a time: it runs in this loop
                await self._run_inline(flow, chosen, key)
                return True
            task = asyncio.create_task(self._run_inline(flow, chosen, key), name=f"run-{flow}")
            self._runs.add(task)
            task.add_done_callback(functools.partial(self._run_ended, slots))
            return True
        await self._slots.acquire()
        try:
            run_id = await self.launcher(flow, ids, key)
        except BaseException:
            self._slots.release()
            raise
        self._in_flight[run_id] = ids
        await self.store.mark_dispatched(ids, run_id)
        return True
