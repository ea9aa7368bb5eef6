"""Task tests run against the Klaviyo emulator (the shared ``sandbox``, reset per test by ``klaviyo``); respx
(``mock``, ``make``) only for edges the emulator cannot produce on demand."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import respx

from klaviyo_segment.blocks.klaviyo import KlaviyoCredentials
from klaviyo_segment.clients.klaviyo import KlaviyoClient
from klaviyo_segment.clients.pacing import InProcessPacer
from klaviyo_segment.devkit.sandbox.server import Sandbox


async def _no_sleep(_: float) -> None:
    return None


@pytest.fixture
async def client(sandbox: Sandbox, klaviyo: httpx.Client) -> AsyncIterator[KlaviyoClient]:
    """Pacing scaled up so tests never wait for the 10/s tiers; the pacer has its own tests. Depends on
    ``klaviyo`` so every test starts from an empty account."""
    creds = KlaviyoCredentials(api_key=sandbox.klaviyo_api_key, base_url=sandbox.klaviyo_url, timeout_seconds=5)
    async with KlaviyoClient(creds, pacer=InProcessPacer(scale=1000), sleep=_no_sleep) as c:
        yield c


def requests_to(klaviyo: httpx.Client, operation_id: str) -> int:
    """How many requests the emulator received for one operation since the reset (chunking assertions)."""
    return int(klaviyo.get("/__sandbox/stats").json()["requests"].get(operation_id, 0))


def create_profile(klaviyo: httpx.Client, **attributes: Any) -> str:
    resp = klaviyo.post("/api/profiles", json={"data": {"type": "profile", "attributes": attributes}})
    resp.raise_for_status()
    return str(resp.json()["data"]["id"])


def create_list(klaviyo: httpx.Client, name: str) -> str:
    resp = klaviyo.post("/api/lists", json={"data": {"type": "list", "attributes": {"name": name}}})
    resp.raise_for_status()
    return str(resp.json()["data"]["id"])


def sandbox_profiles(klaviyo: httpx.Client) -> dict[str, dict[str, Any]]:
    """Profile id -> resource (with subscriptions) as the emulator holds them."""
    return {p["id"]: p for p in klaviyo.get("/__sandbox/profiles").json()}


# ---- respx edges ---------------------------------------------------------------------------------------------
BASE = "https://klaviyo.test"
KEY = "pk_super_secret_key"


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as m:
        m.route(host="127.0.0.1").pass_through()
        yield m


class Sleeps(list[float]):
    """Fake sleep and clock shared by client and pacer, so a Retry-After never costs real time."""

    now = 0.0

    def clock(self) -> float:
        return self.now

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)
        self.now += seconds


def make(sleeps: Sleeps, **kw: object) -> KlaviyoClient:
    creds = KlaviyoCredentials(api_key=KEY, base_url=BASE)
    return KlaviyoClient(creds, pacer=InProcessPacer(scale=1000, clock=sleeps.clock, sleep=sleeps), sleep=sleeps, **kw)  # type: ignore[arg-type]
