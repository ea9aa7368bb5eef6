"""Durability: `serve` (receiver + inline flow runs) is SIGKILLed mid-stream and restarted; with Segment-style
retries every message reaches Klaviyo exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from klaviyo_segment.devkit.demo import sandbox_env
from klaviyo_segment.devkit.sandbox.segment.simulator import deliver
from klaviyo_segment.ingress.serve import free_port
from klaviyo_segment.store import Store

SERVE = "from klaviyo_segment.cli.app import main; main()"
METRIC = "Durability Ping"

pytestmark = pytest.mark.slow  # each test SIGKILLs and restarts real processes: minutes on a busy box


def _messages(start: int, n: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC).isoformat()
    return [
        {
            "type": "track",
            "event": METRIC,
            "messageId": f"dur-{i}",
            "userId": f"dur-user-{i % 7}",
            "context": {"traits": {"email": f"dur{i % 7}@example.com"}},
            "properties": {"n": i},
            "timestamp": now,
        }
        for i in range(start, start + n)
    ]


def _start(port: int, env: dict[str, str], config: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    log = open(config.parent / f"serve-{port}-{time.monotonic_ns()}.log", "w")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, "serve", "--port", str(port), "--config", str(config), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    log.close()
    line = proc.stdout.readline()  # type: ignore[union-attr]  # the one JSON line printed when ready
    assert line, f"serve exited with {proc.wait(5)}"
    return proc, json.loads(line)["receiver"]


async def _pings(client: httpx.AsyncClient) -> Counter[int]:
    events = (await client.get("/__sandbox/events", params={"metric": METRIC})).json()
    return Counter(e["properties"]["n"] for e in events)


async def _until(predicate: Any, timeout: float) -> None:
    async def poll() -> None:
        while not await predicate():
            await asyncio.sleep(0.2)

    await asyncio.wait_for(poll(), timeout)


async def test_kill_serve_mid_stream_and_restart_delivers_every_message_exactly_once(
    sandbox_factory: Any, prefect_server: str, tmp_path: Path
) -> None:
    box = sandbox_factory(rate_limits="off")
    store_url = f"sqlite:///{tmp_path}/state.db"
    env = _env(box, prefect_server, store_url, tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text("max_event_age_hours: 48\n")
    port = free_port()
    first, url = _start(port, env, config)
    second = None
    try:
        async with httpx.AsyncClient(base_url=box.klaviyo_url, timeout=10) as kl:
            head = await deliver(f"{url}/segment", _messages(0, 60), box.segment_shared_secret, batch_size=5)
            assert not head.given_up
            await _until(lambda: _has_some(kl), 60)  # flows are running
            tail = asyncio.create_task(
                deliver(
                    f"{url}/segment",
                    _messages(60, 140),
                    box.segment_shared_secret,
                    batch_size=5,
                    concurrency=2,
                    max_attempts=15,
                    backoff_base=0.5,
                    max_seconds=120,
                    seed=1,
                )
            )
            await asyncio.sleep(0.3)
            first.send_signal(signal.SIGKILL)  # receiver, committer and an in-flight flow run die together
            first.wait(10)
            second, _ = await asyncio.to_thread(_start, port, env, config)
            report = await tail
            assert not report.given_up, report.given_up
            await _until(lambda: _complete(kl, 200), 120)
            store = await Store.open(store_url)
            try:
                await _until(lambda: _drained(store), 60)
            finally:
                await store.close()
            counts = await _pings(kl)
        assert set(counts) == set(range(200))
        assert max(counts.values()) == 1, {n: c for n, c in counts.items() if c > 1}
        second.send_signal(signal.SIGTERM)
        code = second.wait(30)
        assert code == 0, "\n".join(p.read_text()[-3000:] for p in sorted(tmp_path.glob("serve-*.log")))
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(5)


def _env(box: Any, prefect_api: str, store_url: str, home: Path) -> dict[str, str]:
    # A short batch lease so a restarted process retakes a killed run's batches within the test (production
    # leases are 10 minutes, the default of KLAVIYO_SEGMENT_LEASE_SECONDS).
    return dict(
        os.environ,
        **sandbox_env(box),
        PREFECT_API_URL=prefect_api,
        KLAVIYO_SEGMENT_STORE_URL=store_url,
        KLAVIYO_SEGMENT_HOME=str(home),
        KLAVIYO_SEGMENT_LEASE_SECONDS="8",
    )


async def test_kill_prefect_server_mid_stream_and_restart_delivers_every_message_exactly_once(
    sandbox_factory: Any, tmp_path: Path
) -> None:
    """The Prefect server dies (SIGKILL) while deliveries arrive and flows run: the receiver keeps acking
    into the store, failed flow starts are retried, and after the server restarts (same database) every
    message reaches Klaviyo exactly once."""
    from klaviyo_segment.ingress.serve import LocalPrefect

    box = sandbox_factory(rate_limits="off")
    prefect = LocalPrefect(tmp_path / "prefect")
    api = await prefect.start()
    store_url = f"sqlite:///{tmp_path}/state.db"
    env = _env(box, api, store_url, tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text("max_event_age_hours: 48\n")
    serve, url = _start(free_port(), env, config)
    try:
        async with httpx.AsyncClient(base_url=box.klaviyo_url, timeout=10) as kl:
            head = await deliver(f"{url}/segment", _messages(0, 60), box.segment_shared_secret, batch_size=5)
            assert not head.given_up
            await _until(lambda: _has_some(kl), 60)
            assert prefect.process is not None
            prefect.process.send_signal(signal.SIGKILL)
            prefect.process.wait(10)
            tail = await deliver(
                f"{url}/segment",
                _messages(60, 140),
                box.segment_shared_secret,
                batch_size=5,
                concurrency=2,
                max_attempts=15,
                backoff_base=0.5,
                max_seconds=120,
                seed=1,
            )
            assert not tail.given_up, tail.given_up  # acks need the store, not Prefect
            await prefect.start()  # same PREFECT_HOME (database) and port
            await _until(lambda: _complete(kl, 200), 180)
            counts = await _pings(kl)
        assert set(counts) == set(range(200))
        assert max(counts.values()) == 1, {n: c for n, c in counts.items() if c > 1}
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait(5)
        prefect.stop()


async def _has_some(kl: httpx.AsyncClient) -> bool:
    return len(await _pings(kl)) > 0


async def _complete(kl: httpx.AsyncClient, n: int) -> bool:
    return len(await _pings(kl)) >= n


async def _drained(store: Store) -> bool:
    return await store.backlog() == {}
