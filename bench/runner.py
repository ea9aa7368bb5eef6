"""The common harness of every benchmark: a rate-limited sandbox per run, figures with targets and ratios, peak
RSS of every process involved, and one table (or JSON document) at the end.

Benchmarks print; they never assert timings. A figure that misses its target is reported as such, with the
ratio, so a regression is visible without a flaky test.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

#: Bulk create events: 1,000 events per job, 150 jobs per minute at scale 1.
EVENTS_PER_JOB = 1000
#: Bulk profile import: 10,000 profiles per job, 150 jobs per minute at scale 1.
PROFILES_PER_JOB = 10_000
JOBS_PER_MINUTE = 150
#: Create Event (the naive client): 3,500 requests per minute at scale 1.
NAIVE_PER_MINUTE = 3500
WINDOW_SECONDS = 60.0


@dataclass
class Options:
    """What the CLI passes to every benchmark; ``messages`` None means the benchmark's own default."""

    scale: float = 0.1
    messages: int | None = None
    quick: bool = False
    windows: int = 3
    seed: int = 0
    #: Length of a measured window; only smoke tests shorten it (the ratios then say little).
    window_s: float = WINDOW_SECONDS

    @property
    def window_count(self) -> int:
        """--quick spans one steady window; a full run at least three (the issue's requirement)."""
        return 1 if self.quick else max(1, self.windows)


@dataclass
class Figure:
    """One measured number; ``target`` is a floor unless ``lower_is_better`` (then a ceiling)."""

    name: str
    value: float | None
    unit: str
    target: float | None = None
    lower_is_better: bool = False
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """value/target for floors, target/value for ceilings: >= 1.0 always means the target is met."""
        if self.value is None or not self.target:
            return None
        if self.lower_is_better:
            return self.target / self.value if self.value > 0 else float("inf")
        return self.value / self.target

    @property
    def met(self) -> bool | None:
        ratio = self.ratio
        return None if ratio is None else ratio >= 1.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "met": self.met}


@dataclass
class BenchResult:
    """A benchmark's figures, the peak RSS of each process, and an error if it could not run."""

    bench: str
    figures: list[Figure] = field(default_factory=list)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    elapsed_s: float = 0.0
    #: Messages the benchmark pushed through (all its phases): the denominator of the CPU-per-1,000 figures.
    messages: int = 0
    #: CPU seconds each process spent during the benchmark (label [pid] -> seconds).
    cpu_s: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _STARTED.append(self)  # run_one keeps these figures even if the benchmark fails later

    def add(
        self,
        name: str,
        value: float | None,
        unit: str,
        target: float | None = None,
        *,
        lower_is_better: bool = False,
        note: str = "",
    ) -> Figure:
        figure = Figure(name, value, unit, target, lower_is_better, note)
        self.figures.append(figure)
        if LIVE is not None:  # printed as soon as measured: a failure late in a run must not lose it
            LIVE(self.bench, figure)
        return figure

    def as_dict(self) -> dict[str, Any]:
        return {
            "bench": self.bench,
            "figures": [f.as_dict() for f in self.figures],
            "peak_rss_mb": self.peak_rss_mb,
            "cpu_s": self.cpu_s,
            "messages": self.messages,
            "cpu_s_per_1000_messages": self.cpu_per_1000(),
            "notes": self.notes,
            "error": self.error,
            "elapsed_s": round(self.elapsed_s, 2),
        }

    def cpu_per_1000(self) -> dict[str, float]:
        """CPU seconds per 1,000 messages of every process: which one limits the run."""
        if not self.messages:
            return {}
        return {label: round(cpu / self.messages * 1000, 4) for label, cpu in self.cpu_s.items()}


#: Called with (bench, figure) whenever a figure is measured (the CLI prints it at once on stderr).
LIVE: Callable[[str, Figure], None] | None = None
#: Results created since run_one started (so figures measured before a failure are kept).
_STARTED: list[BenchResult] = []


