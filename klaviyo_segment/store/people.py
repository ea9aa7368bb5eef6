"""Per-person ordering that survives re-runs: applied trait versions and delete tombstones.

Why: a batch can be re-run after newer batches already ran (Segment retries, dead-letter replays, a worker
killed while holding a lease). Without a memory of what was applied, an older identify sets a trait back and an
identify older than a delete re-creates the deleted person.

- Trait versions reuse ``ks_versions`` (compare-and-set, strictly newer wins) under keys
  ``person:<kind>:<value>:<field>``; ``purge_person`` finds them by key component, like every person key.
- Tombstones (``ks_tombstones``) hold only ``sha256(salt, kind, value)``: the store must remember *that* someone
  was deleted, never *who*. The salt is created once and kept in ``ks_kv``. Tombstones live at least
  ``TOMBSTONE_KEEP`` (4 h plus the lease length: the longest a leased batch can wait before its re-run), then
  :meth:`PeopleMixin.purge_tombstones` removes them (the flow calls it with each delete batch).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from klaviyo_segment.store import tables as t
from klaviyo_segment.store.engine import (
    StoreBase,
    chunks,
    dumps,
    from_us,
    loads,
    now_us,
    to_us,
    unique,
)

#: Lease length of inbox batches (runtime.LEASE_SECONDS default); a re-run can come this late, plus slack.
_LEASE = timedelta(seconds=600)
TOMBSTONE_KEEP = timedelta(hours=4) + _LEASE
_SALT_KEY = "people:tombstone-salt"
_IDENTIFIERS = ("external_id", "email", "phone_number")


def person_keys(identifiers: Mapping[str, Any]) -> list[str]:
    """``<kind>:<value>`` for each identifier (email lower-cased), the same spelling the identity cache uses."""
    out = []
    for kind in _IDENTIFIERS:
        value = identifiers.get(kind)
        if isinstance(value, str) and value:
            out.append(f"{kind}:{value.strip().lower() if kind == 'email' else value}")
    return out


def version_key(person: str, field: str) -> str:
    return f"person:{person}:{field}"


class PeopleMixin(StoreBase):
    async def _salt(self) -> str:
        """The tombstone salt, created on first use; concurrent creators agree (insert-or-keep, then read)."""
        async with self._tx() as conn:
            stmt = self._insert(t.kv).values(key=_SALT_KEY, value=dumps(secrets.token_hex(16)), updated_us=now_us())
            await conn.execute(stmt.on_conflict_do_nothing(index_elements=["key"]))
            raw = (await conn.execute(sa.select(t.kv.c.value).where(t.kv.c.key == _SALT_KEY))).scalar()
        return str(loads(raw))

    @staticmethod
    def _digest(salt: str, key: str) -> str:
        return hashlib.sha256(f"{salt}\x00{key}".encode()).hexdigest()

    async def put_tombstones(self, identifiers: Mapping[str, Any], deleted_at: datetime) -> None:
        """Remember that the person with these identifiers was deleted at ``deleted_at`` (message time)."""
        keys = person_keys(identifiers)
        if not keys:
            return
        salt, now, at = await self._salt(), now_us(), to_us(deleted_at)
        rows = [
            {"hash": h, "deleted_us": at, "created_us": now} for h in sorted(self._digest(salt, k) for k in keys)
        ]  # sorted: one lock order
        async with self._tx() as conn:
            stmt = self._insert(t.tombstones).values(rows)
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["hash"],
                    set_={
                        "deleted_us": sa.func.max(t.tombstones.c.deleted_us, stmt.excluded.deleted_us)
                        if not self.is_postgres
                        else sa.func.greatest(t.tombstones.c.deleted_us, stmt.excluded.deleted_us),
                        "created_us": stmt.excluded.created_us,
                    },
                )
            )

    async def deleted_at(self, people: Sequence[Mapping[str, Any]]) -> list[datetime | None]:
        """Per person: the latest delete of any of their identifiers still remembered, or None."""
        salt = await self._salt()
        hashed = [[self._digest(salt, k) for k in person_keys(p)] for p in people]
        found: dict[str, int] = {}
        async with self._tx() as conn:
            for part in chunks(unique(h for hs in hashed for h in hs)):
                rows = await conn.execute(
                    sa.select(t.tombstones.c.hash, t.tombstones.c.deleted_us).where(t.tombstones.c.hash.in_(part))
                )
                found.update({r.hash: r.deleted_us for r in rows})
        out: list[datetime | None] = []
        for hs in hashed:
            times = [found[h] for h in hs if h in found]
            out.append(from_us(max(times)) if times else None)
        return out

    async def purge_tombstones(self, *, now: datetime | None = None, keep: timedelta = TOMBSTONE_KEEP) -> int:
        """Drop tombstones recorded more than ``keep`` before ``now`` (injected in tests); returns how many."""
        cutoff = (to_us(now) if now is not None else now_us()) - int(keep.total_seconds() * 1_000_000)
        async with self._tx() as conn:
            return (await conn.execute(sa.delete(t.tombstones).where(t.tombstones.c.created_us < cutoff))).rowcount or 0
