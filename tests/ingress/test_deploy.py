"""``prefect deploy --all`` with the repository's prefect.yaml against a real (test) Prefect server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from klaviyo_segment.flows import names

ROOT = Path(__file__).resolve().parents[2]
#: Every registered flow (event and auxiliary) plus the polling variant; tests/foundation/test_flow_registry.py
#: checks prefect.yaml against the registry without a server.
EXPECTED = {*names(auxiliary=True), "engagement-to-segment-poll"}


def _prefect(args: list[str], api_url: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PREFECT_API_URL=api_url, KLAVIYO_SEGMENT_PROJECT_DIR=str(ROOT))
    return subprocess.run([sys.executable, "-m", "prefect", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=240)


@pytest.mark.slow
async def test_prefect_deploy_all_creates_every_deployment_with_triggers(prefect_server: str) -> None:
    from prefect.client.orchestration import get_client

    pool = _prefect(["work-pool", "create", "klaviyo-segment", "--type", "process", "--overwrite"], prefect_server)
    assert pool.returncode == 0, pool.stderr
    deploy = _prefect(["--no-prompt", "deploy", "--all"], prefect_server)
    assert deploy.returncode == 0, deploy.stdout[-2000:] + deploy.stderr[-2000:]
    async with get_client() as client:
        deployments = {d.name: d for d in await client.read_deployments()}
        assert EXPECTED <= set(deployments)
        assert all(deployments[n].work_pool_name == "klaviyo-segment" for n in EXPECTED)
        automations = await client.read_automations()
    trigger_targets = {a.name for a in automations}
    assert any("sync-identify" in name for name in trigger_targets), trigger_targets
    assert deployments["engagement-to-segment-poll"].parameters == {"poll": True}
