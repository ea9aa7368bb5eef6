"""The event path as a user runs it: a trigger-enabled ``prefect server``, ``prefect deploy --all`` from this repo's
prefect.yaml, a process worker, and events posted the way a Prefect Cloud webhook creates them.

One test, in the order an operator lives it: (a) a track event starts ``ingest-segment`` and then only
``forward-track``, both executed by the worker, and Klaviyo gets the event once; (b) with a key lacking
``events:write`` the next run ends Failed with its reason, its summary and redacted dead-letter lines in the run's
logs; (c) the scope granted, the UI's Retry (a Scheduled state named AwaitingRetry) makes the worker re-run it to
Completed without a duplicate, and its dead letters are closed; (d) no message content is left in Prefect's
database outside the events table (the documented trade-off, docs/cloud-webhooks.md).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from klaviyo_segment.devkit.demo import sandbox_env
from klaviyo_segment.ingress.serve import LocalPrefect
from tests.flows.conftest import FlowSandbox
from tests.flows.test_run_states import NO_EVENTS
from tests.ingress.test_deployments_mode import _prefect

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

POOL = "klaviyo-segment"
METRIC = "Chain Ping"
#: Message content that must not stay in Prefect (outside the triggering events): emails, a phone, a value.
EMAILS = ["chain-ok@example.com", "chain-fail-1@example.com", "chain-fail-2@example.com"]
PHONE = "+15555550123"
SECRET_VALUE = "plan-zq7731-confidential"
#: Every wait is bounded by this (seconds).
WAIT = 120.0

T = TypeVar("T")


def _track(mid: str, user: str, email: str) -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": mid,
        "userId": user,
        "event": METRIC,
        "timestamp": datetime.now(UTC).isoformat(),
        "properties": {"plan": SECRET_VALUE, "phone_number": PHONE},
        "context": {"traits": {"email": email, "phone": PHONE}},
    }


async def _until(what: str, probe: Callable[[], Awaitable[T | None]], timeout: float = WAIT) -> T:
    """Poll ``probe`` until it returns something truthy, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.5)


async def _webhook_event(api_url: str, messages: list[dict[str, Any]]) -> str:
    """What a Prefect Cloud webhook does with a Segment delivery (docs/cloud-webhooks.md's template): one event."""
    event_id = str(uuid.uuid4())
    event = {
        "id": event_id,
        "occurred": datetime.now(UTC).isoformat(),
        "event": "segment.batch" if len(messages) > 1 else f"segment.{messages[0]['type']}",
        "resource": {"prefect.resource.id": "segment.source.chain-test"},
        "payload": {"messages": messages},
    }
    async with httpx.AsyncClient(base_url=api_url, timeout=10, trust_env=False) as http:
        assert (await http.post("/events", json=[event])).status_code == 204
    return event_id


async def _runs(client: Any) -> dict[str, list[Any]]:
    """Every flow run on the server, by deployment name."""
    deployments = {d.id: d.name for d in await client.read_deployments()}
    out: dict[str, list[Any]] = {}
    for run in await client.read_flow_runs(limit=200):
        out.setdefault(deployments.get(run.deployment_id, "?"), []).append(run)
    return out


async def _final(client: Any, run_id: Any, run_count: int = 1) -> Any:
    """The run once it is in a final state of its ``run_count``-th execution."""

    async def probe() -> Any:
        run = await client.read_flow_run(run_id)
        return run if run.state and run.state.is_final() and run.run_count >= run_count else None

    return await _until(f"flow run {run_id} to finish (execution {run_count})", probe)


async def _logs(client: Any, run_id: Any) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])), limit=200)
    return [log.message for log in logs]


async def _logs_once(client: Any, run_id: Any, wanted: Callable[[list[str]], bool]) -> list[str]:
    """The run's logs once ``wanted`` holds: a flow-run process ships its logs to the API in batches (every
    ~2 s), so on a busy machine they can land after the run's final state."""

    async def probe() -> list[str] | None:
        logs = await _logs(client, run_id)
        return logs if wanted(logs) else None

    return await _until("the run's log lines", probe)


async def _artifacts(client: Any, run_id: Any) -> list[Any]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    return await client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
    )


