"""Shared flow-test set-up: flows run as real Prefect flow runs against the real sandbox and a fresh store.

``flow_env`` wires the environment to the shared (reset) sandbox; ``wire`` points it at another sandbox (e.g.
one from ``sandbox_factory(strict_bulk=True)``). ``FlowSandbox`` reads the sandbox's inspection API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from klaviyo_segment.devkit.sandbox.server import Sandbox
from tests.fixtures.sandbox import klaviyo_headers


class FlowSandbox:
    """The Klaviyo emulator a flow test talks to, plus the state-store URL the flow uses."""

    def __init__(self, box: Sandbox, store_url: str) -> None:
        self.box = box
        self.store_url = store_url
        self.http = httpx.Client(base_url=box.klaviyo_url, headers=klaviyo_headers(box.klaviyo_api_key), timeout=10)

    def configure(self, **switches: Any) -> None:
        """Runtime switches of the sandbox: faults, strict_bulk, rate_limits, scopes."""
        self.http.post("/__sandbox/config", json=switches).raise_for_status()

    def profiles(self) -> list[dict[str, Any]]:
        return self.http.get("/__sandbox/profiles").json()

    def profile(self, **attrs: Any) -> dict[str, Any] | None:
        """The one profile whose attributes match ``attrs`` (None if absent; two is a test failure)."""
        found = [p for p in self.profiles() if all(p["attributes"].get(k) == v for k, v in attrs.items())]
        assert len(found) <= 1, f"several profiles match {attrs}"
        return found[0] if found else None

    def events(self, metric: str | None = None) -> list[dict[str, Any]]:
        return self.http.get("/__sandbox/events", params={"metric": metric} if metric else None).json()

    def summary(self) -> dict[str, Any]:
        return self.http.get("/__sandbox").json()

    def stats(self) -> dict[str, Any]:
        return self.http.get("/__sandbox/stats").json()

    @asynccontextmanager
    async def store(self) -> AsyncIterator[Any]:
        """The flow's state store, opened for assertions (or to seed state) and closed again."""
        from klaviyo_segment.store import Store

        store = await Store.open(self.store_url)
        try:
            yield store
        finally:
            await store.close()

    def close(self) -> None:
        self.http.close()


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Transient-fault tests exercise the real retry loop; only the waits between attempts are shortened."""
    from klaviyo_segment.clients.retry import RetryPolicy

    monkeypatch.setattr(RetryPolicy, "backoff", lambda self, attempt: 0.01)


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[[Sandbox], FlowSandbox]]:
    """Point KLAVIYO_*/SEGMENT_* and the store URL at a sandbox; returns its FlowSandbox."""
    opened: list[FlowSandbox] = []

    def to(box: Sandbox) -> FlowSandbox:
        monkeypatch.setenv("KLAVIYO_API_KEY", box.klaviyo_api_key)
        monkeypatch.setenv("KLAVIYO_BASE_URL", box.klaviyo_url)
        monkeypatch.setenv("SEGMENT_WRITE_KEY", box.segment_write_key)
        monkeypatch.setenv("SEGMENT_BASE_URL", box.segment_url)
        monkeypatch.setenv("KLAVIYO_SEGMENT_STORE_URL", f"sqlite:///{tmp_path}/state.db")
        fs = FlowSandbox(box, f"sqlite:///{tmp_path}/state.db")
        opened.append(fs)
        return fs

    yield to
    for fs in opened:
        fs.close()


@pytest.fixture
def flow_env(
    sandbox: Sandbox, klaviyo: httpx.Client, prefect_server: str, wire: Callable[[Sandbox], FlowSandbox]
) -> FlowSandbox:
    """The shared sandbox (reset by the ``klaviyo`` fixture), a fresh store, and a real Prefect server."""
    return wire(sandbox)


def _by_id(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["message_id"]: o for o in result["outcomes"]}


@pytest.fixture
def by_id() -> Callable[[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Outcomes of a flow result keyed by message id (a fixture: tests/flows is not an importable package)."""
    return _by_id
