"""Child processes of a benchmark: the sandbox (``klaviyo-segment sandbox``) and the load generator
(``python -m klaviyo_segment.bench.client``).

Why separate processes: on two cores, an emulator processing 10,000-profile imports or a simulator signing
thousands of requests per second would otherwise share the GIL with what is measured, and the figures would
describe the harness, not the product.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from typing import Any

from klaviyo_segment.errors import ConfigError

START_TIMEOUT_S = 60.0


class SandboxProcess:
    """``klaviyo-segment sandbox --rate-limits MODE`` as a child; attributes mirror the in-process Sandbox."""

    def __init__(self, rate_limits: str = "on", *, example_lists: bool = True) -> None:
        self.rate_limits, self.example_lists = rate_limits, example_lists
        self.proc: subprocess.Popen[str] | None = None
        self.info: dict[str, str] = {}

    @property
    def klaviyo_url(self) -> str:
        return self.info["klaviyo"]

    @property
    def klaviyo_api_key(self) -> str:
        return self.info["klaviyo_api_key"]

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def start(self) -> SandboxProcess:
        args = [
            sys.executable,
            "-m",
            "klaviyo_segment",
            "sandbox",
            "--rate-limits",
            self.rate_limits,
            "--example-lists" if self.example_lists else "--no-example-lists",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        line = _readline(self.proc.stdout, START_TIMEOUT_S)
        if not line.startswith("{"):
            self.stop()
            raise ConfigError(f"sandbox did not start (first line {line[:80]!r})")
        self.info = json.loads(line)
        # keep draining: a full stdout pipe would block the sandbox mid-run
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()  # type: ignore
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> SandboxProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _readline(stream: Any, timeout: float) -> str:
    """First stdout line of a child, bounded: a child that hangs before printing must not hang the bench."""
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return box[0].strip() if box else ""


async def run_client(*args: str, timeout: float = 1800.0) -> dict[str, Any]:
    """Run the load generator in its own process; its last stdout line is a JSON report."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "klaviyo_segment.bench.client",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except (TimeoutError, asyncio.CancelledError):
        proc.kill()
        await proc.wait()
        raise
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = err.decode().strip().splitlines()[-3:]
        raise RuntimeError(f"load generator exited {proc.returncode}: {' | '.join(tail)}")
    return json.loads(lines[-1])  # type: ignore[no-any-return]


async def deliver_from(
    processes: int, url: str, secret: str, count: int, *, batch: int, concurrency: int, seed: int, event: str
) -> dict[str, Any]:
    """The delivery simulator split over ``processes`` load generators (``concurrency`` requests in flight in
    total). Single events (``batch`` 0) use the lean raw generator (bench/rawclient.py): httpx's async pool costs
    ~1 ms of CPU per request at 32 connections, more than the receiver spends on one."""
    from klaviyo_segment.bench.runner import percentile

    shares = [count // processes + (1 if i < count % processes else 0) for i in range(processes)]
    per = max(1, concurrency // processes)
    reports = await asyncio.gather(
        *(
            run_client(
                "deliver" if batch else "deliver-raw",
                "--url",
                url,
                "--secret",
                secret,
                "--count",
                str(n),
                "--batch",
                str(batch),
                "--concurrency",
                str(per),
                "--seed",
                str(seed * 100 + i),
                "--event",
                f"{event} {i}",
            )
            for i, n in enumerate(shares)
            if n
        )
    )
    latencies = [x for r in reports for x in r["latencies"]]
    statuses: dict[str, int] = {}
    for report in reports:
        for status, n in report["statuses"].items():
            statuses[status] = statuses.get(status, 0) + n
    return {
        "acked": sum(r["acked"] for r in reports),
        "elapsed": max(r["elapsed"] for r in reports),
        "requests": len(latencies),
        "ack_p50": percentile(latencies, 50),
        "ack_p99": percentile(latencies, 99),
        "statuses": statuses,
        "given_up": sum(r["given_up"] for r in reports),
    }
