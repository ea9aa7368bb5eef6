"""The clients' warnings (stdlib ``klaviyo_segment.*`` loggers) reach the flow run's logs in the Prefect API, where
users look, redacted; a final error is logged as "not retried", never as an attempt of a retry series."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

from klaviyo_segment.flows.sync_identify import sync_identify

T = "2026-07-20T10:01:00Z"


async def _run_logs(flow_run_id: UUID) -> list[str]:
    """The run's log messages as the Prefect API holds them (after the background shipper has flushed)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    await asyncio.wait_for(APILogHandler.aflush(), 30)
    async with get_client() as client:
        logs = await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200
        )
    return [log.message for log in logs]


async def _run(messages: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    from klaviyo_segment.run_state import summary_of

    state = await sync_identify(messages=messages, return_state=True)
    result = await summary_of(state)  # a run with a dead letter ends Failed: its summary is the state's data
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    return result, await _run_logs(flow_run_id)


async def test_retry_warning_of_the_client_is_in_the_flow_run_logs(flow_env: Any) -> None:
    # Seed 1 draws 0.13 then 0.85: the first upsert answers 503, the retry goes through.
    flow_env.configure(faults="create_or_update_profile:503=0.5", seed=1)
    message = {
        "type": "identify",
        "messageId": "r1",
        "userId": "u-r1",
        "timestamp": T,
        "traits": {"email": "retry.me@example.com"},
    }
    result, logs = await _run([message])
    flow_env.configure(faults=None)
    assert result["sent"] == 1 and flow_env.stats()["faults_total"] == 1
    retries = [m for m in logs if "-> 503" in m and "retry 1/5" in m]
    assert len(retries) == 1, logs
    assert retries[0].startswith("klaviyo POST /api/profile-import")
    assert "retry.me@example.com" not in "\n".join(logs)  # PII stays masked in the UI


async def test_final_error_is_logged_once_as_not_retried(flow_env: Any) -> None:
    flow_env.configure(scopes=["profiles:read", "events:write", "lists:write", "subscriptions:write"])
    message = {
        "type": "identify",
        "messageId": "d1",
        "userId": "u-d1",
        "timestamp": T,
        "traits": {"email": "denied@example.com"},
    }
    result, logs = await _run([message])
    assert result["failed"] == 1
    denied = [m for m in logs if "-> 403" in m]
    assert denied and all(m.endswith("(not retried)") for m in denied), logs
    assert not any("retry 1/" in m or "attempt 1/" in m for m in denied)
