"""What an operator sees in Prefect for a run: a Failed state when messages failed (Completed when they were only
skipped), one summary line and one redacted line per dead letter in the run's logs (read back from the Prefect
API), a readable run name, and dead letters closed once their message is delivered."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from uuid import UUID

from typer.testing import CliRunner

from klaviyo_segment.flows.forward_track import forward_track
from klaviyo_segment.run_state import call_flow

T = "2026-07-20T10:01:00Z"
#: A key without events:write: every event create answers 403.
NO_EVENTS = ["profiles:read", "profiles:write", "lists:write", "subscriptions:write"]


def track(mid: str, user: str, event: str = "Order Completed") -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": mid,
        "userId": user,
        "event": event,
        "timestamp": T,
        "properties": {"total": 10},
        "context": {"traits": {"email": f"{user}@example.com"}},
    }


async def _api_view(flow_run_id: UUID) -> tuple[Any, list[str], list[Any]]:
    """(flow run, log messages, artifacts) as the Prefect API holds them, after the log shipper flushed."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogHandler

    await asyncio.wait_for(APILogHandler.aflush(), 30)
    async with get_client() as client:
        run = await client.read_flow_run(flow_run_id)
        logs = await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200
        )
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return run, [log.message for log in logs], artifacts


async def test_run_whose_messages_all_failed_is_failed_with_its_reason_in_the_logs(flow_env: Any) -> None:
    flow_env.configure(scopes=NO_EVENTS)
    # A sender that puts an email in its messageId: the dead-letter line must still not show it.
    messages = [track("t1-ann.lee@example.com", "u1"), track("t2", "u2"), track("t3", "u3")]
    summary, state = await call_flow(forward_track, messages=messages, config={})
    assert summary["failed"] == 3 and summary["sent"] == 0
    assert state.is_failed() and state.name == "Failed"
    assert state.message.startswith("3 of 3 messages failed — see dead letters")

    run, logs, artifacts = await _api_view(state.state_details.flow_run_id)
    assert run.state.type.value == "FAILED" and run.state.name == "Failed"
    assert run.state.message.startswith("3 of 3 messages failed")
    assert run.name == "forward-track · 3 msgs"
    summaries = [m for m in logs if m.startswith("forward-track: received 3, sent 0, skipped 0, failed 3")]
    assert len(summaries) == 1 and "top reasons: failed:" in summaries[0] and "(3)" in summaries[0], logs
    dead = [m for m in logs if m.startswith("dead letter ")]
    assert len(dead) == 3, logs
    redacted = [m for m in dead if "message t***@example.com (track)" in m]
    assert len(redacted) == 1 and "(HTTP 403)" in redacted[0] and "events:write" in redacted[0], dead
    assert "ann.lee@example.com" not in "\n".join(logs)
    assert [a.key for a in artifacts] == ["forward-track-outcomes"]
    assert "attempt 1" in (artifacts[0].description or "")


async def test_partly_failed_run_names_itself_and_skipped_only_run_stays_completed(flow_env: Any) -> None:
    ok = track("p1", "u1")
    broken = {"type": "track", "messageId": "p2", "event": "Order Completed", "timestamp": T}  # no user at all
    summary, state = await call_flow(forward_track, messages=[ok, broken], config={})
    assert (summary["sent"], summary["failed"]) == (1, 1)
    assert state.is_failed() and state.name == "PartlyFailed"
    assert state.message.startswith("1 of 2 messages failed")

    not_ours = {"type": "identify", "messageId": "s1", "userId": "u9", "timestamp": T}
    summary, state = await call_flow(forward_track, messages=[not_ours], config={})
    assert summary["skipped"] == 1 and summary["failed"] == 0
    assert state.is_completed() and state.name == "Completed"


async def test_delivery_closes_the_open_dead_letters(flow_env: Any) -> None:
    flow_env.configure(scopes=NO_EVENTS)
    messages = [track("d1", "u1"), track("d2", "u2")]
    first, _ = await call_flow(forward_track, messages=messages, config={})
    assert first["failed"] == 2
    async with flow_env.store() as store:
        assert await store.count_dead_letters("forward-track") == 2
    flow_env.configure(scopes=None)  # the scope was granted: the same messages (a Retry of the run) go through
    second, state = await call_flow(forward_track, messages=messages, config={})
    assert second["sent"] == 2 and state.is_completed()
    async with flow_env.store() as store:
        assert await store.count_dead_letters("forward-track") == 0
    _, logs, _ = await _api_view(state.state_details.flow_run_id)
    assert any(m == "forward-track: 2 dead letters resolved (their messages were delivered)" for m in logs), logs


