"""Dead letters: messages that should have been sent but were not, kept until replayed or purged.

A dead letter's id is derived from (flow, message_id) so the same message failing again updates one record
(``attempts`` += 1) instead of piling up copies, and the id a user copied from ``dead-letters list`` stays valid.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from klaviyo_segment.store import tables as t
from klaviyo_segment.store.engine import MANY, StoreBase, chunks, dumps, from_us, loads, now_us, unique
from klaviyo_segment.store.models import DeadLetter, DeadLetterIn

_ID_LEN = 12


def dead_letter_id(flow: str, message_id: str | None) -> str:
    """Short and stable for a known message id; random when the message has none (it cannot be matched anyway)."""
    if message_id is None:
        return uuid.uuid4().hex[:_ID_LEN]
    return hashlib.sha256(f"{flow}\x00{message_id}".encode()).hexdigest()[:_ID_LEN]


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """Text both stores can hold: a NUL (PostgreSQL text) or lone surrogate (UTF-8) becomes U+FFFD. Bodies need
    no such care (JSON-escaped); a dead letter's id and reason do, or recording the failure would fail too."""
    return _UNSTORABLE.sub("\ufffd", text)


def _row_to_dead_letter(r: sa.Row[Any]) -> DeadLetter:
    return DeadLetter(
        id=r.id,
        message_id=r.message_id,
        flow=r.flow,
        reason=r.reason,
        error=loads(r.error),
        attempts=r.attempts,
        created_at=from_us(r.created_us),  # type: ignore[arg-type]
        updated_at=from_us(r.updated_us),
        message=loads(r.body),
    )  # type: ignore[arg-type]


class DeadLetterMixin(StoreBase):
    async def add_dead_letters(self, items: Sequence[DeadLetterIn]) -> list[str]:
        """Upsert dead letters; returns their ids in input order."""
        async with self._tx() as conn:
            return await self._upsert_dead_letters(conn, items)

    async def _upsert_dead_letters(self, conn: AsyncConnection, items: Sequence[DeadLetterIn]) -> list[str]:
        """The upsert inside a caller's transaction (the inbox's attempt cap dead-letters and closes at once)."""
        now = now_us()
        rows: dict[str, dict[str, Any]] = {}
        ids = []
        for item in items:
            message_id = None if item.message_id is None else storable(item.message_id)
            dl_id = dead_letter_id(item.flow, message_id)
            ids.append(dl_id)
            rows[dl_id] = {
                "id": dl_id,
                "flow": item.flow,
                "message_id": message_id,
                "reason": storable(item.reason),
                "error": None if item.error is None else dumps(item.error),
                "attempts": 1,
                "body": dumps(item.message),
                "created_us": now,
                "updated_us": now,
            }
        stmt = self._insert(t.dead_letters)
        ex = stmt.excluded
        stmt = stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={
                "attempts": t.dead_letters.c.attempts + 1,
                "reason": ex.reason,
                "error": ex.error,
                "body": ex.body,
                "updated_us": ex.updated_us,
            },
        )
        for part in chunks([rows[k] for k in sorted(rows)], MANY):  # sorted: one lock order, no deadlocks
            await conn.execute(stmt, part)
        return ids

    async def list_dead_letters(self, flow: str | None = None, limit: int | None = None) -> list[DeadLetter]:
        """Oldest first, so a replay retries messages in the order they originally failed."""
        d = t.dead_letters.c
        query = sa.select(t.dead_letters).order_by(d.created_us, d.id).limit(limit)
        if flow is not None:
            query = query.where(d.flow == flow)
        async with self._tx() as conn:
            return [_row_to_dead_letter(r) for r in await conn.execute(query)]

    async def get_dead_letter(self, dead_letter_id: str) -> DeadLetter | None:
        async with self._tx() as conn:
            row = (await conn.execute(sa.select(t.dead_letters).where(t.dead_letters.c.id == dead_letter_id))).first()
        return None if row is None else _row_to_dead_letter(row)

    async def resolve_dead_letters(self, ids: Sequence[str]) -> int:
        """Remove dead letters whose replay succeeded; returns how many existed."""
        removed = 0
        async with self._tx() as conn:
            for part in chunks(unique(ids)):
                removed += (
                    await conn.execute(sa.delete(t.dead_letters).where(t.dead_letters.c.id.in_(part)))
                ).rowcount or 0
        return removed

    async def purge_dead_letters(self, older_than: timedelta | None = None) -> int:
        """Delete dead letters whose last failure is older than ``older_than`` (all of them when None)."""
        stmt = sa.delete(t.dead_letters)
        if older_than is not None:
            cutoff = now_us() - int(older_than.total_seconds() * 1_000_000)
            stmt = stmt.where(t.dead_letters.c.updated_us < cutoff)
        async with self._tx() as conn:
            return (await conn.execute(stmt)).rowcount or 0

    async def count_dead_letters(self, flow: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(t.dead_letters)
        if flow is not None:
            query = query.where(t.dead_letters.c.flow == flow)
        async with self._tx() as conn:
            return int((await conn.execute(query)).scalar() or 0)
