"""``klaviyo-segment dead-letters``: list/show/purge against a real SQLite store, replay as a real flow run."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from klaviyo_segment.cli.app import app
from klaviyo_segment.cli.commands.dead_letters import format_age, parse_duration
from klaviyo_segment.errors import ConfigError
from klaviyo_segment.store import DeadLetterIn, Store


@pytest.fixture
def store_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path}/state.db"
    monkeypatch.setenv("KLAVIYO_SEGMENT_STORE_URL", url)

    async def seed() -> None:
        store = await Store.open(url)
        try:
            await store.add_dead_letters(
                [
                    DeadLetterIn(
                        flow="forward-track",
                        message={"type": "track", "email": "eve@example.com"},
                        message_id="m-1",
                        reason="invalid data",
                        error={"status": 400, "detail": "bad"},
                    ),
                    DeadLetterIn(flow="backfill-profiles", message={"row": 3}, message_id="row-3", reason="no id"),
                ]
            )
        finally:
            await store.close()

    asyncio.run(seed())
    return url


def _lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_list_show_and_purge(store_url: str) -> None:
    runner = CliRunner()
    listed = _lines(runner.invoke(app, ["dead-letters", "list", "--json"]).stdout)
    assert sorted(d["message_id"] for d in listed) == ["m-1", "row-3"]  # same instant: id order
    listed.sort(key=lambda d: d["message_id"])
    assert set(listed[0]) >= {"id", "message_id", "flow", "reason", "created_at"}
    only = _lines(runner.invoke(app, ["dead-letters", "list", "--flow", "forward-track", "--json"]).stdout)
    assert [d["flow"] for d in only] == ["forward-track"]
    table = runner.invoke(app, ["dead-letters", "list"])
    assert table.exit_code == 0 and listed[0]["id"] in table.stdout and "invalid data" in table.stdout

    shown = runner.invoke(app, ["dead-letters", "show", listed[0]["id"]])
    record = json.loads(shown.stdout)
    assert record["message"]["email"] == "eve@example.com" and record["error"]["status"] == 400
    missing = runner.invoke(app, ["dead-letters", "show", "nope"])
    assert missing.exit_code == 1

    bad = runner.invoke(app, ["dead-letters", "purge", "--older-than", "7 days"])
    assert isinstance(bad.exception, ConfigError)  # app.main turns it into exit 2
    assert "purged 0" in runner.invoke(app, ["dead-letters", "purge", "--older-than", "1d"]).stdout
    assert "purged 2" in runner.invoke(app, ["dead-letters", "purge"]).stdout
    assert runner.invoke(app, ["dead-letters", "list", "--json"]).stdout.strip() == ""


def test_replay_exit_code(store_url: str, prefect_server: str) -> None:
    result = CliRunner().invoke(app, ["dead-letters", "replay", "--flow", "backfill-profiles", "--json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.exit_code == 1 and summary["remaining"] == 1 and summary["resolved"] == 0


def test_durations() -> None:
    assert parse_duration("12h").total_seconds() == 12 * 3600
    assert parse_duration("7d").days == 7
    with pytest.raises(ConfigError):
        parse_duration("soon")
    from datetime import datetime, timedelta

    now = datetime.now(UTC)
    assert format_age(now - timedelta(hours=5), now) == "5h" and format_age(now, now) == "0s"
