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
    config.write_text(
        "track: {deny: ['Test *']}\nklaviyo: {api_key: pk_never_stored}\nonboarding: {list_id: L1}\n", encoding="utf-8"
    )
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


def test_block_is_typed_so_the_ui_renders_a_form() -> None:
    schema = MappingTables.model_json_schema()
    assert {"templates", "track", "onboarding", "churn", "audiences"} <= set(schema["properties"])
    assert "document" not in schema["properties"]
    assert {"klaviyo", "segment", "store"}.isdisjoint(schema["properties"])  # credentials have their own blocks
    assert schema["properties"]["track"]["$ref"].endswith("/TrackConfig")
    block = MappingTables(track={"deny": ["Test *"]}, churn={"list_id": "L9"})
    assert block.track.deny == ["Test *"] and block.document == {
        "track": {"deny": ["Test *"]},
        "churn": {"list_id": "L9"},
    }


def test_old_document_blocks_still_load() -> None:
    old = MappingTables.model_validate({"document": {"onboarding": {"list_id": "L1"}, "track": {"deny": ["x"]}}})
    assert old.onboarding.list_id == "L1" and old.to_config().track.deny == ["x"]


async def test_a_typo_saved_through_the_api_names_the_key(prefect_server: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import BlockDocumentCreate

    from klaviyo_segment.errors import ConfigError
    from klaviyo_segment.runtime import load_flow_config
    from klaviyo_segment.settings import load_saved_block

    await MappingTables.aregister_type_and_schema()
    async with get_client() as client:
        block_type = await client.read_block_type_by_slug(MappingTables.get_block_type_slug())
        schema = await client.get_most_recent_block_schema_for_block_type(block_type.id)
        assert schema is not None
        # what the UI's JSON editor (or an old untyped block) can store: no client-side validation
        created = await client.create_block_document(
            BlockDocumentCreate(
                name="typo", data={"track": {"alow": ["*"]}}, block_schema_id=schema.id, block_type_id=block_type.id
            )
        )
        legacy = await client.create_block_document(
            BlockDocumentCreate(
                name="legacy",
                data={"document": {"churn": {"list_id": "L_OLD"}}},
                block_schema_id=schema.id,
                block_type_id=block_type.id,
            )
        )
    try:
        with pytest.raises(ConfigError) as caught:
            load_saved_block(MappingTables, "typo")
        assert str(caught.value) == "mapping tables block 'typo': track.alow: unknown key"
        with pytest.raises(ConfigError, match="track.alow: unknown key"):
            load_flow_config(None, "typo")
        assert "PREFECT_API_URL" not in str(caught.value)
        assert load_flow_config(None, "legacy").churn.list_id == "L_OLD"
    finally:
        async with get_client() as client:
            await client.delete_block_document(created.id)
            await client.delete_block_document(legacy.id)
