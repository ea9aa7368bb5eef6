"""Store errors never carry PII (issue 17, item 7): SQLAlchemy puts SQL parameters into its exception text, and
that text reached a flow-run state message, a Prefect log row and stderr with unmasked email addresses."""

from __future__ import annotations

import logging
import traceback

import pytest
import sqlalchemy as sa

from klaviyo_segment.store import Store

EMAIL = "secret.person@example.com"


async def _break_aliases(store: Store) -> None:
    async with store._engine.begin() as conn:  # a store that fails on the next write of an email
        await conn.execute(sa.text("DROP TABLE ks_aliases"))
        await conn.execute(
            sa.text(
                "CREATE TABLE ks_aliases (anonymous_id TEXT PRIMARY KEY, "
                "data TEXT NOT NULL CHECK (length(data) < 5), updated_us BIGINT NOT NULL)"
            )
        )


async def test_store_error_text_and_traceback_hold_no_email(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    await _break_aliases(store)
    with pytest.raises(Exception) as caught:
        await store.put_aliases({"anon-1": {"user_id": "u1", "email": EMAIL}})
    shown = "".join(traceback.format_exception(caught.value))
    assert "ks_aliases" in shown  # still says what failed
    assert EMAIL not in shown and "secret.person" not in shown, shown
    logging.getLogger("klaviyo_segment.test").error("store failed", exc_info=caught.value)
    assert "secret.person" not in caplog.text


async def test_engine_hides_parameters(store: Store) -> None:
    assert store._engine.sync_engine.hide_parameters is True


async def test_store_error_is_typed_and_keeps_the_kind(store: Store) -> None:
    from klaviyo_segment.store import StoreError

    await _break_aliases(store)
    with pytest.raises(StoreError) as caught:
        await store.put_aliases({"anon-2": {"email": EMAIL}})
    assert caught.value.kind == "IntegrityError"
    assert caught.value.__suppress_context__  # the driver exception (it may quote values) is not chained
    assert "hidden" in str(caught.value)  # hide_parameters: the values are not even formatted
