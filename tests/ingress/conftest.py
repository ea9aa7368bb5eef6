"""``serve --config`` saves the config as the session Prefect server's 'default' Mapping Tables block (what workers
load); remove it after each test that used the server, so later tests' flow runs see the defaults again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _drop_default_mapping_block(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "prefect_server" not in request.fixturenames:
        return
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from klaviyo_segment.blocks.mapping import MappingTables

    with get_client(sync_client=True) as client:
        try:
            saved = client.read_block_document_by_name("default", MappingTables.get_block_type_slug())
        except ObjectNotFound:
            return
        client.delete_block_document(saved.id)
