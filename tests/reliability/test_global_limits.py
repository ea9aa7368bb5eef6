"""Rate limits across worker processes: two real processes share one Klaviyo quota through Prefect GCLs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from klaviyo_segment.clients.global_limits import (
    ENV_GLOBAL_LIMITS,
    ENV_RATE_SCALE,
    PrefectGlobalPacer,
    bucket_specs,
    global_pacer_from_env,
)
from klaviyo_segment.clients.pacing import InProcessPacer
from klaviyo_segment.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SCALE = 4.0
SECONDS = 40.0


@pytest.mark.parametrize(
    "op", ["bulk_create_events", "create_event", "get_profiles", "create_list", "bulk_subscribe_profiles"]
)
@pytest.mark.parametrize("scale", [0.1, 1.0, 4.0])
def test_buckets_fit_every_window(op: str, scale: float) -> None:
    """A token bucket admits at most floor(C + r*W) requests in any window W: it must fit both windows."""
    from klaviyo_segment.clients.pacing import tier_of

    _tier, burst, steady, _daily = tier_of(op)
    b, s = bucket_specs("acct", op, scale=scale)
    assert math.floor(b.limit + b.decay * 1 + 1e-9) <= max(1, burst * scale)
    assert math.floor(s.limit + s.decay * 60 + 1e-9) <= max(1, steady * scale)
    assert s.decay >= 0.8 * max(1, steady * scale * 0.9) / 60 - 1e-9  # and still close to the ceiling
    assert "acct" not in b.name and b.name.startswith("klaviyo:") and b.name.endswith(":burst")


def test_opt_in_and_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv(ENV_GLOBAL_LIMITS, raising=False)
    assert global_pacer_from_env("acct") is None
    monkeypatch.setenv(ENV_GLOBAL_LIMITS, "redis")
    with pytest.raises(ConfigError):
        global_pacer_from_env("acct")
    monkeypatch.setenv(ENV_GLOBAL_LIMITS, "prefect")
    with temporary_settings({PREFECT_API_URL: ""}):
        assert global_pacer_from_env("acct") is None  # no Prefect API: in-process pacing
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        monkeypatch.setenv(ENV_RATE_SCALE, "2")
        pacer = global_pacer_from_env("acct")
        assert isinstance(pacer, PrefectGlobalPacer) and pacer.scale == 2.0
        monkeypatch.setenv(ENV_RATE_SCALE, "fast")
        with pytest.raises(ConfigError):
            global_pacer_from_env("acct")


async def test_unreachable_prefect_degrades_to_local_pacing() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    pacer = PrefectGlobalPacer("acct", local=InProcessPacer(scale=100))
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        await pacer.acquire("get_profiles")
    assert pacer.degraded


def _stats(box: Any) -> dict[str, Any]:
    return httpx.get(f"{box.klaviyo_url}/__sandbox/stats", timeout=10).json()


@pytest.mark.slow
def test_two_workers_stay_under_the_shared_limit(prefect_server: str, sandbox_factory: Callable[..., Any]) -> None:
    box = sandbox_factory(rate_limits=f"scale={SCALE}")
    env = {
        **os.environ,
        "KLAVIYO_API_KEY": box.klaviyo_api_key,
        ENV_GLOBAL_LIMITS: "prefect",
        ENV_RATE_SCALE: str(SCALE),
        "PREFECT_API_URL": prefect_server,
        "PYTHONPATH": str(ROOT),
    }
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.hammer_worker", box.klaviyo_url, str(SECONDS), "4", f"w{n}"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=SECONDS + 60)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    elapsed = time.monotonic() - started
    stats = _stats(box)
    total = stats["requests"].get("bulk_create_events", 0)
    throttled = stats["throttled"].get("bulk_create_events", 0)
    ceiling = 150 * SCALE / 60  # requests/s the sandbox allows in steady state (M tier)
    # over the window the workers actually ran (a busy machine may start one late), not the nominal SECONDS
    window = max(r["ended"] for r in results) - min(r["began"] for r in results)
    rate = total / window
    print(
        f"\n2 workers x 4 tasks, {SECONDS:.0f}s (window {window:.1f}s, wall {elapsed:.1f}s): {total} requests, "
        f"{throttled} throttled "
        f"({100 * throttled / max(total, 1):.2f}%), {rate:.2f} req/s vs steady ceiling {ceiling:.2f} req/s "
        f"({100 * rate / ceiling:.0f}%); workers: {results}"
    )
    assert all(r["pacer"] == "PrefectGlobalPacer" for r in results)
    assert total >= 100
    assert throttled / total < 0.005
    # Measured 64-68% on an idle machine: the planned rate is 84% (10% margin + bucket sizing), Prefect's 423
    # Retry-After the rest. The floor is generous for a busy CI box yet still fails if the shared quota is
    # wasted, e.g. each worker pacing itself to half of it.
    assert rate >= 0.4 * ceiling
