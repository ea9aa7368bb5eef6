"""Schema migrations upgrade an older store in place, concurrent openers do not race, URLs are normalised."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa

from klaviyo_segment.errors import ConfigError
from klaviyo_segment.store import SCHEMA_VERSION, Store, default_url, normalize_url
from klaviyo_segment.store.engine import create_engine, now_us
from klaviyo_segment.store.migrations import current_version, migrate


async def test_version_1_store_is_upgraded_in_place(store_url: str) -> None:
    engine = create_engine(store_url)
    assert await migrate(engine, target=1) == 1
    now = now_us()
    async with engine.begin() as conn:  # data written by version-1 code
        await conn.execute(
            sa.text(
                "INSERT INTO ks_inbox_batches (id, flow, status, attempts, size, created_us, updated_us) "
                "VALUES ('b1', 'forward-track', 'pending', 0, 1, :n, :n)"
            ),
            {"n": now},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO ks_inbox_messages (batch_id, pos, message_id, body) "
                "VALUES ('b1', 0, 'm1', '{\"messageId\":\"m1\"}')"
            )
        )
        await conn.execute(
            sa.text("INSERT INTO ks_versions (key, version_us, updated_us) VALUES ('k', :v, :n)"), {"v": now, "n": now}
        )
        await conn.execute(
            sa.text("INSERT INTO ks_cursors (name, value, updated_us) VALUES ('c', 'v1', :n)"), {"n": now}
        )
        with pytest.raises(sa.exc.DBAPIError):  # the v2 table does not exist yet
            async with conn.begin_nested():
                await conn.execute(sa.text("SELECT * FROM ks_kv"))
    await engine.dispose()

    async with await Store.open(store_url) as store:
        assert await current_version(store.engine) == SCHEMA_VERSION == 3
        assert await store.get_cursor("c") == "v1"
        assert [i.id for i in await store.pending_batches()] == ["b1"]
        await store.mark_dispatched(["b1"], "run-9")  # v2 column on a v1 row
        [batch] = await store.lease(["b1"], "w", 30)
        assert batch.messages == [{"messageId": "m1"}]
        assert (await store.get_batches(["b1"]))[0].dispatched_run_id == "run-9"
        await store.put_values({"x": 1})
        assert await store.get_values(["x"]) == {"x": 1}
    async with await Store.open(store_url) as again:  # reopening is a no-op
        assert await again.get_cursor("c") == "v1"


async def test_concurrent_openers_migrate_once(store_url: str) -> None:
    stores = await asyncio.gather(*(Store.open(store_url) for _ in range(4)))
    try:
        async with stores[0].engine.connect() as conn:
            rows = (await conn.execute(sa.text("SELECT version FROM ks_schema_version ORDER BY version"))).all()
        assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))
    finally:
        for s in stores:
            await s.close()


def test_url_normalisation_and_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert normalize_url("postgresql://u:p@h/db").drivername == "postgresql+asyncpg"
    assert normalize_url("postgresql+asyncpg://u@h/db").drivername == "postgresql+asyncpg"
    assert normalize_url(f"sqlite:///{tmp_path}/a/b.db").drivername == "sqlite+aiosqlite"
    assert (tmp_path / "a").is_dir()  # parent directory created for the embedded file
    assert normalize_url("sqlite+aiosqlite:///:memory:").database == ":memory:"
    with pytest.raises(ConfigError, match="KLAVIYO_SEGMENT_STORE_URL"):
        normalize_url("mysql://h/db")
    with pytest.raises(ConfigError):
        normalize_url("not a url")
    monkeypatch.setenv("KLAVIYO_SEGMENT_HOME", str(tmp_path / "home"))
    assert default_url() == f"sqlite:///{tmp_path / 'home' / 'state.db'}"
    monkeypatch.setenv("KLAVIYO_SEGMENT_STORE_URL", "postgresql://x/y")
    assert default_url() == "postgresql://x/y"


async def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    async with await Store.open(f"sqlite:///{tmp_path / 's.db'}") as store:
        async with store.engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() >= 1000
        assert "s.db" in repr(store)


async def test_password_is_masked_in_repr() -> None:
    engine_url = normalize_url("postgresql://user:s3cret@127.0.0.1:1/db")
    assert "s3cret" not in engine_url.render_as_string(hide_password=True)
    store = Store(create_engine("postgresql://user:s3cret@127.0.0.1:1/db"))
    assert "s3cret" not in repr(store) and "***" in repr(store)
    await store.close()
