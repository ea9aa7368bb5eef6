"""Shared test set-up. Fixtures live in ``tests/fixtures/*`` (one module per area, each owned by its area)."""

from __future__ import annotations

import os

import pytest

pytest_plugins = [
    "tests.fixtures.prefect_server",
    "tests.fixtures.sandbox",
    "tests.fixtures.postgres",
    "tests.fixtures.network",
]

#: Documented credential variables, plus every ``KLAVIYO_SEGMENT_*`` setting (scrubbed by prefix).
_USER_ENV = (
    "KLAVIYO_API_KEY",
    "KLAVIYO_BASE_URL",
    "KLAVIYO_WEBHOOK_SECRET",
    "SEGMENT_WRITE_KEY",
    "SEGMENT_BASE_URL",
    "SEGMENT_REGION",
    "SEGMENT_SHARED_SECRET",
    "SEGMENT_WEBHOOK_TOKEN",
)
_USER_ENV_PREFIX = "KLAVIYO_SEGMENT_"


@pytest.fixture(autouse=True)
def _clean_user_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own credentials or settings in the environment must never leak into a test."""
    for name in list(os.environ):
        if name in _USER_ENV or name.startswith(_USER_ENV_PREFIX):
            monkeypatch.delenv(name)
    # Commands invoked in-process may set it for their process (the bench CLI: WARNING); restored after each test
    # so a later test's subprocesses (a Prefect worker) do not inherit a quieter log level.
    monkeypatch.delenv("PREFECT_LOGGING_LEVEL", raising=False)


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
            if (
                proc.info["ppid"] == 1
                and "prefect.server.api.server" in cmdline
                and proc.info["create_time"] >= _SESSION_START
            ):
                proc.terminate()
        except (psutil.Error, TypeError):
            continue
