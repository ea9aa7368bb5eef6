"""Chaos, CI-sized: a generated stream through the receiver and dispatcher while the sandbox injects 5xx, 429s,
resets, lost 202s and latency. Nothing may be applied twice and every dead letter must say why."""

from __future__ import annotations

import os

import pytest


from klaviyo_segment.cli.commands.chaos import run_chaos

MESSAGES = int(os.environ.get("KS_CHAOS_MESSAGES", "20000"))


@pytest.mark.timeout(900)
async def test_chaos_run(prefect_server: str) -> None:
    figures = await run_chaos(MESSAGES, max_seconds=600, rate_scale=10.0)
    print(f"\nchaos figures: {figures}")
    assert figures["faults"].get("503", 0) > 0 and figures["faults"].get("reset", 0) > 0
    assert figures["worker_kills"] == 1
    assert figures["duplicate_events"] == 0
    assert figures["dead_letters_without_reason"] == 0
    assert figures["invalid"] > 0
    assert figures["dead_letters_not_invalid"] == [] and figures["invalid_not_dead_lettered"] == []
