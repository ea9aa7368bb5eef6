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
    "SEGMENT_REGION", "SEGMENT_SHARED_SECRET", "SEGMENT_WEBHOOK_TOKEN", "KLAVIYO_SEGMENT_STORE_URL", "KLAVIYO_SEGMENT_INSECURE_DEV",
)


@pytest.fixture(autouse=True)
def _clean_user_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own credentials in the environment must never leak into a test."""
    for name in _USER_ENV:
        if name in os.environ:
            monkeypatch.delenv(name)


_SESSION_START = 0.0


def pytest_sessionstart(session: pytest.Session) -> None:
    import time

    global _SESSION_START
    _SESSION_START = time.time()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop temporary Prefect servers orphaned by subprocesses a test killed on purpose (SIGKILL leaves a child's
    ephemeral server running, holding this run's output pipe open). Only orphans started during this session."""
    import psutil

    for proc in psutil.process_iter(["ppid", "cmdline", "create_time"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            if (proc.info["ppid"] == 1 and "prefect.server.api.server" in cmdline
                    and proc.info["create_time"] >= _SESSION_START):
                proc.terminate()
        except (psutil.Error, TypeError):
            continue
