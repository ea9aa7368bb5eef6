"""Mapping tables block: a deployment's config document (templates, filters, audiences, flow settings) kept in
Prefect so it can be edited in the UI and shared by deployments. Credentials are deliberately not part of it."""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from pydantic import Field, field_validator

from klaviyo_segment.config import AppConfig

DEFAULT_DOCUMENT_NAME = "default"


class MappingTables(Block):
    """Segment -> Klaviyo mapping tables: templates, track filters, audience lists and flow settings.

    The document has exactly the shape of the YAML config file (see docs/mapping.md) minus secrets; it is
    validated on save and on load, so a broken edit in the UI fails when a flow starts, not mid-stream.

    Examples:
        Load the mapping tables and compile them:
        ```python
        from klaviyo_segment.blocks import MappingTables
        mapping_tables_block = MappingTables.load("BLOCK_NAME")
        config = mapping_tables_block.to_config()
        ```
    """

    _block_type_name = "Klaviyo Segment Mapping Tables"
    _logo_url = "https://images.ctfassets.net/gm98wzqotmnx/klaviyo-logo/klaviyo.png"
    _documentation_url = "https://github.com/klaviyo-segment/klaviyo-segment/blob/main/docs/mapping.md"

    document: dict[str, Any] = Field(
        default_factory=dict,
        description="The config document (same keys as the YAML config file, without credentials).",
    )

    @field_validator("document")
    @classmethod
    def _valid_document(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Reject a document the flows could not load, naming the key (ConfigError is a ValueError here)."""
        from klaviyo_segment.errors import ConfigError

        try:
            config = AppConfig.from_document(value, source="mapping tables")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return config.mapping_document()

    def to_config(self) -> AppConfig:
        """The validated, compilable config this block holds."""
        return AppConfig.from_document(self.document, source=f"mapping tables block {self._block_document_name!r}")
