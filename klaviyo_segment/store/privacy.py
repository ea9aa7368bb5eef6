"""Forgetting: ``purge_person`` for Segment ``delete`` calls, and age-based retention.

Keys built by flows put identifiers in ``:``-separated components (``audience:vip:<profile>``,
``onboard:<user_id>``), so a person's keys are found by matching whole components, never substrings ("u1" must
not erase "u10"). Payloads are JSON text; a person is found in them by the JSON-quoted identifier.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from klaviyo_segment.store import tables as t
from klaviyo_segment.store.engine import StoreBase, loads, now_us

_PERSON_FIELDS = ("user_id", "anonymous_id", "email", "phone")
_ALIAS_FIELDS = ("user_id", "email", "phone")


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def key_mentions(column: sa.ColumnElement[str], values: set[str]) -> sa.ColumnElement[bool]:
    """True when one ``:``-separated component of the key equals one of ``values``."""
    parts: list[sa.ColumnElement[bool]] = [sa.false()]
    for v in values:
        e = _esc(v)
        parts += [
            column == v,
            column.like(f"%:{e}", escape="\\"),
            column.like(f"{e}:%", escape="\\"),
            column.like(f"%:{e}:%", escape="\\"),
        ]
    return sa.or_(*parts)


def body_mentions(column: sa.ColumnElement[str], values: set[str]) -> sa.ColumnElement[bool]:
    """True when the JSON text holds one of ``values`` as a whole string (case-insensitive: emails vary in case)."""
    parts: list[sa.ColumnElement[bool]] = [sa.false()]
    parts += [column.ilike(f"%{_esc(json.dumps(v))}%", escape="\\") for v in values]
    return sa.or_(*parts)


def _person_values(identifiers: dict[str, Any]) -> set[str]:
    values: set[str] = set()
    for field in _PERSON_FIELDS:
        value = identifiers.get(field)
        if isinstance(value, str) and value:
            values.add(value)
            if field == "email":
                values.add(value.strip().lower())
    return values


class PrivacyMixin(StoreBase):
    async def _expand(self, conn: AsyncConnection, values: set[str]) -> tuple[set[str], set[str]]:
        """Grow the identifier set with aliases and cached Klaviyo profile ids of the same person."""
        a, p = t.aliases.c, t.profile_ids.c
        anon_ids: set[str] = set()
        for r in await conn.execute(
            sa.select(a.anonymous_id, a.data).where(sa.or_(a.anonymous_id.in_(values), body_mentions(a.data, values)))
        ):
            anon_ids.add(r.anonymous_id)
            data = loads(r.data) or {}
            values |= {data[f] for f in _ALIAS_FIELDS if isinstance(data.get(f), str) and data[f]}
        values |= anon_ids
        profile_ids = {r[0] for r in await conn.execute(sa.select(p.profile_id).where(key_mentions(p.key, values)))}
        return values | profile_ids, anon_ids

    async def purge_person(self, identifiers: dict[str, Any]) -> dict[str, int]:
        """Remove every stored trace of a person; returns rows removed per table (counts only: no PII).

        Covers identity cache, aliases, versions / idempotency / key-value entries keyed with the person's
        identifiers or Klaviyo profile ids, dead letters whose message mentions them and the messages of finished
        inbox batches. Messages of unfinished batches are kept: they are still to be processed, in order.
        """
        values = _person_values(identifiers)
        if not values:
            return {}
        removed: dict[str, int] = {}
        async with self._tx() as conn:
            values, anon_ids = await self._expand(conn, values)
            m, b = t.inbox_messages.c, t.inbox_batches.c
            finished = sa.select(b.id).where(b.status.in_(("done", "partial"))).scalar_subquery()
            statements = {
                "aliases": sa.delete(t.aliases).where(
                    sa.or_(t.aliases.c.anonymous_id.in_(anon_ids or {""}), body_mentions(t.aliases.c.data, values))
                ),
                "profile_ids": sa.delete(t.profile_ids).where(
                    sa.or_(key_mentions(t.profile_ids.c.key, values), t.profile_ids.c.profile_id.in_(values))
                ),
                "versions": sa.delete(t.versions).where(key_mentions(t.versions.c.key, values)),
                "idempotency": sa.delete(t.idempotency).where(key_mentions(t.idempotency.c.key, values)),
                "kv": sa.delete(t.kv).where(key_mentions(t.kv.c.key, values)),
                "dead_letters": sa.delete(t.dead_letters).where(body_mentions(t.dead_letters.c.body, values)),
                "inbox_messages": sa.delete(t.inbox_messages).where(
                    m.batch_id.in_(finished), body_mentions(m.body, values)
                ),
            }
            for name, stmt in statements.items():
                removed[name] = (await conn.execute(stmt)).rowcount or 0
        return removed

    async def purge(self, done_older_than: timedelta, records_older_than: timedelta) -> dict[str, int]:
        """Retention: drop finished batches after ``done_older_than``; dedupe keys, versions and the identity cache
        after ``records_older_than``. Idempotency markers, key-value state, cursors and dead letters are state,
        not records, and are kept (dead letters until replayed or purged explicitly).
        """
        now = now_us()
        done_cutoff = now - int(done_older_than.total_seconds() * 1_000_000)
        rec_cutoff = now - int(records_older_than.total_seconds() * 1_000_000)
        b = t.inbox_batches.c
        old = sa.select(b.id).where(b.status.in_(("done", "partial")), b.updated_us < done_cutoff)
        removed: dict[str, int] = {}
        async with self._tx() as conn:
            removed["inbox_messages"] = (
                await conn.execute(
                    sa.delete(t.inbox_messages).where(t.inbox_messages.c.batch_id.in_(old.scalar_subquery()))
                )
            ).rowcount
            removed["inbox_batches"] = (
                await conn.execute(
                    sa.delete(t.inbox_batches).where(b.status.in_(("done", "partial")), b.updated_us < done_cutoff)
                )
            ).rowcount
            removed["inbox_seen"] = (
                await conn.execute(sa.delete(t.inbox_seen).where(t.inbox_seen.c.created_us < rec_cutoff))
            ).rowcount
            for name, table in (("versions", t.versions), ("profile_ids", t.profile_ids), ("aliases", t.aliases)):
                removed[name] = (await conn.execute(sa.delete(table).where(table.c.updated_us < rec_cutoff))).rowcount
        return {k: v or 0 for k, v in removed.items()}