async def test_batch_run_is_named_with_its_message_count_and_batch(flow_env: Any) -> None:
    async with flow_env.store() as store:
        accepted = await store.accept(
            [track("b1", "u1"), track("b2", "u2")], key=lambda m: m["messageId"], route=lambda m: ["forward-track"]
        )
    batch_id = accepted.batches["forward-track"]
    summary, state = await call_flow(forward_track, batch_ids=[batch_id], config={})
    assert summary["sent"] == 2 and state.is_completed()
    run, _, _ = await _api_view(state.state_details.flow_run_id)
    assert run.name == f"forward-track · 2 msgs · batch {batch_id[:6]}…"
    assert "@" not in run.name


def test_cli_run_of_a_failed_run_prints_its_summary_and_exits_1(flow_env: Any, tmp_path: Path) -> None:
    from klaviyo_segment.cli.app import app

    flow_env.configure(scopes=NO_EVENTS)
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps(track(f"c{i}", f"u{i}")) for i in range(3)) + "\n")
    result = CliRunner().invoke(app, ["run", "forward-track", "--input", str(path), "--json"])
    assert result.exit_code == 1 and result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["received"], summary["sent"], summary["failed"]) == (3, 0, 3)


async def test_inline_dispatch_of_a_failed_run_is_not_a_crashed_dispatch(flow_env: Any) -> None:
    from klaviyo_segment.ingress.dispatcher import Dispatcher, inline_launcher

    flow_env.configure(scopes=NO_EVENTS)
    async with flow_env.store() as store:
        accepted = await store.accept(
            [track("i1", "u1"), track("i2", "u2")], key=lambda m: m["messageId"], route=lambda m: ["forward-track"]
        )
        batch_id = accepted.batches["forward-track"]
        dispatcher = Dispatcher(store, inline_launcher({}), flows=["forward-track"], min_interval=0)
        assert await dispatcher.dispatch_once("forward-track")
        await dispatcher.wait_runs()  # forward-track's runs overlap: this one runs beside the dispatch loop
        assert dispatcher.stats.failures == 0  # a Failed run is a finished run, not a launch error
        assert dispatcher.stats.outcomes["forward-track"]["failed"] == 2
        [info] = await store.get_batches([batch_id])
        assert info.status == "partial" and info.attempts == 1
        assert not await dispatcher.dispatch_once("forward-track")  # nothing is dispatched (or sent) again
        assert await store.count_dead_letters("forward-track") == 2
    assert len(flow_env.events()) == 0


async def test_each_attempt_of_a_retried_run_has_its_own_artifact(flow_env: Any) -> None:
    flow_env.configure(scopes=NO_EVENTS)
    retried = forward_track.with_options(retries=1, retry_delay_seconds=0)  # Prefect retries a Failed run in place
    summary, state = await call_flow(retried, messages=[track("r1", "u1")], config={})
    assert summary["failed"] == 1 and state.is_failed()
    run, _, artifacts = await _api_view(state.state_details.flow_run_id)
    assert run.run_count == 2
    assert sorted(a.key for a in artifacts) == ["forward-track-outcomes", "forward-track-outcomes-attempt-2"]
    assert sorted(a.description for a in artifacts)[1].endswith("(attempt 2)")
    async with flow_env.store() as store:
        [letter] = await store.list_dead_letters("forward-track")
    assert letter.attempts == 2  # one dead letter, failed twice: not two copies


async def test_a_retry_of_a_failed_batch_run_processes_its_batch_again_and_no_other_run_does(flow_env: Any) -> None:
    """A Retry re-runs the same flow run, whose batch it closed ``partial``: it must process that batch again
    (before, it found nothing to lease and went green with 0 messages). Another run of the same batch gets nothing."""
    flow_env.configure(scopes=NO_EVENTS)
    async with flow_env.store() as store:
        accepted = await store.accept(
            [track("rb1", "u1"), track("rb2", "u2")], key=lambda m: m["messageId"], route=lambda m: ["forward-track"]
        )
    batch_id = accepted.batches["forward-track"]
    retried = forward_track.with_options(retries=1, retry_delay_seconds=0)  # Prefect re-runs the same flow run
    summary, state = await call_flow(retried, batch_ids=[batch_id], config={})
    assert (summary["received"], summary["failed"]) == (2, 2) and state.is_failed()  # the 2nd attempt's summary
    run, _, artifacts = await _api_view(state.state_details.flow_run_id)
    assert run.run_count == 2 and len(artifacts) == 2
    async with flow_env.store() as store:
        [info] = await store.get_batches([batch_id])
        assert info.status == "partial" and info.attempts == 2
        assert [d.attempts for d in await store.list_dead_letters("forward-track")] == [2, 2]
    other, state = await call_flow(forward_track, batch_ids=[batch_id], config={})
    assert other["received"] == 0 and state.is_completed()  # a batch another run finished is not re-taken
