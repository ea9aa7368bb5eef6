"""``klaviyo-segment run`` on a file too big for flow-run parameters: staged in the store, runs get batch ids."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from klaviyo_segment.errors import ConfigError

NOW = datetime.now(UTC).replace(microsecond=0)


def _message(i: int) -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": f"big-{i}",
        "userId": f"u{i % 997}",
        "event": "Product Viewed",
        "properties": {"product_id": f"p{i % 50}", "price": 10},
        "context": {"traits": {"email": f"person{i % 997}@pii.example.com"}},
        "timestamp": (NOW - timedelta(minutes=5)).isoformat().replace("+00:00", "Z"),
    }


async def _flow_runs(flow: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    async with get_client() as client:
        return await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow])), limit=200)


@pytest.mark.slow
def test_run_20000_messages_stages_batches_and_keeps_pii_out_of_prefect(flow_env: Any, tmp_path: Path) -> None:
    """The issue's case: 20,000 messages inline were 5 MB of flow-run parameters (Prefect's 422)."""
    _run_and_check(flow_env, tmp_path, 20_000, [])


def test_run_stages_small_batches_across_several_flow_runs(flow_env: Any, tmp_path: Path) -> None:
    """The same path with tiny batches, fast enough for every test run."""
    _run_and_check(flow_env, tmp_path, 38, ["--batch-size", "8"])  # 40 lines: 5 batches


def _run_and_check(flow_env: Any, tmp_path: Path, count: int, options: list[str]) -> None:
    from klaviyo_segment.cli.app import app

    before = {r.id for r in asyncio.run(_flow_runs("forward-track"))}
    path = tmp_path / "big.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for i in range(count):
            out.write(json.dumps(_message(i)) + "\n")
        out.write("{broken\n")  # still one failed message, not a refused file
        out.write(json.dumps(_message(0)) + "\n")  # a repeat of an already delivered messageId
    result = CliRunner().invoke(
        app, ["run", "forward-track", "--input", str(path), "--json", "--batches-per-run", "2", *options]
    )
    assert result.exit_code == 1, result.output  # the broken line is a failed message
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert {k: summary[k] for k in ("flow", "received", "sent", "skipped", "failed")} == {
        "flow": "forward-track",
        "received": count + 2,
        "sent": count,
        "skipped": 1,
        "failed": 1,
    }
    # stderr is no terminal here: plain progress lines (a CI log or a file gets them as the run goes)
    assert f"forward-track (messages): {count + 2:,} of {count + 2:,} (100%)" in result.stderr
    assert "staging (bytes):" in result.stderr
    assert sum(summary["reasons"].values()) == 2 and any(
        r.startswith("failed:malformed JSON") for r in summary["reasons"]
    )
    assert flow_env.summary()["events"] == count
    runs = [r for r in asyncio.run(_flow_runs("forward-track")) if r.id not in before]
    assert len(runs) == 3  # 5 batches (the last one holds the 2 extra lines), 2 batches per run
    for run in runs:
        assert run.parameters["batch_ids"] and run.parameters.get("messages") is None
        assert "@" not in json.dumps(run.parameters) and len(run.parameters["batch_ids"]) <= 2
        assert run.state is not None and run.state.type.value in ("COMPLETED", "FAILED")
    # exactly one run holds the broken line: PartlyFailed, or Failed when it holds nothing else that was sent
    failed = [r for r in runs if r.state is not None and not r.state.is_completed()]
    assert len(failed) == 1 and failed[0].state.name in ("PartlyFailed", "Failed"), [r.state for r in runs]

    async def batches() -> list[Any]:
        async with flow_env.store() as store:
            ids = [i for r in runs for i in r.parameters["batch_ids"]]
            return await store.get_batches(ids)

    staged = asyncio.run(batches())
    assert (
        len(staged) == 5
        and sum(b.size for b in staged) == count + 2
        and {b.status for b in staged} <= {"done", "partial"}
    )


def test_run_refuses_a_broken_json_array_and_stages_nothing(flow_env: Any, tmp_path: Path) -> None:
    from klaviyo_segment.cli.app import app

    path = tmp_path / "broken.json"
    path.write_text("[" + ",".join(json.dumps(_message(i)) for i in range(30)) + ", {oops", encoding="utf-8")
    result = CliRunner().invoke(app, ["run", "forward-track", "--input", str(path), "--batch-size", "10"])
    assert isinstance(result.exception, ConfigError), result.output  # main() turns it into exit 2

    async def backlog() -> dict[str, int]:
        async with flow_env.store() as store:
            return await store.backlog()

    assert asyncio.run(backlog()) == {}
    assert flow_env.summary()["events"] == 0
