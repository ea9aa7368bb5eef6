"""Shared test set-up. Fixtures live in ``tests/fixtures/*`` (one module per area, each owned by its area)."""

from __future__ import annotations

import os

import pytest

pytest_plugins = [
    "tests.fixtures.prefect_server",
    "tests.fixtures.sandbox",
    "tests.fixtures.postgres",
]

_USER_ENV = (
    "KLAVIYO_API_KEY", "KLAVIYO_BASE_URL", "KLAVIYO_WEBHOOK_SECRET", "SEGMENT_WRITE_KEY", "SEGMENT_BASE_URL",
    "SEGMENT_REGION", "SEGMENT_SHARED_SECRET", "KLAVIYO_SEGMENT_STORE_URL", "KLAVIYO_SEGMENT_INSECURE_DEV",
)


@pytest.fixture(autouse=True)
def _clean_user_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own credentials in the environment must never leak into a test."""
    for name in _USER_ENV:
        if name in os.environ:
            monkeypatch.delenv(name)
