"""MappingTables block and `blocks apply|show` against the session's real Prefect server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from klaviyo_segment.blocks.mapping import MappingTables
from klaviyo_segment.cli.app import app

pytestmark = pytest.mark.prefect


def test_blocks_apply_and_show(prefect_server: str, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("track: {deny: ['Test *']}\nklaviyo: {api_key: pk_never_stored}\n"
                      "onboarding: {list_id: L1}\n", encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(app, ["blocks", "apply", "--config", str(config), "--name", "mapping-test"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output.strip().splitlines()[-1])
    assert printed["name"] == "mapping-test" and printed["block_type"] == "Klaviyo Segment Mapping Tables"
    block = MappingTables.load("mapping-test")
    assert block.document["track"] == {"deny": ["Test *"]}
    assert "pk_never_stored" not in json.dumps(block.document)
    assert block.to_config().compiled().track_filter.check({"event": "Test Ping"}) == "filtered: event in deny list"
    assert block.to_config().onboarding.list_id == "L1"
    shown = runner.invoke(app, ["blocks", "show", "--name", "mapping-test"])
    assert shown.exit_code == 0 and json.loads(shown.output)["onboarding"] == {"list_id": "L1"}


def test_blocks_apply_rejects_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("track: {alow: []}\n", encoding="utf-8")
    from klaviyo_segment.errors import ConfigError

    result = CliRunner().invoke(app, ["blocks", "apply", "--config", str(config)])
    assert isinstance(result.exception, ConfigError) and "track.alow: unknown key" in str(result.exception)


def test_block_validates_document() -> None:
    with pytest.raises(ValueError, match="churn.list: unknown key"):
        MappingTables(document={"churn": {"list": "x"}})
    assert MappingTables().to_config().compiled().track.names == ["ecommerce", "track-default"]
