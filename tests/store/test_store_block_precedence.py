"""The saved State Store block is the store the flows use (flag > env > config > block > default SQLite), and a
pool worker on a local SQLite file says so in the run's logs."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import SecretStr

from klaviyo_segment.blocks.store import StateStore
from klaviyo_segment.errors import ConfigError
from klaviyo_segment.settings import resolve_store_url, warn_if_local_store_on_pool


def _loader(url: str | None) -> Any:
    def load(cls: type[Any], name: str) -> Any:
        assert cls is StateStore and name == "default"
        return StateStore(url=SecretStr(url)) if url else None

    return load


def test_precedence_flag_env_config_block_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLAVIYO_SEGMENT_HOME", str(tmp_path))
    block = _loader("postgresql+asyncpg://u:p@db/state")
    assert resolve_store_url(loader=_loader(None)) == f"sqlite:///{tmp_path / 'state.db'}"
    assert resolve_store_url(loader=block) == "postgresql+asyncpg://u:p@db/state"
    config = {"store": {"url": "sqlite:///config.db"}}
    assert resolve_store_url({}, config, loader=block) == "sqlite:///config.db"
    monkeypatch.setenv("KLAVIYO_SEGMENT_STORE_URL", "sqlite:///env.db")
    assert resolve_store_url({}, config, loader=block) == "sqlite:///env.db"
    assert resolve_store_url({"store_url": "sqlite:///flag.db"}, config, loader=block) == "sqlite:///flag.db"


def test_unreachable_prefect_is_an_error_not_a_silent_local_file() -> None:
    def broken(cls: type[Any], name: str) -> Any:
        raise ConfigError("could not load the StateStore block 'default' from Prefect (ConnectError)")

    with pytest.raises(ConfigError, match=r"state store: could not load .* \$KLAVIYO_SEGMENT_STORE_URL"):
        resolve_store_url(loader=broken)


async def test_saved_block_url_is_what_resolve_returns(
    prefect_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client

    monkeypatch.setenv("KLAVIYO_API_KEY", "pk_test_store_block")
    monkeypatch.setenv("KLAVIYO_SEGMENT_HOME", str(tmp_path / "home"))

    url = f"sqlite:///{tmp_path / 'from-block.db'}"
    await StateStore(url=SecretStr(url)).asave("default", overwrite=True)
    try:
        assert resolve_store_url() == url
        from klaviyo_segment.runtime import open_env

        async with open_env("forward-track", {}, http=None) as env:  # what every flow run opens
            assert str(env.store._engine.url).endswith("from-block.db")
        assert (tmp_path / "from-block.db").exists()
    finally:
        async with get_client() as client:
            saved = await client.read_block_document_by_name("default", StateStore.get_block_type_slug())
            await client.delete_block_document(saved.id)


def test_pool_worker_on_local_sqlite_warns(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from prefect.context import FlowRunContext

    assert warn_if_local_store_on_pool("sqlite:///x.db") is False  # not in a run
    run = SimpleNamespace(flow_run=SimpleNamespace(work_pool_name="klaviyo-segment"))
    monkeypatch.setattr(FlowRunContext, "get", classmethod(lambda cls: run))
    with caplog.at_level(logging.WARNING, logger="klaviyo_segment.settings"):
        assert warn_if_local_store_on_pool("sqlite:///x.db") is True
        assert warn_if_local_store_on_pool("postgresql+asyncpg://db/state") is False
    assert "do not span workers" in caplog.text and "'klaviyo-segment'" in caplog.text
    served = SimpleNamespace(flow_run=SimpleNamespace(work_pool_name=None))  # serve's own runner: one process
    monkeypatch.setattr(FlowRunContext, "get", classmethod(lambda cls: served))
    assert warn_if_local_store_on_pool("sqlite:///x.db") is False
