"""Klaviyo credentials block: configuration only, so flows can target several Klaviyo accounts by document name."""

from __future__ import annotations

import hashlib

import httpx
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from klaviyo_segment import constants
from klaviyo_segment.tls import shared_ssl_context


class KlaviyoCredentials(Block):
    """Private API key and connection settings for one Klaviyo account.

    Several Klaviyo accounts are several documents of this block; nothing assumes one global account.

    Examples:
        Load stored Klaviyo credentials:
        ```python
        from klaviyo_segment.blocks import KlaviyoCredentials
        klaviyo_credentials_block = KlaviyoCredentials.load("BLOCK_NAME")
        ```
    """

    _block_type_name = "Klaviyo Credentials"
    _logo_url = "https://images.ctfassets.net/gm98wzqotmnx/klaviyo-logo/klaviyo.png"  # type: ignore[assignment]  # Prefect types it HttpUrl; a str validates
    _documentation_url = "https://developers.klaviyo.com/en/reference/api_overview"  # type: ignore[assignment]

    api_key: SecretStr = Field(
        default=..., description="Klaviyo private API key (starts with pk_), sent as Klaviyo-API-Key."
    )
    revision: str = Field(
        default=constants.KLAVIYO_REVISION,
        description="Klaviyo API revision sent in the revision header; request bodies follow this revision.",
    )
    base_url: str = Field(
        default=constants.KLAVIYO_BASE_URL,
        description="Base URL of the Klaviyo API without /api; the sandbox and tests override it.",
    )
    timeout_seconds: float = Field(default=30.0, gt=0, description="Timeout of one HTTP request in seconds.")
    webhook_secret: SecretStr | None = Field(
        default=None, description="Signing secret of Klaviyo system webhooks (Klaviyo-Signature), if used."
    )

    @field_validator("api_key")
    @classmethod
    def _private_key_only(cls, value: SecretStr) -> SecretStr:
        """Public site ids and OAuth tokens fail later with confusing 401s; reject them at configuration time."""
        if not value.get_secret_value().startswith("pk_"):
            raise ValueError(
                "api_key must be a Klaviyo private API key starting with 'pk_' (the 6-character "
                "public site id cannot call the server API)"
            )
        return value

    @property
    def account_key(self) -> str:
        """A stable, non-secret id of the account, used to key per-account rate limiting and caches."""
        digest = hashlib.sha256(self.api_key.get_secret_value().encode()).hexdigest()[:16]
        return f"{self.base_url.rstrip('/')}#{digest}"

    def headers(self) -> dict[str, str]:
        """Headers every Klaviyo request needs; the key only ever leaves through here."""
        return {
            "Authorization": f"Klaviyo-API-Key {self.api_key.get_secret_value()}",
            "revision": self.revision,
            "Accept": constants.JSONAPI_CONTENT_TYPE,
            "Content-Type": constants.JSONAPI_CONTENT_TYPE,
        }

    def get_client(self) -> httpx.AsyncClient:
        """A configured async client; keep-alive matters because batches issue many requests to one host."""
        return httpx.AsyncClient(
            base_url=self.base_url.rstrip("/"),
            headers=self.headers(),
            timeout=httpx.Timeout(self.timeout_seconds),
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=20, keepalive_expiry=30.0),
            verify=shared_ssl_context(),
        )
