"""Inbox: accepted messages grouped into per-flow batches that workers lease, so a crash never loses a message.

Claiming is safe across processes: PostgreSQL uses ``FOR UPDATE SKIP LOCKED`` (two workers never block on or take
the same batch); SQLite runs every transaction as ``BEGIN IMMEDIATE`` (one writer at a time). Lease expiry uses the
workers' wall clock, so workers on different hosts need synchronised clocks (NTP).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from klaviyo_segment.store import tables as t
from klaviyo_segment.store.dead_letters import DeadLetterMixin
from klaviyo_segment.store.engine import MANY, chunks, dumps, from_us, loads, now_us, unique
from klaviyo_segment.store.models import AcceptResult, Batch, BatchInfo, DeadLetterIn
from klaviyo_segment.store.state import delivered_key, done_keys

_OPEN = ("pending", "leased")
_FINAL = ("done", "partial")
#: Leases a batch gets. The next claim after the last one dead-letters its messages with the last recorded
#: error and closes it ``partial``, so a batch that crashes every run (a poison message nobody could isolate, a
#: worker killed mid-run again and again) cannot hold its flow's stream back forever.
MAX_ATTEMPTS = 5
#: A failed run's batch is retried after this many seconds, doubling per attempt (capped by the lease length).
RETRY_BASE_SECONDS = 30.0


def _new_id() -> str:
    return uuid.uuid4().hex


def _claimable(now: int) -> sa.ColumnElement[bool]:
    b = t.inbox_batches.c
    return sa.or_(b.status == "pending", sa.and_(b.status == "leased", b.lease_expires_us < now))


def lease_holder() -> str:
    """Who holds a lease, process-wise (``host:pid``): recorded so a restart can reclaim a dead process' leases."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _summary(text: str | None) -> dict[str, Any]:
    try:
        value = loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _holder_is_dead(holder: Any, host: str) -> bool:
    """True only for a holder on this host whose pid no longer exists (never for this process itself)."""
    if not isinstance(holder, str) or ":" not in holder:
        return False
    holder_host, _, pid_text = holder.rpartition(":")
    if holder_host != host or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists but not ours to signal: alive
        return False
    return False


def _info(row: sa.Row[Any]) -> BatchInfo:
    return BatchInfo(
        id=row.id,
        flow=row.flow,
        status=row.status,
        attempts=row.attempts,
        size=row.size,
        created_at=from_us(row.created_us),
        lease_owner=row.lease_owner,  # type: ignore[arg-type]
        lease_expires_at=from_us(row.lease_expires_us),
        dispatched_run_id=row.dispatched_run_id,
    )


class InboxMixin(DeadLetterMixin):
    async def accept(
        self,
        messages: list[dict[str, Any]],
        *,
        key: Callable[[dict[str, Any]], str | None],
        route: Callable[[dict[str, Any]], Iterable[str]],
    ) -> AcceptResult:
        """Record new messages and create one batch per target flow, all in one transaction (group commit).

        A message whose key was accepted before (or earlier in this call) is a duplicate; a ``None`` key is always
        new. Keys are claimed with ``INSERT .. ON CONFLICT DO NOTHING`` so concurrent receivers agree on who won.
        """
        keyed = [(key(m), m) for m in messages]
        wanted = sorted({k for k, _ in keyed if k is not None})  # one lock order: no deadlocks
        now = now_us()
        async with self._tx() as conn:
            fresh: set[str] = set()
            seen = self._insert(t.inbox_seen).on_conflict_do_nothing(index_elements=["key"])
            seen = seen.returning(t.inbox_seen.c.key)
            for part in chunks(wanted, MANY):
                rows = await conn.execute(seen, [{"key": k, "created_us": now} for k in part])
                fresh.update(r[0] for r in rows)
            per_flow: dict[str, list[tuple[str | None, dict[str, Any]]]] = {}
            accepted = duplicates = 0
            for k, message in keyed:
                if k is not None and k not in fresh:
                    duplicates += 1
                    continue
                if k is not None:
                    fresh.discard(k)  # a second copy in this same call is a duplicate
                accepted += 1
                for flow in unique(route(message)):
                    per_flow.setdefault(flow, []).append((k, message))
            batches = {flow: _new_id() for flow in per_flow}
            await self._write_batches(conn, batches, per_flow, now)
        return AcceptResult(batches=batches, accepted=accepted, duplicates=duplicates)

    async def _write_batches(
        self,
        conn: AsyncConnection,
        batches: dict[str, str],
        per_flow: dict[str, list[tuple[str | None, dict[str, Any]]]],
        now: int,
    ) -> None:
        if not batches:
            return
        await conn.execute(
            sa.insert(t.inbox_batches),
            [
                {
                    "id": bid,
                    "flow": flow,
                    "status": "pending",
                    "attempts": 0,
                    "size": len(per_flow[flow]),
                    "created_us": now,
                    "updated_us": now,
                }
                for flow, bid in batches.items()
            ],
        )
        rows = [
            {"batch_id": batches[flow], "pos": pos, "message_id": k, "body": dumps(m)}
            for flow, items in per_flow.items()
            for pos, (k, m) in enumerate(items)
        ]
        for part in chunks(rows):
            await conn.execute(sa.insert(t.inbox_messages), part)

    async def _lease_where(
        self, where: sa.ColumnElement[bool], owner: str, lease_seconds: float, limit: int | None
    ) -> list[Batch]:
        b = t.inbox_batches.c
        now = now_us()
        expires = now + int(lease_seconds * 1_000_000)
        async with self._tx() as conn:
            query = sa.select(b.id).where(where, _claimable(now)).order_by(b.created_us, b.id).limit(limit)
            if self.is_postgres:
                query = query.with_for_update(skip_locked=True)
            ids = [r[0] for r in await conn.execute(query)]
            if not ids:
                return []
            exhausted = [
                r.id for r in await conn.execute(sa.select(b.id).where(b.id.in_(ids), b.attempts >= self.max_attempts))
            ]
            if exhausted:
                await self._give_up(conn, exhausted, now)
                ids = [i for i in ids if i not in set(exhausted)]
                if not ids:
                    return []
            await conn.execute(
                sa.update(t.inbox_batches)
                .where(b.id.in_(ids))
                .values(
                    status="leased",
                    lease_owner=owner,
                    lease_expires_us=expires,
                    attempts=b.attempts + 1,
                    updated_us=now,
                    summary=dumps({"holder": lease_holder()}),
                )
            )
            return await self._load(conn, ids)

    #: Per store instance so tests can lower it; see :data:`MAX_ATTEMPTS`.
    max_attempts: int = MAX_ATTEMPTS

    async def _give_up(self, conn: AsyncConnection, ids: list[str], now: int) -> None:
        """Dead-letter every message of these batches with their last error, and close them (``partial``)."""
        for batch in await self._load(conn, ids):
            last = _summary(batch.summary_text).get("last_error")
            why = last or "no run completed it (worker killed or run crashed before recording an error)"
            reason = f"gave up after {batch.attempts} attempts: {why}"
            # Messages an earlier attempt delivered are not failures: only the rest is dead-lettered (a run retried
            # for a transient failure delivers part of its batch).
            marks = [delivered_key(batch.flow, mid) if mid else None for mid in batch.message_ids]
            delivered = await done_keys(conn, [m for m in marks if m])
            await self._upsert_dead_letters(
                conn,
                [
                    DeadLetterIn(
                        flow=batch.flow, message=m if isinstance(m, dict) else {"raw": m}, message_id=mid, reason=reason
                    )
                    for mid, m, mark in zip(batch.message_ids, batch.messages, marks, strict=False)
                    if mark not in delivered
                ],
            )
        await conn.execute(
            sa.update(t.inbox_batches)
            .where(t.inbox_batches.c.id.in_(ids))
            .values(
                status="partial",
                lease_expires_us=None,
                updated_us=now,
                summary=dumps({"gave_up": True, "reason": "attempts exhausted"}),
            )
        )

    async def record_failure(self, batch_id: str, owner: str, error: str) -> bool:
        """A run over this leased batch failed with ``error``: keep it for the dead letters the attempt cap writes,
        and shorten the lease so the retry comes after a backoff (30 s, 60 s, ...) rather than the full lease."""
        b = t.inbox_batches.c
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    sa.select(b.attempts, b.lease_expires_us, b.summary).where(
                        b.id == batch_id, b.status == "leased", b.lease_owner == owner
                    )
                )
            ).first()
            if row is None:
                return False
            now = now_us()
            backoff = int(RETRY_BASE_SECONDS * 2 ** max(0, row.attempts - 1) * 1_000_000)
            expires = min(row.lease_expires_us or now + backoff, now + backoff)
            summary = _summary(row.summary) | {"last_error": error}
            await conn.execute(
                sa.update(t.inbox_batches)
                .where(b.id == batch_id)
                .values(summary=dumps(summary), lease_expires_us=expires, updated_us=now)
            )
            return True

    async def reclaim_dead_holders(self) -> list[str]:
        """Expire the leases held by processes of this host that no longer run (a SIGKILLed serve or worker), so
        the restart takes their batches over at once instead of after the full lease (600 s by default).

        Each lease records its holder (``host:pid``); only holders on this host can be checked, so a dead process
        on another host still waits for the lease to expire. Returns the batch ids reclaimed."""
        b = t.inbox_batches.c
        host = socket.gethostname()
        async with self._tx() as conn:
            rows = (
                await conn.execute(
                    sa.select(b.id, b.lease_owner, b.summary).where(b.status == "leased", b.lease_expires_us > now_us())
                )
            ).all()
            dead = [r for r in rows if _holder_is_dead(_summary(r.summary).get("holder"), host)]
            for r in dead:  # per row: only if still held by the same lease (not taken over meanwhile)
                await conn.execute(
                    sa.update(t.inbox_batches)
                    .where(b.id == r.id, b.status == "leased", b.lease_owner == r.lease_owner)
                    .values(lease_expires_us=now_us() - 1, updated_us=now_us())
                )
        return [r.id for r in dead]

    async def _load(self, conn: AsyncConnection, ids: list[str]) -> list[Batch]:
        b, m = t.inbox_batches.c, t.inbox_messages.c
        rows = (await conn.execute(sa.select(t.inbox_batches).where(b.id.in_(ids)).order_by(b.created_us, b.id))).all()
        bodies: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        keys: dict[str, list[str | None]] = {i: [] for i in ids}
        for r in await conn.execute(
            sa.select(m.batch_id, m.message_id, m.body).where(m.batch_id.in_(ids)).order_by(m.batch_id, m.pos)
        ):
            bodies[r.batch_id].append(loads(r.body))
            keys[r.batch_id].append(r.message_id)
        return [
            Batch(
                id=r.id,
                flow=r.flow,
                status=r.status,
                attempts=r.attempts,
                messages=bodies[r.id],
                created_at=from_us(r.created_us),
                lease_owner=r.lease_owner,  # type: ignore[arg-type]
                lease_expires_at=from_us(r.lease_expires_us),
                message_ids=keys[r.id],
                summary_text=r.summary,
            )
            for r in rows
        ]

    async def lease(self, batch_ids: Sequence[str], owner: str, lease_seconds: float) -> list[Batch]:
        """Lease these batches if they are pending or their lease expired; others (done, held) are left out."""
        ids = unique(batch_ids)
        if not ids:
            return []
        return await self._lease_where(t.inbox_batches.c.id.in_(ids), owner, lease_seconds, None)

    async def claim(self, owner: str, lease_seconds: float, limit: int, flow: str | None = None) -> list[Batch]:
        """Lease up to ``limit`` claimable batches, oldest first (workers polling the inbox)."""
        where = sa.true() if flow is None else t.inbox_batches.c.flow == flow
        return await self._lease_where(where, owner, lease_seconds, limit)

    async def _owned_update(self, batch_id: str, owner: str, values: dict[str, Any]) -> bool:
        b = t.inbox_batches.c
        async with self._tx() as conn:
            result = await conn.execute(
                sa.update(t.inbox_batches)
                .where(b.id == batch_id, b.status == "leased", b.lease_owner == owner)
                .values(updated_us=now_us(), **values)
            )
            return bool(result.rowcount)

    async def complete(
        self, batch_id: str, owner: str, status: str = "done", summary: dict[str, Any] | None = None
    ) -> bool:
        """Finish a leased batch. False means the lease was lost (expired and taken by another worker)."""
        if status not in _FINAL:
            raise ValueError(f"status must be one of {_FINAL}, not {status!r}")
        return await self._owned_update(
            batch_id,
            owner,
            {"status": status, "summary": None if summary is None else dumps(summary), "lease_expires_us": None},
        )

    async def renew(self, batch_id: str, owner: str, lease_seconds: float) -> bool:
        """Extend a lease still held by ``owner``; False means it was lost and the work should stop."""
        return await self._owned_update(
            batch_id, owner, {"lease_expires_us": now_us() + int(lease_seconds * 1_000_000)}
        )

    async def pending_batches(
        self, flow: str | None = None, older_than_seconds: float = 0, redispatch_after_seconds: float | None = None
    ) -> list[BatchInfo]:
        """Batches a sweeper should (re)dispatch: pending and never dispatched, or leased with an expired lease.

        ``redispatch_after_seconds`` also returns pending batches dispatched that long ago but never leased (the
        flow run that should have taken them died before starting).
        """
        await self.reclaim_dead_holders()  # the sweeper (and a restart's first pass) retakes a dead process' work
        b = t.inbox_batches.c
        now = now_us()
        cutoff = now - int(older_than_seconds * 1_000_000)
        never = sa.and_(b.status == "pending", b.dispatched_run_id.is_(None))
        parts: list[sa.ColumnElement[bool]] = [never, sa.and_(b.status == "leased", b.lease_expires_us < now)]
        if redispatch_after_seconds is not None:
            stale = now - int(redispatch_after_seconds * 1_000_000)
            parts.append(sa.and_(b.status == "pending", b.dispatched_us < stale))
        query = sa.select(t.inbox_batches).where(sa.or_(*parts), b.created_us <= cutoff)
        if flow is not None:
            query = query.where(b.flow == flow)
        async with self._tx() as conn:
            return [_info(r) for r in await conn.execute(query.order_by(b.created_us, b.id))]

    async def mark_dispatched(self, batch_ids: Sequence[str], run_id: str) -> None:
        b = t.inbox_batches.c
        async with self._tx() as conn:
            for part in chunks(unique(batch_ids)):
                await conn.execute(
                    sa.update(t.inbox_batches)
                    .where(b.id.in_(part))
                    .values(dispatched_run_id=run_id, dispatched_us=now_us())
                )

    async def get_batches(self, batch_ids: Sequence[str]) -> list[BatchInfo]:
        b = t.inbox_batches.c
        async with self._tx() as conn:
            return [
                _info(r)
                for r in await conn.execute(
                    sa.select(t.inbox_batches).where(b.id.in_(unique(batch_ids))).order_by(b.created_us, b.id)
                )
            ]

    async def backlog(self) -> dict[str, int]:
        """Messages not yet finished (pending or leased), per flow: the number a health check or scaler wants."""
        b = t.inbox_batches.c
        async with self._tx() as conn:
            rows = await conn.execute(
                sa.select(b.flow, sa.func.sum(b.size)).where(b.status.in_(_OPEN)).group_by(b.flow)
            )
            return {r[0]: int(r[1] or 0) for r in rows}

    # --- staging for `klaviyo-segment run` (perf): the CLI's own batches, invisible to serve's dispatcher ---

    async def stage(self, flow: str, messages: list[Any], owner: str, lease_seconds: float) -> str:
        """Write one batch for ``flow`` that is already leased by ``owner`` (a ``STAGED_PREFIX`` id), so neither
        ``claim`` nor ``pending_batches`` (serve's dispatcher and sweeper) takes it while the lease holds; the
        flow run ``run`` starts names it in ``batch_ids`` and takes it over (``take_over_staged``). If ``run``
        dies, the lease expires and a ``serve`` on the same store delivers the batch: nothing is lost."""
        if not owner.startswith(STAGED_PREFIX):
            raise ValueError(f"a staging owner starts with {STAGED_PREFIX!r}")
        now = now_us()
        bid = _new_id()
        async with self._tx() as conn:
            await conn.execute(
                sa.insert(t.inbox_batches),
                [
                    {
                        "id": bid,
                        "flow": flow,
                        "status": "leased",
                        "attempts": 0,
                        "size": len(messages),
                        "lease_owner": owner,
                        "lease_expires_us": now + int(lease_seconds * 1_000_000),
                        "created_us": now,
                        "updated_us": now,
                    }
                ],
            )
            rows = [
                {
                    "batch_id": bid,
                    "pos": pos,
                    "body": dumps(m),
                    "message_id": m.get("messageId")
                    if isinstance(m, dict) and isinstance(m.get("messageId"), str)
                    else None,
                }
                for pos, m in enumerate(messages)
            ]
            for part in chunks(rows):
                await conn.execute(sa.insert(t.inbox_messages), part)
        return bid

    async def renew_staged(self, batch_ids: Sequence[str], owner: str, lease_seconds: float) -> int:
        """Extend the staging lease of the batches ``owner`` still holds (one statement per 500 ids)."""
        b = t.inbox_batches.c
        expires = now_us() + int(lease_seconds * 1_000_000)
        renewed = 0
        async with self._tx() as conn:
            for part in chunks(unique(batch_ids)):
                result = await conn.execute(
                    sa.update(t.inbox_batches)
                    .where(b.id.in_(part), b.status == "leased", b.lease_owner == owner)
                    .values(lease_expires_us=expires)
                )
                renewed += result.rowcount or 0
        return renewed

    async def take_over_staged(self, batch_ids: Sequence[str], owner: str, lease_seconds: float) -> list[Batch]:
        """Lease batches named by id that a ``run`` staged (owner ``run:...``, lease not expired) to ``owner``,
        the flow run that ``run`` started for them. Expired staged batches are plain claimable ones (``lease``)."""
        b = t.inbox_batches.c
        staged = b.lease_owner.startswith(STAGED_PREFIX, autoescape=True)
        alive = b.lease_expires_us >= now_us()
        return await self._take_over(batch_ids, owner, lease_seconds, b.status == "leased", staged, alive)

    async def retake_own(self, batch_ids: Sequence[str], owner: str, lease_seconds: float) -> list[Batch]:
        """Lease again the ``partial`` batches that ``owner`` itself finished: a Retry of a Failed flow run (UI,
        ``prefect flow-run retry``) runs under the same flow-run id, and without this it would find its batches
        closed and process nothing. Messages delivered before are skipped as duplicates; failed ones are sent
        again and close their dead letters. Batches another run finished are left alone."""
        b = t.inbox_batches.c
        return await self._take_over(batch_ids, owner, lease_seconds, b.status == "partial", b.lease_owner == owner)

    async def _take_over(
        self, batch_ids: Sequence[str], owner: str, lease_seconds: float, *where: sa.ColumnElement[bool]
    ) -> list[Batch]:
        ids = unique(batch_ids)
        if not ids:
            return []
        b = t.inbox_batches.c
        now = now_us()
        async with self._tx() as conn:
            query = sa.select(b.id).where(b.id.in_(ids), *where)
            if self.is_postgres:
                query = query.with_for_update(skip_locked=True)
            taken = [r[0] for r in await conn.execute(query)]
            if not taken:
                return []
            await conn.execute(
                sa.update(t.inbox_batches)
                .where(b.id.in_(taken))
                .values(
                    status="leased",
                    lease_owner=owner,
                    lease_expires_us=now + int(lease_seconds * 1_000_000),
                    attempts=b.attempts + 1,
                    updated_us=now,
                )
            )
            return await self._load(conn, taken)

    async def discard_staged(self, batch_ids: Sequence[str], owner: str) -> None:
        """Delete batches ``owner`` staged but never handed to a flow run (``run`` found the file broken)."""
        b, m = t.inbox_batches.c, t.inbox_messages.c
        async with self._tx() as conn:
            for part in chunks(unique(batch_ids)):
                owned = sa.select(b.id).where(b.id.in_(part), b.lease_owner == owner)
                await conn.execute(sa.delete(t.inbox_messages).where(m.batch_id.in_(owned)))
                await conn.execute(sa.delete(t.inbox_batches).where(b.id.in_(part), b.lease_owner == owner))


#: Lease owners of batches ``klaviyo-segment run`` staged: ``run:<uuid>``.
STAGED_PREFIX = "run:"
