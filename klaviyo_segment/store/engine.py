"""Engine set-up shared by every store module: URL handling, SQLite pragmas, dialect-aware upserts and clocks.

All timestamps are stored as integer microseconds since the epoch (UTC) so that ordering and compare-and-set work
identically on SQLite (no native tz-aware type) and PostgreSQL. JSON payloads are stored as text for the same reason.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, overload

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from klaviyo_segment.constants import ENV_STORE_URL
from klaviyo_segment.errors import ConfigError

#: How long a SQLite writer waits for another process' write lock before failing.
SQLITE_BUSY_TIMEOUT_S = 30.0
#: Rows per multi-row statement: stays far below SQLite's and PostgreSQL's bound-parameter limits.
CHUNK = 500


def default_url() -> str:
    """Where the store lives when nothing is configured: env var first, then the embedded SQLite file."""
    from klaviyo_segment.settings import default_store_url

    return default_store_url()


def normalize_url(url: str) -> sa.URL:
    """Map the sync spellings users write to the async drivers we run on; reject anything else early (exit 2)."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigError(f"{ENV_STORE_URL}: not a database URL ({type(exc).__name__})") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            parsed = parsed.set(database=str(Path(parsed.database).expanduser()))
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    raise ConfigError(f"{ENV_STORE_URL}: unsupported database {backend!r} (use sqlite:/// or postgresql://)")


def _set_wal(cursor: Any, attempts: int = 200, pause: float = 0.05) -> None:
    """Switch a new database file to WAL. The switch needs an exclusive lock and SQLite does not call the busy
    handler for it, so processes opening one fresh file at the same moment get "database is locked" at once
    (seen in CI with four concurrent openers): retry for up to ``attempts * pause`` seconds."""
    for attempt in range(attempts):
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except Exception as exc:  # sqlite3.OperationalError, as raised through the aiosqlite adapter
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(pause)


def _install_sqlite_hooks(engine: AsyncEngine) -> None:
    """WAL + busy timeout, and BEGIN IMMEDIATE so a transaction never fails upgrading a read lock to a write lock.

    pysqlite's own implicit transactions are switched off (isolation_level=None) so SQLAlchemy's ``begin`` is the
    only place a transaction starts; that makes every store transaction a single-writer transaction.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        _set_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(url: str) -> AsyncEngine:
    """``hide_parameters``: SQLAlchemy otherwise writes every bound value (emails, phone numbers) into the text
    of its exceptions, which reach flow-run states, log rows and stderr."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S}, hide_parameters=True)
        _install_sqlite_hooks(engine)
        return engine
    return create_async_engine(parsed, pool_pre_ping=True, hide_parameters=True)


class StoreError(Exception):
    """A state-store operation failed. Its text is the database error with PII masked (``redact``) and no
    chained driver exception: a driver's message can quote values (PostgreSQL's ``DETAIL: Key (..)=(..)``)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        #: The original exception's class name (IntegrityError, OperationalError, ...), for callers and tests.
        self.kind = kind


def store_error(exc: sa.exc.SQLAlchemyError) -> StoreError:
    from klaviyo_segment.redact import redact

    text = redact(str(exc))
    return StoreError(f"state store error: {text[:2000]}", type(exc).__name__)


def now_us() -> int:
    return time.time_ns() // 1000


def to_us(value: datetime) -> int:
    """Naive datetimes are taken as UTC: Segment timestamps are UTC and silently using local time would reorder."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@overload
def from_us(value: int) -> datetime: ...
@overload
def from_us(value: None) -> None: ...
def from_us(value: int | None) -> datetime | None:
    if value is None:
        return None
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value)


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


#: Rows per executemany call. Writers pass the rows as parameters of one statement without ``.values()``: SQLAlchemy
#: compiles it once (cached) and its "insertmanyvalues" batches the rows into multi-row INSERTs, where a
#: ``.values([...])`` statement was compiled anew per call (~3 ms per 100 rows, the largest CPU cost of a
#: sync-identify run).
MANY = 5_000


def chunks(items: list[Any], size: int = CHUNK) -> Iterator[list[Any]]:
    """Multi-row writers pass rows sorted by key: concurrent PostgreSQL upserts then lock rows in one order and
    cannot deadlock each other."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


class StoreBase:
    """What every store mixin relies on: one engine and a dialect-aware INSERT for upserts."""

    _engine: AsyncEngine

    @property
    def is_postgres(self) -> bool:
        return self._engine.dialect.name == "postgresql"

    @property
    def url(self) -> str:
        """The URL with any password masked: safe to show."""
        return self._engine.url.render_as_string(hide_password=True)

    def _insert(self, table: sa.Table) -> Any:
        """``INSERT .. ON CONFLICT`` exists on both backends but under dialect-specific constructs."""
        return postgresql.insert(table) if self.is_postgres else sqlite.insert(table)

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncConnection]:
        """One transaction; a database error leaves as a redacted :class:`StoreError` (never with values)."""
        try:
            async with self._engine.begin() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise store_error(exc) from None


def unique(values: Iterable[str]) -> list[str]:
    """Order-preserving de-duplication: statements must not touch one key twice (PostgreSQL rejects that)."""
    return list(dict.fromkeys(values))
