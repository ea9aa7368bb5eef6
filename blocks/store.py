"""Prefect block naming the state store, so deployments share one configured database."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

if TYPE_CHECKING:
    from klaviyo_segment.store import Store


class StateStore(Block):
    """Where the Segment-Klaviyo flows keep durable state: inbox batches, dead letters, cursors and caches.

    Leave the URL empty to use ``KLAVIYO_SEGMENT_STORE_URL`` or the embedded SQLite file. Use PostgreSQL when
    several workers or hosts run the flows.

    Examples:
        Load the saved state store and open it:
        ```python
        from klaviyo_segment.blocks import StateStore
        state_store = StateStore.load("BLOCK_NAME")
        store = await state_store.open()
        ```
    """

    _block_type_name = "Klaviyo Segment State Store"
    _logo_url = "https://www.postgresql.org/media/img/about/press/elephant.png"  # type: ignore[assignment]  # Prefect types it HttpUrl; a str validates
    _documentation_url = "https://docs.prefect.io/integrations/prefect-klaviyo-segment"  # type: ignore[assignment]

    url: SecretStr | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the store, e.g. sqlite:///path/state.db or "
            "postgresql+asyncpg://user:password@host/db; empty uses the environment or the default file."
        ),
    )
    done_retention_days: float = Field(
        default=7.0, ge=0, description="Days finished inbox batches are kept before retention purges them."
    )
    records_retention_days: float = Field(
        default=30.0,
        ge=0,
        description="Days dedupe keys, applied versions and identity-cache entries are kept since last update.",
    )

    async def open(self) -> Store:
        """Open (and migrate) the store; the caller closes it."""
        from klaviyo_segment.store import Store

        return await Store.open(self.url.get_secret_value() if self.url else None)

    async def purge(self) -> dict[str, int]:
        """Apply this block's retention settings once (e.g. from a scheduled maintenance flow)."""
        async with await self.open() as store:
            return await store.purge(
                timedelta(days=self.done_retention_days), timedelta(days=self.records_retention_days)
            )
