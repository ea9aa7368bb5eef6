"""The current schema as SQLAlchemy tables, used to build queries.

The DDL that creates these tables lives in :mod:`migrations` (frozen per version); this module must describe the
state after the newest migration. ``*_us`` columns are microseconds since the epoch (see :mod:`engine`).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

Text, Int, Big = sa.Text, sa.Integer, sa.BigInteger

schema_version = sa.Table(
    "ks_schema_version",
    metadata,
    sa.Column("version", Int, primary_key=True),
    sa.Column("applied_us", Big, nullable=False),
)

inbox_batches = sa.Table(
    "ks_inbox_batches",
    metadata,
    sa.Column("id", Text, primary_key=True),
    sa.Column("flow", Text, nullable=False),
    sa.Column("status", Text, nullable=False),  # pending | leased | done | partial
    sa.Column("attempts", Int, nullable=False),
    sa.Column("size", Int, nullable=False),
    sa.Column("lease_owner", Text),
    sa.Column("lease_expires_us", Big),
    sa.Column("summary", Text),
    sa.Column("created_us", Big, nullable=False),
    sa.Column("updated_us", Big, nullable=False),
    sa.Column("dispatched_run_id", Text),  # v2
    sa.Column("dispatched_us", Big),  # v2
)

inbox_messages = sa.Table(
    "ks_inbox_messages",
    metadata,
    sa.Column("batch_id", Text, primary_key=True),
    sa.Column("pos", Int, primary_key=True),
    sa.Column("message_id", Text),
    sa.Column("body", Text, nullable=False),
)

inbox_seen = sa.Table(
    "ks_inbox_seen", metadata, sa.Column("key", Text, primary_key=True), sa.Column("created_us", Big, nullable=False)
)

dead_letters = sa.Table(
    "ks_dead_letters",
    metadata,
    sa.Column("id", Text, primary_key=True),
    sa.Column("flow", Text, nullable=False),
    sa.Column("message_id", Text),
    sa.Column("reason", Text, nullable=False),
    sa.Column("error", Text),
    sa.Column("attempts", Int, nullable=False),
    sa.Column("body", Text, nullable=False),
    sa.Column("created_us", Big, nullable=False),
    sa.Column("updated_us", Big, nullable=False),
)

versions = sa.Table(
    "ks_versions",
    metadata,
    sa.Column("key", Text, primary_key=True),
    sa.Column("version_us", Big, nullable=False),
    sa.Column("updated_us", Big, nullable=False),
)

cursors = sa.Table(
    "ks_cursors",
    metadata,
    sa.Column("name", Text, primary_key=True),
    sa.Column("value", Text, nullable=False),
    sa.Column("updated_us", Big, nullable=False),
)

checkpoints = sa.Table(
    "ks_checkpoints",
    metadata,
    sa.Column("name", Text, primary_key=True),
    sa.Column("value", Text, nullable=False),
    sa.Column("updated_us", Big, nullable=False),
)

idempotency = sa.Table(
    "ks_idempotency", metadata, sa.Column("key", Text, primary_key=True), sa.Column("created_us", Big, nullable=False)
)

profile_ids = sa.Table(
    "ks_profile_ids",
    metadata,
    sa.Column("key", Text, primary_key=True),
    sa.Column("profile_id", Text, nullable=False),
    sa.Column("updated_us", Big, nullable=False),
)

aliases = sa.Table(
    "ks_aliases",
    metadata,
    sa.Column("anonymous_id", Text, primary_key=True),
    sa.Column("data", Text, nullable=False),
    sa.Column("updated_us", Big, nullable=False),
)

kv = sa.Table(
    "ks_kv",
    metadata,
    sa.Column("key", Text, primary_key=True),  # v2
    sa.Column("value", Text, nullable=False),
    sa.Column("updated_us", Big, nullable=False),
)

tombstones = sa.Table(
    "ks_tombstones",
    metadata,
    sa.Column("hash", Text, primary_key=True),  # v3
    sa.Column("deleted_us", Big, nullable=False),
    sa.Column("created_us", Big, nullable=False),
)

#: Tables whose text may hold personal data (privacy tests scan all of them).
ALL_TABLES = tuple(t for t in metadata.sorted_tables if t is not schema_version)
