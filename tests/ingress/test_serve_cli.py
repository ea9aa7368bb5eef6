"""`serve` as users run it: port in use is exit 2; `--dispatch deployments` runs flows through served deployments."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from klaviyo_segment.devkit.demo import sandbox_env
from klaviyo_segment.devkit.sandbox.segment.simulator import deliver
from tests.ingress.test_durability import _start


def test_port_in_use_exits_2() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "klaviyo_segment", "serve", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, PREFECT_API_URL="http://127.0.0.1:9/api"),
        )
    assert result.returncode == 2, result.stderr
    assert "already in use" in result.stderr


@pytest.mark.slow
async def test_deployments_mode_runs_flows_via_served_deployments(
    sandbox_factory: Any, prefect_server: str, tmp_path: Path
) -> None:
    box = sandbox_factory(rate_limits="off")
    env = dict(
        os.environ,
        **sandbox_env(box),
        PREFECT_API_URL=prefect_server,
        KLAVIYO_SEGMENT_STORE_URL=f"sqlite:///{tmp_path}/state.db",
        KLAVIYO_SEGMENT_HOME=str(tmp_path),
    )
    config = tmp_path / "config.yaml"
    config.write_text("max_event_age_hours: 48\n")
    from klaviyo_segment.ingress.serve import free_port

    proc, url = _start(free_port(), env, config, "--dispatch", "deployments")
    try:
        now = datetime.now(UTC).isoformat()
        messages = [
            {
                "type": "track",
                "event": "Deployed Ping",
                "messageId": f"dep-{i}",
                "userId": "dep-user",
                "context": {"traits": {"email": "dep@example.com"}},
                "properties": {"n": i},
                "timestamp": now,
            }
            for i in range(12)
        ]
        report = await deliver(f"{url}/segment", messages, box.segment_shared_secret, batch_size=4)
        assert len(report.acknowledged) == 12
        async with httpx.AsyncClient(base_url=box.klaviyo_url) as kl:

            async def count() -> int:
                return len((await kl.get("/__sandbox/events", params={"metric": "Deployed Ping"})).json())

            async def poll() -> None:
                while await count() < 12:
                    await asyncio.sleep(0.5)

            await asyncio.wait_for(poll(), 120)
            assert await count() == 12
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            runs = await client.read_flow_runs()
        assert any(r.deployment_id is not None and r.parameters.get("batch_ids") for r in runs)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
