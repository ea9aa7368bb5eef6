"""Operator-facing details without a server: the final-state rule, run names, throttle-wait log lines and the
CLI's default for Prefect's ephemeral-server start-up timeout."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import httpx
import pytest

from klaviyo_segment.clients.pacing import InProcessPacer, tier_of
from klaviyo_segment.outcomes import Outcome, Status
from klaviyo_segment.run_report import dead_letter_line, run_name, summary_line
from klaviyo_segment.run_state import (
    FAILED,
    PARTLY_FAILED,
    failure_message,
    final_state,
)


def _summary(sent: int, skipped: int, failed: int) -> dict[str, object]:
    return {
        "flow": "forward-track",
        "received": sent + skipped + failed,
        "sent": sent,
        "skipped": skipped,
        "failed": failed,
        "reasons": {"failed:event failed: 403": failed} if failed else {},
    }


def test_final_state_is_failed_only_when_messages_failed() -> None:
    skipped_only = _summary(0, 4, 0)
    assert final_state(skipped_only) is skipped_only and failure_message(skipped_only) is None
    all_failed = final_state(_summary(0, 0, 3))
    assert all_failed.is_failed() and all_failed.name == FAILED
    assert all_failed.message == "3 of 3 messages failed — see dead letters (sent 0, skipped 0)"
    partly = final_state(_summary(2, 1, 1))
    assert partly.is_failed() and partly.name == PARTLY_FAILED and partly.message.startswith("1 of 4 messages")


def test_run_names_carry_counts_and_batch_never_content() -> None:
    messages = [{"messageId": "m", "traits": {"email": "x@example.com"}}] * 5000
    assert run_name("forward-track", messages, None) == "forward-track · 5000 msgs"
    assert run_name("sync-identify", [{}], None) == "sync-identify · 1 msg"
    assert run_name("forward-track", None, ["3f2a91bc", "77"]) == "forward-track · 2 batches · batch 3f2a91… +1"
    assert run_name("forward-track", None, ["3f2a91bc"], 40) == "forward-track · 40 msgs · batch 3f2a91…"


def test_summary_and_dead_letter_lines_are_redacted() -> None:
    line = summary_line({**_summary(0, 0, 2), "reasons": {"failed:invalid email jo@example.com": 2}})
    assert line == (
        "forward-track: received 2, sent 0, skipped 0, failed 2; top reasons: failed:invalid email j***@example.com (2)"
    )
    out = Outcome(message_id="m1", status=Status.FAILED, type="identify", reason="phone +1 415 555 0100 rejected")
    assert dead_letter_line("sync-identify", "abc", out) == (
        "dead letter abc: sync-identify message m1 (identify) failed: phone +1 ***00 rejected"
    )


async def test_throttle_waits_over_one_second_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = InProcessPacer(clock=lambda: now[0], sleep=sleep)
    caplog.set_level(logging.WARNING, logger="klaviyo_segment.clients.pacing")
    await pacer.acquire("create_event")
    pacer.observe("create_event", httpx.Response(429, headers={"Retry-After": "3"}))
    await pacer.acquire("create_event")
    assert slept == [3.0]
    [record] = caplog.records
    assert record.getMessage() == "klaviyo throttle: create_event held 3.0s (Klaviyo answered 429 / Retry-After)"

    caplog.clear()
    _, burst, _, _ = tier_of("create_event")
    for _ in range(burst + 2):  # the burst window makes the next request wait < 1 s: not logged
        await pacer.acquire("create_event")
    assert slept[1:] and all(s <= 1.0 for s in slept[1:]) and caplog.records == []


@pytest.mark.parametrize(("preset", "expected"), [(None, "120"), ("7", "7")])
def test_cli_raises_the_ephemeral_server_startup_timeout_unless_set(preset: str | None, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}
    if preset is not None:
        env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = preset
    code = (
        "import klaviyo_segment.cli.app\n"
        "from prefect.settings import get_current_settings\n"
        "print(get_current_settings().server.ephemeral.startup_timeout_seconds)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected
