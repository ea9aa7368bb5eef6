"""Small durable state: version compare-and-set, cursors, checkpoints, once-only markers and a key-value table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from klaviyo_segment.store import tables as t
from klaviyo_segment.store.engine import MANY, StoreBase, chunks, dumps, from_us, loads, now_us, to_us, unique


def delivered_key(flow: str, key: str) -> str:
    """The idempotency mark of a message a flow delivered (written by the run's finish, read before sending)."""
    return f"delivered:{flow}:{key}"


async def done_keys(conn: AsyncConnection, keys: Sequence[str]) -> set[str]:
    """Which of ``keys`` carry an idempotency mark, inside the caller's transaction."""
    done: set[str] = set()
    for part in chunks(unique(keys)):
        done.update(
            r[0] for r in await conn.execute(sa.select(t.idempotency.c.key).where(t.idempotency.c.key.in_(part)))
        )
    return done


class StateMixin(StoreBase):
    async def apply_versions(self, items: dict[str, datetime]) -> set[str]:
        """Store each version only if strictly newer than the stored one; return the keys that won.

        One ``INSERT .. ON CONFLICT DO UPDATE .. WHERE stored < new RETURNING key`` per chunk: the database row
        lock makes it correct when two workers race on the same key (an older change never overwrites a newer).
        """
        now = now_us()
        rows = [{"key": k, "version_us": to_us(items[k]), "updated_us": now} for k in sorted(items)]
        won: set[str] = set()
        stmt = self._insert(t.versions)
        stmt = stmt.on_conflict_do_update(
            index_elements=["key"],
            set_={"version_us": stmt.excluded.version_us, "updated_us": stmt.excluded.updated_us},
            where=t.versions.c.version_us < stmt.excluded.version_us,
        ).returning(t.versions.c.key)
        async with self._tx() as conn:
            for part in chunks(rows, MANY):
                won.update(r[0] for r in await conn.execute(stmt, part))
        return won

    async def get_versions(self, keys: Sequence[str]) -> dict[str, datetime]:
        out: dict[str, datetime] = {}
        async with self._tx() as conn:
            for part in chunks(unique(keys)):
                for r in await conn.execute(
                    sa.select(t.versions.c.key, t.versions.c.version_us).where(t.versions.c.key.in_(part))
                ):
                    out[r.key] = from_us(r.version_us)  # type: ignore[assignment]
        return out

    async def _get_named(self, table: sa.Table, name: str) -> str | None:
        async with self._tx() as conn:
            return (await conn.execute(sa.select(table.c.value).where(table.c.name == name))).scalar()

    async def _set_named(self, table: sa.Table, name: str, value: str) -> None:
        stmt = self._insert(table).values(name=name, value=value, updated_us=now_us())
        async with self._tx() as conn:
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["name"], set_={"value": stmt.excluded.value, "updated_us": stmt.excluded.updated_us}
                )
            )

    async def get_cursor(self, name: str) -> str | None:
        return await self._get_named(t.cursors, name)

    async def set_cursor(self, name: str, value: str) -> None:
        await self._set_named(t.cursors, name, value)

    async def get_checkpoint(self, name: str) -> dict[str, Any] | None:
        raw = await self._get_named(t.checkpoints, name)
        return loads(raw)

    async def set_checkpoint(self, name: str, value: dict[str, Any]) -> None:
        await self._set_named(t.checkpoints, name, dumps(value))

    async def claim_once(self, keys: Sequence[str]) -> set[str]:
        """Mark keys done and return those that were not marked before: the caller owns those side effects."""
        now = now_us()
        claimed: set[str] = set()
        stmt = self._insert(t.idempotency).on_conflict_do_nothing(index_elements=["key"]).returning(t.idempotency.c.key)
        async with self._tx() as conn:
            # executemany: SQLAlchemy's "insertmanyvalues" batches the rows into multi-row INSERTs from one cached
            # compiled statement (a .values([...]) statement is compiled anew per call: ~80 ms per 500 rows)
            for part in chunks(sorted(set(keys)), MANY):
                rows = await conn.execute(stmt, [{"key": k, "created_us": now} for k in part])
                claimed.update(r[0] for r in rows)
        return claimed

    async def is_done(self, keys: Sequence[str]) -> set[str]:
        async with self._tx() as conn:
            return await done_keys(conn, keys)

    async def unmark(self, keys: Sequence[str]) -> None:
        """Forget markers whose side effect failed after claim_once, so a later run retries it."""
        async with self._tx() as conn:
            for part in chunks(unique(keys)):
                await conn.execute(sa.delete(t.idempotency).where(t.idempotency.c.key.in_(part)))

    async def get_values(self, keys: Sequence[str]) -> dict[str, Any]:
        """Generic JSON values by exact key (e.g. ``churn:<user_id>`` -> previous trait value); missing keys absent."""
        out: dict[str, Any] = {}
        async with self._tx() as conn:
            for part in chunks(unique(keys)):
                for r in await conn.execute(sa.select(t.kv.c.key, t.kv.c.value).where(t.kv.c.key.in_(part))):
                    out[r.key] = loads(r.value)
        return out

    async def put_values(self, values: dict[str, Any]) -> None:
        now = now_us()
        rows = [{"key": k, "value": dumps(values[k]), "updated_us": now} for k in sorted(values)]
        stmt = self._insert(t.kv)
        stmt = stmt.on_conflict_do_update(
            index_elements=["key"], set_={"value": stmt.excluded.value, "updated_us": stmt.excluded.updated_us}
        )
        async with self._tx() as conn:
            for part in chunks(rows, MANY):
                await conn.execute(stmt, part)

    async def delete_values(self, keys: Sequence[str]) -> None:
        async with self._tx() as conn:
            for part in chunks(unique(keys)):
                await conn.execute(sa.delete(t.kv).where(t.kv.c.key.in_(part)))
