"""A migrated, empty store per test and per backend (see ``store_url`` in tests/fixtures/postgres.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from klaviyo_segment.store import Store


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = await Store.open(store_url)
    try:
        yield opened
    finally:
        await opened.close()
