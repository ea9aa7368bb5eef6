"""The ``Store`` facade: one object per process, shared by flows, the receiver and the CLI."""

from __future__ import annotations

from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncEngine

from klaviyo_segment.store.dead_letters import DeadLetterMixin
from klaviyo_segment.store.engine import create_engine, default_url
from klaviyo_segment.store.identity import IdentityMixin
from klaviyo_segment.store.inbox import InboxMixin
from klaviyo_segment.store.migrations import migrate
from klaviyo_segment.store.people import PeopleMixin
from klaviyo_segment.store.privacy import PrivacyMixin
from klaviyo_segment.store.state import StateMixin


class Store(InboxMixin, DeadLetterMixin, StateMixin, IdentityMixin, PrivacyMixin, PeopleMixin):
    """Durable state on SQLite (default, embedded) or PostgreSQL (several workers/hosts).

    Open with ``await Store.open(url)`` (or ``async with await Store.open() as store``); the schema is migrated
    on open. Every method is one transaction; nothing here logs stored values (they are PII).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @classmethod
    async def open(cls, url: str | None = None, *, migrate_schema: bool = True) -> Store:
        engine = create_engine(url or default_url())
        try:
            if migrate_schema:
                await migrate(engine)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def close(self) -> None:
        await self._engine.dispose()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"
