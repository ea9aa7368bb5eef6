"""The StateStore block opens the configured store, keeps its URL secret and applies its retention settings."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from klaviyo_segment.blocks.store import StateStore


async def test_block_opens_configured_store_and_purges(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'blk.db'}"
    block = StateStore(url=SecretStr(url), done_retention_days=0, records_retention_days=0)
    assert str(tmp_path) not in repr(block)  # URLs can carry passwords
    store = await block.open()
    try:
        await store.claim_once(["k"])
        await store.apply_versions({"v": datetime(2025, 1, 1)})
    finally:
        await store.close()
    assert (tmp_path / "blk.db").exists()
    removed = await block.purge()
    assert removed["versions"] == 1


async def test_block_without_url_uses_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLAVIYO_SEGMENT_STORE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    store = await StateStore().open()
    await store.close()
    assert (tmp_path / "env.db").exists()


def test_block_metadata_follows_prefect_standards() -> None:
    assert StateStore.get_block_type_slug() == "klaviyo-segment-state-store"
    assert StateStore._documentation_url and StateStore._logo_url
    doc = StateStore.__doc__ or ""
    assert "from klaviyo_segment.blocks import StateStore" in doc and 'StateStore.load("BLOCK_NAME")' in doc
    for name, field in StateStore.model_fields.items():
        assert field.description and field.description.endswith("."), name
