"""Identity cache: identifier -> Klaviyo profile id, and Segment anonymousId -> what we learnt about that person.

Keys of the profile-id cache are ``<kind>:<value>`` (``email:a@b.com``, ``phone:+15551234567``,
``external_id:u1``); callers normalise the value (lower-case email, E.164 phone) before building keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from klaviyo_segment.store import tables as t
from klaviyo_segment.store.engine import MANY, StoreBase, chunks, dumps, loads, now_us, unique


def merge_alias(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Later facts win per field; ``traits`` merge key by key; a None never erases something known."""
    merged = dict(old)
    for field, value in new.items():
        if value is None:
            continue
        if field == "traits" and isinstance(value, dict) and isinstance(merged.get("traits"), dict):
            merged["traits"] = {**merged["traits"], **value}
        else:
            merged[field] = value
    return merged


class IdentityMixin(StoreBase):
    async def put_profile_ids(self, mapping: dict[str, str]) -> None:
        now = now_us()
        rows = [{"key": k, "profile_id": mapping[k], "updated_us": now} for k in sorted(mapping)]
        stmt = self._insert(t.profile_ids)
        stmt = stmt.on_conflict_do_update(
            index_elements=["key"],
            set_={"profile_id": stmt.excluded.profile_id, "updated_us": stmt.excluded.updated_us},
        )
        async with self._tx() as conn:
            for part in chunks(rows, MANY):
                await conn.execute(stmt, part)

    async def get_profile_ids(self, keys: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        async with self._tx() as conn:
            for part in chunks(unique(keys)):
                rows = await conn.execute(
                    sa.select(t.profile_ids.c.key, t.profile_ids.c.profile_id).where(t.profile_ids.c.key.in_(part))
                )
                out.update({r.key: r.profile_id for r in rows})
        return out

    async def forget_profile_ids(self, keys: Sequence[str]) -> None:
        """Drop stale cache entries (e.g. Klaviyo answered 404 for a cached profile id)."""
        async with self._tx() as conn:
            for part in chunks(unique(keys)):
                await conn.execute(sa.delete(t.profile_ids).where(t.profile_ids.c.key.in_(part)))

    async def _locked_aliases(self, conn: AsyncConnection, ids: list[str]) -> dict[str, dict[str, Any]]:
        """Read with row locks on PostgreSQL so concurrent merges into one alias do not lose updates."""
        a = t.aliases.c
        query = sa.select(a.anonymous_id, a.data).where(a.anonymous_id.in_(ids)).order_by(a.anonymous_id)
        if self.is_postgres:
            query = query.with_for_update()
        return {r.anonymous_id: loads(r.data) for r in await conn.execute(query)}

    async def put_aliases(self, aliases: dict[str, dict[str, Any]]) -> None:
        """Merge what identify/alias calls taught us (``user_id``, ``email``, ``phone``, ``traits``) per anonymousId."""
        now = now_us()
        async with self._tx() as conn:
            for part in chunks(sorted(aliases)):
                existing = await self._locked_aliases(conn, part)
                new_rows = [
                    {"anonymous_id": i, "data": dumps(merge_alias({}, aliases[i])), "updated_us": now}
                    for i in part
                    if i not in existing
                ]
                inserted: set[str] = set()
                if new_rows:
                    stmt = (
                        self._insert(t.aliases)
                        .on_conflict_do_nothing(index_elements=["anonymous_id"])
                        .returning(t.aliases.c.anonymous_id)
                    )
                    inserted = {r[0] for r in await conn.execute(stmt, new_rows)}
                # Rows another writer inserted between our read and insert: lock them now and merge.
                raced = [i for i in part if i not in existing and i not in inserted]
                existing.update(await self._locked_aliases(conn, raced) if raced else {})
                for anon_id, old in existing.items():
                    await conn.execute(
                        sa.update(t.aliases)
                        .where(t.aliases.c.anonymous_id == anon_id)
                        .values(data=dumps(merge_alias(old, aliases[anon_id])), updated_us=now)
                    )

    async def get_aliases(self, anonymous_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        async with self._tx() as conn:
            for part in chunks(unique(anonymous_ids)):
                rows = await conn.execute(
                    sa.select(t.aliases.c.anonymous_id, t.aliases.c.data).where(t.aliases.c.anonymous_id.in_(part))
                )
                out.update({r.anonymous_id: loads(r.data) for r in rows})
        return out
