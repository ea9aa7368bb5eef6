"""``serve --dispatch deployments`` against `prefect deploy`'s deployments, and ``serve --config``'s block.

The deployments `prefect deploy` made (work pool, pull steps, triggers/automations) must come out of a serve
session exactly as they went in, and serve must start runs OF them (executed by the pool's workers); only a flow
without such a deployment is served by serve itself, under a distinct ``<flow>-serve`` name.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from klaviyo_segment.devkit.demo import sandbox_env
from klaviyo_segment.devkit.sandbox.segment.simulator import deliver
from klaviyo_segment.ingress.serve import SERVE_SUFFIX, free_port, load_serve_config
from tests.ingress.test_durability import _start

ROOT = Path(__file__).resolve().parents[2]


def _prefect(args: list[str], api_url: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PREFECT_API_URL=api_url, KLAVIYO_SEGMENT_PROJECT_DIR=str(ROOT), **extra)
    return subprocess.run(
        [sys.executable, "-m", "prefect", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )


def _snapshot(deployment: Any) -> dict[str, Any]:
    return {
        "id": deployment.id,
        "work_pool_name": deployment.work_pool_name,
        "pull_steps": deployment.pull_steps,
        "parameters": deployment.parameters,
        "updated": deployment.updated,
        "paused": deployment.paused,
        "path": deployment.path,
        "entrypoint": deployment.entrypoint,
    }


async def _automations(client: Any) -> dict[str, Any]:
    return {
        str(a.id): (
            a.name,
            a.enabled,
            a.trigger.model_dump(mode="json"),
            [x.model_dump(mode="json") for x in a.actions],
        )
        for a in await client.read_automations()
    }


@pytest.mark.slow
async def test_deployments_mode_starts_the_deployed_flows_and_leaves_deployments_and_automations_alone(
    sandbox_factory: Any, prefect_server: str, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    pool = _prefect(["work-pool", "create", "klaviyo-segment", "--type", "process", "--overwrite"], prefect_server)
    assert pool.returncode == 0, pool.stderr
    deploy = _prefect(["--no-prompt", "deploy", "-n", "forward-track"], prefect_server)
    assert deploy.returncode == 0, deploy.stdout[-2000:] + deploy.stderr[-2000:]
    async with get_client() as client:
        deployed = await client.read_deployment_by_name("forward-track/forward-track")
        before = _snapshot(deployed)
        automations_before = await _automations(client)
    assert before["work_pool_name"] == "klaviyo-segment" and before["pull_steps"]
    assert any(name for name, *_ in automations_before.values()), "prefect deploy made the trigger's automation"

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
    proc, url = _start(free_port(), env, config, "--dispatch", "deployments")
    try:
        messages = [
            {
                "type": "track",
                "event": "Order Completed",
                "messageId": f"dm-{i}",
                "userId": "dm-user",
                "properties": {"n": i},
            }
            for i in range(6)
        ]
        report = await deliver(f"{url}/segment", messages, box.segment_shared_secret, batch_size=3)
        assert len(report.acknowledged) == 6
        async with get_client() as client:

            async def runs() -> list[Any]:
                return await client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployed.id]))
                )

            async def poll() -> None:
                while not any(r.parameters.get("batch_ids") for r in await runs()):
                    await asyncio.sleep(0.3)

            await asyncio.wait_for(poll(), 60)
            created = await runs()
            # the run belongs to the pool: a worker executes it (none runs here, so it waits, Scheduled)
            assert all(r.work_pool_name == "klaviyo-segment" and set(r.parameters) == {"batch_ids"} for r in created)
            served = {d.name for d in await client.read_deployments()}
            # flows without a `prefect deploy` deployment are served by serve under distinct names
            assert f"sync-identify{SERVE_SUFFIX}" in served and f"forward-track{SERVE_SUFFIX}" not in served
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    async with get_client() as client:
        try:
            after = _snapshot(await client.read_deployment_by_name("forward-track/forward-track"))
            assert after == before
            assert await _automations(client) == automations_before
        finally:  # other tests of this session serve forward-track themselves
            for run in await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployed.id]))
            ):
                await client.delete_flow_run(run.id)
            await client.delete_deployment(deployed.id)


async def test_serve_config_saves_the_mapping_tables_block(prefect_server: str, tmp_path: Path) -> None:
    from klaviyo_segment.blocks.mapping import MappingTables

    config = tmp_path / "config.yaml"
    config.write_text("churn: {list_id: L_CHURN}\ntrack: {deny: ['Test *']}\nklaviyo: {api_key: pk_not_saved}\n")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # "coroutine 'Block.asave' was never awaited"
            await load_serve_config(config)
        block = await MappingTables.aload("default")
        assert block.churn.list_id == "L_CHURN"
        assert block.document == {"churn": {"list_id": "L_CHURN"}, "track": {"deny": ["Test *"]}}
        assert "pk_not_saved" not in block.model_dump_json()
        block.to_config().require("churn-winback")  # what a worker's run of churn-winback checks first
    finally:
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            saved = await client.read_block_document_by_name("default", MappingTables.get_block_type_slug())
            await client.delete_block_document(saved.id)
