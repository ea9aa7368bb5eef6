"""Fixtures for the Klaviyo task tests: one real local HTTP fake per session, reset per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from klaviyo_segment.blocks.klaviyo import KlaviyoCredentials
from klaviyo_segment.clients.klaviyo import KlaviyoClient
from klaviyo_segment.clients.pacing import InProcessPacer
from tests.tasks.fake_klaviyo import FakeKlaviyo, start


@pytest.fixture(scope="session")
async def fake_server() -> AsyncIterator[FakeKlaviyo]:
    fake = FakeKlaviyo()
    server, serving = await start(fake)
    yield fake
    server.should_exit = True
    await serving


@pytest.fixture
def fake(fake_server: FakeKlaviyo) -> FakeKlaviyo:
    fake_server.handlers.clear()
    fake_server.seen.clear()
    return fake_server


@pytest.fixture
def creds(fake: FakeKlaviyo) -> KlaviyoCredentials:
    return KlaviyoCredentials(api_key="pk_test_secret_123", base_url=fake.url, timeout_seconds=5)


async def _no_sleep(_: float) -> None:
    return None


@pytest.fixture
async def client(creds: KlaviyoCredentials) -> AsyncIterator[KlaviyoClient]:
    """Pacing scaled up so tests never wait for the 10/s tiers; the pacer has its own tests."""
    async with KlaviyoClient(creds, pacer=InProcessPacer(scale=1000), sleep=_no_sleep) as c:
        yield c
