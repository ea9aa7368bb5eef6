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


def _prefect(args: list[str], api_url: str, project_dir: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PREFECT_API_URL=api_url, KLAVIYO_SEGMENT_PROJECT_DIR=str(ROOT))
    if not project_dir:
        env.pop("KLAVIYO_SEGMENT_PROJECT_DIR")
    return subprocess.run(
        [sys.executable, "-m", "prefect", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )


@pytest.mark.slow
async def test_prefect_deploy_all_creates_every_deployment_with_triggers(prefect_server: str) -> None:
    from prefect.client.orchestration import get_client

    pool = _prefect(["work-pool", "create", "klaviyo-segment", "--type", "process", "--overwrite"], prefect_server)
    assert pool.returncode == 0, pool.stderr
    deploy = _prefect(["--no-prompt", "deploy", "--all"], prefect_server)
    assert deploy.returncode == 0, deploy.stdout[-2000:] + deploy.stderr[-2000:]
    async with get_client() as client:
        deployments = {d.name: d for d in await client.read_deployments()}
        try:
            assert EXPECTED <= set(deployments)
            assert all(deployments[n].work_pool_name == "klaviyo-segment" for n in EXPECTED)
            assert deployments["sync-identify"].pull_steps == [
                {"klaviyo_segment.deploy_steps.set_project_dir": {"directory": str(ROOT)}}
            ]
            automations = await client.read_automations()
            trigger_targets = {a.name for a in automations}
            assert any("sync-identify" in name for name in trigger_targets), trigger_targets
            assert deployments["engagement-to-segment-poll"].parameters == {"poll": True}
        finally:  # serve tests of this session serve the flows themselves when no such deployment exists
            for name in EXPECTED:
                if name in deployments:
                    await client.delete_deployment(deployments[name].id)


@pytest.mark.slow
def test_deploy_without_project_dir_fails_with_a_clear_message(prefect_server: str) -> None:
    deploy = _prefect(["--no-prompt", "deploy", "-n", "backfill-profiles"], prefect_server, project_dir=False)
    assert deploy.returncode != 0
    assert "$KLAVIYO_SEGMENT_PROJECT_DIR is not set" in deploy.stdout + deploy.stderr
