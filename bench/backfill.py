"""Benchmark ``backfill``: N generated rows through the CLI against a sandbox with rate limits on.

Measures wall time against the rate-limit floor (10,000 profiles/job, 150 jobs/min times the sandbox's scale;
target <= 1.5x) and the peak RSS of the backfill process (target <= 500 MB). The sandbox runs in its own
process so its memory and CPU are not charged to the backfill.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import polars as pl
import psutil

from klaviyo_segment import constants

JOBS_PER_MINUTE = 150


def generate(path: Path, rows: int) -> None:
    """A realistic export: ids, emails, a third with phones, names, a city and two plain traits."""
    i = pl.col("i")
    frame = pl.select(pl.int_range(0, rows).alias("i")).select(
        ("u" + i.cast(pl.String)).alias("userId"),
        ("User" + i.cast(pl.String) + "@Example.com").alias("email"),
        pl.when(i % 3 == 0).then("+1415555" + (i % 10_000).cast(pl.String).str.zfill(4)).alias("phone"),
        pl.lit("Ann").alias("firstName"),
        pl.when(i % 2 == 0).then(pl.lit("Oslo")).otherwise(pl.lit("Lund")).alias("address.city"),
        pl.when(i % 2 == 0).then(pl.lit("free")).otherwise(pl.lit("pro")).alias("plan"),
        (i % 100).alias("score"),
    )
    frame.write_csv(path)


def _sandbox(scale: float) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "klaviyo_segment", "sandbox", "--rate-limits", f"scale={scale}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    info = json.loads(proc.stdout.readline())
    # keep draining: a full stdout pipe would block the sandbox mid-run
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    return proc, info


def _watch(proc: subprocess.Popen[str]) -> int:
    """Peak RSS of the backfill process, sampled until it exits."""
    peak = 0
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.05)
    return peak


def run(rows: int = 1_000_000, scale: float = 1.0) -> dict[str, Any]:
    """Generate ``rows``, backfill them, print and return the figures."""
    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmp:
        path = Path(tmp) / "export.csv"
        t0 = time.monotonic()
        generate(path, rows)
        gen_seconds = time.monotonic() - t0
        box, info = _sandbox(scale)
        try:
            env = dict(
                os.environ,
                KLAVIYO_API_KEY=info["klaviyo_api_key"],
                KLAVIYO_BASE_URL=info["klaviyo"],
                KLAVIYO_SEGMENT_STORE_URL=f"sqlite:///{Path(tmp) / 'state.db'}",
            )
            start = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-m", "klaviyo_segment", "backfill", "--input", str(path)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            peak = _watch(proc)
            wall = time.monotonic() - start
            out = proc.stdout.read() if proc.stdout else ""
        finally:
            box.terminate()
            try:
                box.wait(10)
            except subprocess.TimeoutExpired:  # a sandbox busy with a large import may not stop in time
                box.kill()
                box.wait(10)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    summary = json.loads(lines[-1]) if lines else {}
    jobs = math.ceil(rows / constants.BULK_PROFILE_IMPORT_MAX)
    floor = jobs / (JOBS_PER_MINUTE * scale) * 60
    result = {
        "rows": rows,
        "scale": scale,
        "jobs": jobs,
        "wall_seconds": round(wall, 2),
        "floor_seconds": round(floor, 2),
        "ratio": round(wall / floor, 2) if floor else None,
        "peak_rss_mb": round(peak / 2**20, 1),
        "generate_seconds": round(gen_seconds, 2),
        "exit_code": proc.returncode,
        "sent": summary.get("sent"),
        "timings": summary.get("timings"),
        "targets": {"ratio": 1.5, "peak_rss_mb": 500},
    }
    print(
        f"backfill bench: {rows:,} rows, {jobs} jobs, wall {wall:.1f}s vs floor {floor:.1f}s "
        f"(ratio {result['ratio']}), peak RSS {result['peak_rss_mb']} MB, sent {summary.get('sent')}, "
        f"timings {summary.get('timings')}"
    )
    return result


if __name__ == "__main__":  # pragma: no cover
    run(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000, float(sys.argv[2]) if len(sys.argv) > 2 else 1.0)
