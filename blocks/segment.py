"""Segment HTTP Tracking API credentials as a Prefect block.

Why a block: several Segment sources (and so several write keys) can be configured side by side as block
documents, and the Prefect UI shows and edits them without code. The block holds configuration only; requests
are made by :class:`klaviyo_segment.clients.segment.SegmentClient`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import httpx
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from klaviyo_segment.constants import SEGMENT_LIBRARY_NAME, SEGMENT_REGIONS
from klaviyo_segment.tls import shared_ssl_context

SegmentRegion = Literal["us", "eu"]


class SegmentCredentials(Block):
    """Credentials for sending track/identify/batch calls to Segment's HTTP Tracking API.

    Examples:
        Load a saved document and send a batch:
        ```python
        from klaviyo_segment.blocks import SegmentCredentials

        credentials = SegmentCredentials.load("BLOCK_NAME")
        async with credentials.get_client() as client:
            await client.post("/v1/batch", json={"batch": []})
        ```
    """

    _block_type_name: ClassVar[str] = "Segment Credentials"
    _logo_url = "https://segment.com/favicon.ico"  # type: ignore[assignment]  # Prefect types it HttpUrl
    _documentation_url = "https://segment.com/docs/connections/sources/catalog/libraries/server/http-api/"  # type: ignore[assignment]  # noqa: E501

    write_key: SecretStr = Field(
        default=..., description="Write key of the Segment source; sent as the Basic auth username."
    )
    region: SegmentRegion = Field(
        default="us", description="Segment region of the workspace: us or eu (data sent to the wrong one is rejected)."
    )
    base_url: str | None = Field(
        default=None,
        description="Explicit API base URL without /v1; wins over region (used by the sandbox and tests).",
    )
    shared_secret: SecretStr | None = Field(
        default=None, description="Shared secret Segment uses to sign webhook deliveries (X-Signature header)."
    )
    timeout: float = Field(default=15.0, gt=0, description="Per-request timeout in seconds.")

    @field_validator("base_url")
    @classmethod
    def _strip_base_url(cls, value: str | None) -> str | None:
        # Users paste URLs with a trailing slash or even /v1; requests add /v1 themselves.
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        return value[: -len("/v1")] if value.endswith("/v1") else value

    @property
    def resolved_base_url(self) -> str:
        """An explicit ``base_url`` wins over ``region`` so the sandbox can stand in for either region."""
        return self.base_url or SEGMENT_REGIONS[self.region]

    def get_client(self) -> httpx.AsyncClient:
        """A configured client: Basic auth carries the write key so it never appears in logged bodies."""
        return httpx.AsyncClient(
            base_url=self.resolved_base_url,
            auth=httpx.BasicAuth(self.write_key.get_secret_value(), ""),
            headers={"Content-Type": "application/json", "User-Agent": SEGMENT_LIBRARY_NAME},
            timeout=httpx.Timeout(self.timeout),
            limits=httpx.Limits(max_keepalive_connections=10, max_connections=20),
            verify=shared_ssl_context(),
        )
