"""Versioned schema migrations, applied automatically by :meth:`Store.open`.

Each step is frozen once released: a new schema change is a new step appended to ``STEPS``, never an edit. Steps
run in one transaction under a lock (PostgreSQL advisory lock; SQLite ``BEGIN IMMEDIATE``), so concurrent openers
serialise and the second one finds the work done. DDL is transactional on both backends, so a failed step leaves
the previous version intact.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from klaviyo_segment.store.engine import now_us

#: Arbitrary constant naming this project's migration lock among other advisory-lock users of the database.
_PG_LOCK_ID = 0x4B53_0001


def _v1(conn: sa.Connection) -> None:
    """Initial schema: inbox, dead letters, versions, cursors/checkpoints, idempotency, identity cache."""
    md = sa.MetaData()
    T, I, B = sa.Text, sa.Integer, sa.BigInteger  # noqa: E741 - column-type shorthands keep the DDL readable
    sa.Table(
        "ks_inbox_batches",
        md,
        sa.Column("id", T, primary_key=True),
        sa.Column("flow", T, nullable=False),
        sa.Column("status", T, nullable=False),
        sa.Column("attempts", I, nullable=False),
        sa.Column("size", I, nullable=False),
        sa.Column("lease_owner", T),
        sa.Column("lease_expires_us", B),
        sa.Column("summary", T),
        sa.Column("created_us", B, nullable=False),
        sa.Column("updated_us", B, nullable=False),
    )
    sa.Table(
        "ks_inbox_messages",
        md,
        sa.Column("batch_id", T, primary_key=True),
        sa.Column("pos", I, primary_key=True),
        sa.Column("message_id", T),
        sa.Column("body", T, nullable=False),
    )
    sa.Table("ks_inbox_seen", md, sa.Column("key", T, primary_key=True), sa.Column("created_us", B, nullable=False))
    sa.Table(
        "ks_dead_letters",
        md,
        sa.Column("id", T, primary_key=True),
        sa.Column("flow", T, nullable=False),
        sa.Column("message_id", T),
        sa.Column("reason", T, nullable=False),
        sa.Column("error", T),
        sa.Column("attempts", I, nullable=False),
        sa.Column("body", T, nullable=False),
        sa.Column("created_us", B, nullable=False),
        sa.Column("updated_us", B, nullable=False),
    )
    sa.Table(
        "ks_versions",
        md,
        sa.Column("key", T, primary_key=True),
        sa.Column("version_us", B, nullable=False),
        sa.Column("updated_us", B, nullable=False),
    )
    for name in ("ks_cursors", "ks_checkpoints"):
        sa.Table(
            name,
            md,
            sa.Column("name", T, primary_key=True),
            sa.Column("value", T, nullable=False),
            sa.Column("updated_us", B, nullable=False),
        )
    sa.Table("ks_idempotency", md, sa.Column("key", T, primary_key=True), sa.Column("created_us", B, nullable=False))
    sa.Table(
        "ks_profile_ids",
        md,
        sa.Column("key", T, primary_key=True),
        sa.Column("profile_id", T, nullable=False),
        sa.Column("updated_us", B, nullable=False),
    )
    sa.Table(
        "ks_aliases",
        md,
        sa.Column("anonymous_id", T, primary_key=True),
        sa.Column("data", T, nullable=False),
        sa.Column("updated_us", B, nullable=False),
    )
    md.create_all(conn)
    conn.exec_driver_sql("CREATE INDEX ix_ks_dead_letters_flow ON ks_dead_letters (flow, created_us)")


def _v2(conn: sa.Connection) -> None:
    """Dispatch tracking for the sweeper, a claim index, and a small key-value table (e.g. previous trait values)."""
    conn.exec_driver_sql("ALTER TABLE ks_inbox_batches ADD COLUMN dispatched_run_id TEXT")
    conn.exec_driver_sql("ALTER TABLE ks_inbox_batches ADD COLUMN dispatched_us BIGINT")
    conn.exec_driver_sql("CREATE INDEX ix_ks_inbox_batches_claim ON ks_inbox_batches (status, flow, created_us)")
    conn.exec_driver_sql("CREATE TABLE ks_kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_us BIGINT NOT NULL)")


def _v3(conn: sa.Connection) -> None:
    """Delete tombstones: salted hashes of a deleted person's identifiers, so older re-runs cannot re-create them."""
    conn.exec_driver_sql(
        "CREATE TABLE ks_tombstones (hash TEXT PRIMARY KEY, deleted_us BIGINT NOT NULL, created_us BIGINT NOT NULL)"
    )
    conn.exec_driver_sql("CREATE INDEX ix_ks_tombstones_created ON ks_tombstones (created_us)")


STEPS: tuple[Callable[[sa.Connection], None], ...] = (_v1, _v2, _v3)
LATEST = len(STEPS)


async def _lock_and_read(conn: AsyncConnection) -> int:
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_ID})
    await conn.execute(
        sa.text(
            "CREATE TABLE IF NOT EXISTS ks_schema_version (version INTEGER PRIMARY KEY, applied_us BIGINT NOT NULL)"
        )
    )
    current = (await conn.execute(sa.text("SELECT MAX(version) FROM ks_schema_version"))).scalar()
    return int(current or 0)


async def migrate(engine: AsyncEngine, target: int = LATEST) -> int:
    """Bring the database to ``target`` (default: newest) and return the version it ended at.

    A database newer than this code is left alone (an older worker must not downgrade a newer one's schema).
    """
    async with engine.begin() as conn:
        current = await _lock_and_read(conn)
        for version in range(current + 1, target + 1):
            await conn.run_sync(STEPS[version - 1])
            await conn.execute(
                sa.text("INSERT INTO ks_schema_version (version, applied_us) VALUES (:v, :t)"),
                {"v": version, "t": now_us()},
            )
        return max(current, target)


async def current_version(engine: AsyncEngine) -> int:
    async with engine.begin() as conn:
        return await _lock_and_read(conn)