def _pii_rows(db: Path, needles: list[str]) -> Counter[str]:
    """Rows containing any needle over every table of Prefect's SQLite database (events counted by event name)."""
    found: Counter[str] = Counter()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):  # noqa: S608 - names from sqlite_master
                if any(n in " ".join(str(v) for v in tuple(row)) for n in needles):
                    found[f"events:{row['event']}" if table == "events" else table] += 1
    return found


async def _pause_polling(client: Any) -> None:
    """The scheduled engagement poll is not under test: pause it and drop its runs before the worker starts."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    poll = await client.read_deployment_by_name("engagement-to-segment/engagement-to-segment-poll")
    await client.pause_deployment(poll.id)
    for run in await client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[poll.id]))):
        await client.delete_flow_run(run.id)


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--type", "process"],
            cwd=Path(__file__).resolve().parents[2],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


async def test_webhook_event_runs_only_the_flows_with_work_on_the_worker_fails_retries_and_keeps_no_pii(
    sandbox_factory: Any, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Scheduled

    started = time.monotonic()
    figures: dict[str, float] = {}
    box = sandbox_factory(rate_limits="off")
    klaviyo = FlowSandbox(box, f"sqlite:///{tmp_path / 'state.db'}")
    server = LocalPrefect(tmp_path / "prefect-home")  # triggers on: Prefect's default
    worker: subprocess.Popen[bytes] | None = None
    try:
        api_url = await server.start()
        figures["server_start"] = time.monotonic() - started
        env = dict(
            os.environ,
            **sandbox_env(box),
            PREFECT_API_URL=api_url,
            PREFECT_HOME=str(tmp_path / "client-home"),
            KLAVIYO_SEGMENT_STORE_URL=klaviyo.store_url,
            KLAVIYO_SEGMENT_HOME=str(tmp_path),
            PREFECT_WORKER_QUERY_SECONDS="1",
            # the runs' INFO lines are asserted: never inherit a quieter level from the test process (the bench
            # CLI, invoked in-process by tests/bench, sets PREFECT_LOGGING_LEVEL=WARNING)
            PREFECT_LOGGING_LEVEL="INFO",
        )
        extra = {k: env[k] for k in ("PREFECT_HOME",)}
        pool = _prefect(["work-pool", "create", POOL, "--type", "process", "--overwrite"], api_url, **extra)
        assert pool.returncode == 0, pool.stderr
        t0 = time.monotonic()
        deploy = _prefect(["--no-prompt", "deploy", "--all"], api_url, **extra)
        figures["deploy_all"] = time.monotonic() - t0
        assert deploy.returncode == 0, deploy.stdout[-2000:] + deploy.stderr[-2000:]

        with temporary_settings({PREFECT_API_URL: api_url}):
            async with get_client() as client:
                await _pause_polling(client)
                worker = _start_worker(env, tmp_path / "worker.log")
                deployments = {d.name for d in await client.read_deployments()}
                assert {"ingest-segment", "forward-track", "sync-identify"} <= deployments
                automations = await client.read_automations()
                assert len(automations) >= 8, [a.name for a in automations]

                # (a) one track event -> ingest-segment, then forward-track only; the worker runs both
                t0 = time.monotonic()
                ok_event = await _webhook_event(api_url, [_track("chain-1", "chain-u1", EMAILS[0])])

                async def forward_runs(n: int) -> list[Any] | None:
                    runs = (await _runs(client)).get("forward-track", [])
                    return runs if len(runs) >= n else None

                [forward] = await _until("forward-track's run", lambda: forward_runs(1))
                forward = await _final(client, forward.id)
                figures["event_to_forward_completed"] = time.monotonic() - t0
                runs = await _runs(client)
                [ingest] = runs["ingest-segment"]
                assert ingest.parameters == {"event_id": ok_event}
                assert ingest.name == f"ingest-segment · event {ok_event[:8]}…"
                assert forward.name.startswith("forward-track · 1 msg · batch ")
                assert ingest.state.is_completed() and forward.state.is_completed(), (ingest.state, forward.state)
                assert set(runs) == {"ingest-segment", "forward-track"}, {k: len(v) for k, v in runs.items()}
                for run in (ingest, forward):
                    assert run.work_pool_name == POOL and run.infrastructure_pid, run  # executed by the worker
                assert set(forward.parameters) == {"batch_ids"}
                assert len(klaviyo.events(METRIC)) == 1
                await _logs_once(  # times out (fails) unless the line arrives
                    client,
                    ingest.id,
                    lambda logs: any("1 received, 1 staged" in m and "batches for forward-track" in m for m in logs),
                )

                # (b) a key without events:write: the run ends Failed, its reason in its logs (redacted)
                klaviyo.configure(scopes=NO_EVENTS)
                failing = [_track("chain-2", "chain-u2", EMAILS[1]), _track("chain-3", "chain-u3", EMAILS[2])]
                await _webhook_event(api_url, failing)
                [failed] = [
                    r
                    for r in await _until("the second forward-track run", lambda: forward_runs(2))
                    if r.id != forward.id
                ]
                failed = await _final(client, failed.id)
                assert failed.state.type.value == "FAILED" and failed.state.name == "Failed", failed.state
                assert failed.state.message.startswith("2 of 2 messages failed — see dead letters")
                logs = await _logs_once(
                    client,
                    failed.id,
                    lambda logs: (
                        sum(m.startswith("dead letter ") for m in logs) >= 2
                        and any(m.startswith("forward-track: received 2") for m in logs)
                    ),
                )
                summary = [m for m in logs if m.startswith("forward-track: received 2, sent 0, skipped 0, failed 2")]
                assert len(summary) == 1, logs
                dead = [m for m in logs if m.startswith("dead letter ")]
                assert len(dead) == 2 and all("(HTTP 403)" in m and "events:write" in m for m in dead), logs
                async with klaviyo.store() as store:
                    assert await store.count_dead_letters("forward-track") == 2
                assert len(klaviyo.events(METRIC)) == 1

                # (c) the scope granted, the UI's Retry: the worker re-runs the same run to Completed
                klaviyo.configure(scopes=None)
                await client.set_flow_run_state(
                    failed.id, Scheduled(name="AwaitingRetry", message="Retry from the UI"), force=False
                )
                t0 = time.monotonic()
                retried = await _final(client, failed.id, run_count=2)
                figures["retry_to_completed"] = time.monotonic() - t0
                assert retried.state.is_completed(), retried.state
                assert len((await _runs(client))["forward-track"]) == 2, "a Retry re-runs the run, no new one"
                sent = klaviyo.events(METRIC)
                assert len(sent) == 3, "each message reached Klaviyo exactly once"
                async with klaviyo.store() as store:
                    assert await store.count_dead_letters("forward-track") == 0
                await _logs_once(
                    client,
                    failed.id,
                    lambda logs: "forward-track: 2 dead letters resolved (their messages were delivered)" in logs,
                )
                artifacts = await _artifacts(client, failed.id)
                assert sorted(a.key for a in artifacts) == [
                    "forward-track-outcomes",
                    "forward-track-outcomes-attempt-2",
                ]

                # (d) no message content in runs' parameters, logs, artifacts or state messages
                all_runs = [r for rs in (await _runs(client)).values() for r in rs]
                assert len(all_runs) == 4, [r.name for r in all_runs]
                views = []
                for run in all_runs:
                    views += [repr(run.parameters), run.name, str(run.state.message or "")]
                    views += await _logs(client, run.id)
                    views += [a.model_dump_json() for a in await _artifacts(client, run.id)]
                    views += [str(s.message or "") for s in await client.read_flow_run_states(run.id)]
                leaked = [v for v in views if any(n in v for n in [*EMAILS, PHONE, SECRET_VALUE])]
                assert not leaked, leaked
        worker.terminate()
        worker.wait(30)
        server.stop()
        rows = _pii_rows(tmp_path / "prefect-home" / "prefect.db", [*EMAILS, PHONE, SECRET_VALUE])
        # Only the events table (the documented retention trade-off): the 2 webhook events, and the copy of each
        # that Prefect embeds in its own `prefect.automation.triggered` event.
        assert rows == {
            "events:segment.track": 1,
            "events:segment.batch": 1,
            "events:prefect.automation.triggered": 2,
        }, rows
        figures["total"] = time.monotonic() - started
        print("figures:", {k: round(v, 1) for k, v in figures.items()}, "pii rows:", rows)
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait(10)
        server.stop()
