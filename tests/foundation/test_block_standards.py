"""Prefect's own block standards for every block we ship, and registration with `prefect block register`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite

from klaviyo_segment.blocks import KlaviyoCredentials, MappingTables, SegmentCredentials, StateStore

BLOCKS = [KlaviyoCredentials, SegmentCredentials, MappingTables, StateStore]


class TestBlockStandards(BlockStandardTestSuite):
    @pytest.fixture(params=BLOCKS, ids=lambda b: b.__name__)
    def block(self, request: pytest.FixtureRequest) -> type[Block]:
        return request.param

    def test_has_a_valid_image(self, block: type[Block]) -> None:
        """Overridden: the upstream check downloads the logo, and the suite must run offline."""
        assert str(block._logo_url).startswith("https://")


@pytest.mark.slow
def test_prefect_block_register_module(prefect_server: str) -> None:
    """The README's `prefect block register -m klaviyo_segment.blocks` registers all four block types."""
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "register", "-m", "klaviyo_segment.blocks"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "type", "ls"], env=env, capture_output=True, text=True, timeout=180
    )
    assert listed.returncode == 0, listed.stderr
    text = " ".join(listed.stdout.split())
    for block in BLOCKS:
        assert block.get_block_type_slug() in text.replace("\n", " ") or block._block_type_name in text