class RssMonitor:
    """Samples the RSS of this process and all its children (Prefect's ephemeral server, workers) in a thread,
    keeping each process's peak: the figure a capacity plan needs, not an end-of-run snapshot."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peaks: dict[int, tuple[str, int]] = {}
        #: pid -> (label, CPU seconds at the first sample, at the latest sample)
        self.cpu: dict[int, tuple[str, float, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-monitor", daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        for proc in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                rss = proc.memory_info().rss
                label = "bench (this process)" if proc.pid == me.pid else _label(proc)
                times = proc.cpu_times()
                used = times.user + times.system
                first = self.cpu.get(proc.pid, (label, used, used))[1]
                self.cpu[proc.pid] = (label, first, used)
                if rss > self.peaks.get(proc.pid, ("", 0))[1]:
                    self.peaks[proc.pid] = (label, rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> RssMonitor:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def report(self) -> dict[str, float]:
        return {f"{label} [{pid}]": round(rss / 2**20, 1) for pid, (label, rss) in sorted(self.peaks.items())}

    def cpu_report(self) -> dict[str, float]:
        """CPU seconds per process while monitored (a child that started later counts from its first sample)."""
        return {f"{label} [{pid}]": round(last - first, 2) for pid, (label, first, last) in sorted(self.cpu.items())}


def _label(proc: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        cmd = proc.cmdline()
        text = " ".join(cmd[1:])
        for needle, label in (
            ("bench.client", "load generator"),
            ("klaviyo_segment sandbox", "sandbox"),
            ("klaviyo_segment backfill", "backfill"),
            ("prefect", "prefect server"),
        ):
            if needle in text:
                return label
        return Path(cmd[0]).name if cmd else proc.name()
    return "child"


@dataclass
class BenchEnv:
    """A running sandbox plus the environment a flow run reads its credentials and store from."""

    sandbox: Any
    store_url: str
    workdir: Path
    scale: float

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.sandbox.klaviyo_url, timeout=30)

    def summary(self) -> dict[str, Any]:
        """What the emulator holds (events by metric, profiles, lists)."""
        with self.http() as client:
            return client.get("/__sandbox").json()  # type: ignore[no-any-return]

    def stats(self) -> dict[str, Any]:
        """Requests and statuses per operation, as the emulator counted them."""
        with self.http() as client:
            return client.get("/__sandbox/stats").json()  # type: ignore[no-any-return]


@contextlib.contextmanager
def bench_env(scale: float, *, rate_limits: bool = True) -> Iterator[BenchEnv]:
    """Sandbox at ``scale=F`` in its own process (``klaviyo-segment sandbox``: its import jobs and JSON work
    must not share this process's GIL), env vars pointing flows at it, a fresh SQLite store, and the
    process-wide pacer told the same scale (the client cannot guess that the emulator's limits are scaled)."""
    from klaviyo_segment.bench.procs import SandboxProcess
    from klaviyo_segment.clients import pacers, pacing

    mode = f"scale={scale:g}" if rate_limits else "off"
    workdir = Path(tempfile.mkdtemp(prefix="klaviyo-segment-bench-"))
    store_url = f"sqlite:///{workdir / 'state.db'}"
    saved = {k: os.environ.get(k) for k in ("KLAVIYO_API_KEY", "KLAVIYO_BASE_URL", "KLAVIYO_SEGMENT_STORE_URL")}
    with SandboxProcess(mode) as box:
        os.environ.update(
            KLAVIYO_API_KEY=box.klaviyo_api_key, KLAVIYO_BASE_URL=box.klaviyo_url, KLAVIYO_SEGMENT_STORE_URL=store_url
        )
        account = _account_key(box.klaviyo_api_key, box.klaviyo_url)
        with pacers._shared_lock:
            pacers._shared[account] = pacing.InProcessPacer(scale=scale if rate_limits else 1000.0)
        try:
            yield BenchEnv(sandbox=box, store_url=store_url, workdir=workdir, scale=scale)
        finally:
            with pacers._shared_lock:
                pacers._shared.pop(account, None)
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _account_key(api_key: str, base_url: str) -> str:
    """The key the client's shared pacer is registered under (same derivation as the credentials block)."""
    from klaviyo_segment.blocks.klaviyo import KlaviyoCredentials

    return str(KlaviyoCredentials(api_key=api_key, base_url=base_url).account_key)


def throttled_share(stats: dict[str, Any], operation: str) -> tuple[int, int]:
    """(requests, of which answered 429) for one operation."""
    by_op = stats.get("status_codes_by_operation", {}).get(operation, {})
    return sum(by_op.values()), int(by_op.get("429", 0))


def add_end_to_end(result: BenchResult, runs: Any, count: int, total_s: float, what: str) -> None:
    """The end-to-end figure every flow benchmark ends with; a message not sent makes the benchmark an error."""
    result.add(
        f"end to end: {runs.sent:,} of {count:,} {what} sent",
        runs.sent / total_s if total_s else None,
        "msgs/s",
        note=f"{runs.runs} flow runs, {total_s:.0f} s",
    )
    if runs.failed:
        result.notes.append(f"{runs.failed} messages failed: {runs.reasons}")
    if runs.sent < count:
        result.error = f"only {runs.sent} of {count} {what} were sent"


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no samples (a figure then shows as missing, not as zero)."""
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[index]


Bench = Callable[[Options], BenchResult]


def run_one(name: str, bench: Bench, options: Options) -> BenchResult:
    """Run a benchmark under the RSS monitor; a crash becomes an error row (exit 1), never a traceback dump."""
    started = time.perf_counter()
    _STARTED.clear()
    with RssMonitor() as monitor:
        try:
            result = bench(options)
        except Exception as exc:  # noqa: BLE001 - a benchmark that cannot run is reported, the others still run
            partial = [r for r in _STARTED if r.bench == name]
            result = partial[-1] if partial else BenchResult(bench=name)
            result.error = f"{type(exc).__name__}: {exc}"  # the figures measured before the failure stay
    result.peak_rss_mb = monitor.report()
    result.cpu_s = monitor.cpu_report()
    result.elapsed_s = time.perf_counter() - started
    return result


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == float("inf"):
        return "inf"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"


def render(results: list[BenchResult], *, as_json: bool, options: Options) -> str:
    """The figures table on stderr-friendly text, or one JSON document (the last stdout line)."""
    if as_json:
        return json.dumps({"options": asdict(options), "machine": machine(), "results": [r.as_dict() for r in results]})
    lines: list[str] = []
    header = f"{'bench':<10} {'figure':<44} {'value':>12} {'unit':<12} {'target':>10} {'ratio':>7}  met"
    for result in results:
        lines.append(header)
        lines.append("-" * len(header))
        if result.error:
            lines.append(f"{result.bench:<10} ERROR: {result.error}")
        for f in result.figures:
            ratio = "-" if f.ratio is None else f"{f.ratio:.2f}"
            met = {True: "yes", False: "NO", None: ""}[f.met]
            target = "-" if f.target is None else ("<=" if f.lower_is_better else ">=") + _fmt(f.target)
            lines.append(
                f"{result.bench:<10} {f.name:<44} {_fmt(f.value):>12} {f.unit:<12} {target:>10} {ratio:>7}  {met}"
            )
        for label, mb in result.peak_rss_mb.items():
            lines.append(f"{result.bench:<10} peak RSS {label:<35} {mb:>12,.1f} MB")
        per_1000 = result.cpu_per_1000()
        for label, cpu in result.cpu_s.items():
            share = f" = {per_1000[label]:.3f} s per 1,000 messages" if label in per_1000 else ""
            lines.append(f"{result.bench:<10} CPU {label:<40} {cpu:>9,.1f} s{share}")
        for note in result.notes:
            lines.append(f"{result.bench:<10} note: {note}")
        lines.append(f"{result.bench:<10} elapsed {result.elapsed_s:.1f} s")
        lines.append("")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    import platform

    return {
        "cpus": psutil.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "processor": platform.processor() or platform.machine(),
    }


def track_messages(
    count: int, seed: int = 0, *, event: str = "Bench Product Viewed", users: int = 1000
) -> list[dict[str, Any]]:
    """Realistic track calls (the sandbox generator's shape) over a pool of users, each with a unique
    messageId: one flow message = one Klaviyo event, so events/s and messages/s are the same figure.
    Shallow copies of pooled messages keep 1M-message runs from spending minutes in the generator."""
    from klaviyo_segment.devkit.sandbox.segment.generators import SegmentGenerator

    gen = SegmentGenerator(seed)
    pool = [
        gen.track(gen.user(), event, {"sku": f"SKU-{i % 97}", "price": 9.5 + i % 40, "category": "bench"})
        for i in range(min(users, max(1, count)))
    ]
    return [{**pool[i % len(pool)], "messageId": f"bench-{seed}-t{i}"} for i in range(count)]


def identify_messages(count: int, seed: int = 0, *, users: int = 500) -> list[dict[str, Any]]:
    """Identify calls with reserved traits and local phone numbers, one distinct user (and email) each, so
    every message is a profile upsert of its own."""
    from klaviyo_segment.devkit.sandbox.segment.generators import SegmentGenerator

    gen = SegmentGenerator(seed)
    pool = [gen.identify(gen.user()) for _ in range(min(users, max(1, count)))]
    out: list[dict[str, Any]] = []
    for i in range(count):
        base = pool[i % len(pool)]
        traits = {**base["traits"], "email": f"bench{seed}.{i}@example.com"}
        out.append({**base, "messageId": f"bench-{seed}-i{i}", "userId": f"bench-user-{seed}-{i}", "traits": traits})
    return out
