"""Durable acknowledgement with group commit: many HTTP requests, one store transaction per commit window.

Why: Segment retries anything it does not see acknowledged, so a 200 must mean "on disk". Committing every request
on its own would make the disk (one fsync per transaction on SQLite) the throughput limit; instead requests queue
their messages here, and a single committer writes everything that arrived within the window (flush at
``max_messages`` or after ``max_wait`` seconds, whichever comes first; no wait at all when the queue already
holds a full group) in ONE ``Store.accept`` call. Each request's future resolves only after that transaction
committed; a queue deeper than ``max_queued`` messages is refused up front (429 + Retry-After) instead of growing
memory without bound.

A failed group transaction is retried request by request, so one request the store cannot take fails alone
(503) instead of failing everyone it shared the transaction with; two failures in a row mean the store itself is
failing, and the rest of the group is answered 503 at once. (The receiver validates every message first — see
:mod:`door` — so this is the second line of defence.) Dead letters of refused batch elements are written in the
same commit step, before the messages, so a 200 means both are on disk.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from klaviyo_segment.store.models import DeadLetterIn

log = logging.getLogger("klaviyo_segment.ingress.groupcommit")

#: One message as the receiver prepared it: (dedupe key, target flows, body).
Entry = tuple[str | None, Sequence[str], dict[str, Any]]
OnCommit = Callable[[dict[str, str]], None]


class Overloaded(Exception):
    """Too many messages waiting for a commit; the sender should retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"overloaded, retry after {retry_after}s")
        self.retry_after = retry_after


class CommitFailed(Exception):
    """The transaction holding this request's messages did not commit (nothing of it is stored)."""


@dataclass
class CommitStats:
    commits: int = 0
    failed_commits: int = 0
    messages: int = 0
    accepted: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    sizes: list[int] = field(default_factory=list)


@dataclass
class _Request:
    entries: list[Entry]
    done: asyncio.Future[None]
    dead: Sequence[DeadLetterIn] = ()


class GroupCommitter:
    """Owns the one committer task of a receiver process. Use ``async with`` or ``start()``/``stop()``."""

    def __init__(
        self,
        store: Any,
        *,
        max_messages: int = 2000,
        max_wait: float = 0.02,
        max_queued: int = 50_000,
        retry_after: int = 2,
        on_commit: OnCommit | None = None,
    ) -> None:
        self.store = store
        self.max_messages, self.max_wait = max_messages, max_wait
        self.max_queued, self.retry_after = max_queued, retry_after
        self.on_commit = on_commit
        self.stats = CommitStats()
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._queued = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        """Messages waiting for (or inside) a commit right now."""
        return self._queued

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="group-commit")

    async def stop(self) -> None:
        """Stop taking new commits; requests still queued are failed (their senders retry)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        while not self._queue.empty():
            request = self._queue.get_nowait()
            if not request.done.done():
                request.done.set_exception(CommitFailed("receiver shutting down"))

    async def __aenter__(self) -> GroupCommitter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def submit(self, entries: list[Entry], dead: Sequence[DeadLetterIn] = ()) -> None:
        """Return once ``entries`` (and ``dead`` letters) are committed; raise Overloaded (nothing queued) or
        CommitFailed."""
        if self._task is None:
            raise CommitFailed("committer not running")
        if not entries and not dead:
            return
        if self._queued and self._queued + len(entries) > self.max_queued:
            raise Overloaded(self.retry_after)
        request = _Request(entries, asyncio.get_running_loop().create_future(), tuple(dead))
        self._queued += len(entries)
        self._queue.put_nowait(request)
        # shield: a client that hangs up must not cancel the commit other requests share
        await asyncio.shield(request.done)

    async def _gather(self) -> list[_Request]:
        """One commit window: the first request, then whatever arrives until full or ``max_wait`` passed."""
        group = [await self._queue.get()]
        size = len(group[0].entries)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while size < self.max_messages:
            if self._queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    request = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                request = self._queue.get_nowait()
            group.append(request)
            size += len(request.entries)
        return group

    async def _run(self) -> None:
        while True:
            group = await self._gather()
            await self._commit(group)

    async def _commit(self, group: list[_Request]) -> None:
        try:
            await self._write(group)
        except asyncio.CancelledError:
            self._settle(group, CommitFailed("receiver shutting down"))
            raise
        except Exception as exc:  # noqa: BLE001 - any store failure means "not committed": 503, sender retries
            self.stats.failed_commits += 1
            log.warning("group commit of %d requests failed: %s", len(group), type(exc).__name__)
            if len(group) == 1:
                self._settle(group, CommitFailed(type(exc).__name__))
            else:
                await self._isolate(group)
            return
        self._settle(group, None)

    async def _isolate(self, group: list[_Request]) -> None:
        """Retry each request alone, so a request the store cannot take fails only itself."""
        failures = 0
        for i, request in enumerate(group):
            if failures >= 2:  # the store itself is failing: do not hammer it once per request
                self._settle(group[i:], CommitFailed("store failing"))
                return
            try:
                await self._write([request])
            except asyncio.CancelledError:
                self._settle(group[i:], CommitFailed("receiver shutting down"))
                raise
            except Exception as exc:  # noqa: BLE001 - as above, for this request only
                failures += 1
                self.stats.failed_commits += 1
                self._settle([request], CommitFailed(type(exc).__name__))
                continue
            failures = 0
            self._settle([request], None)

    async def _write(self, group: list[_Request]) -> None:
        """Dead letters first (a retry rewrites them harmlessly), then the messages in one transaction."""
        dead = [letter for request in group for letter in request.dead]
        if dead:
            await self.store.add_dead_letters(dead)
            self.stats.dead_letters += len(dead)
        routes: dict[int, Entry] = {}
        bodies: list[dict[str, Any]] = []
        for request in group:
            for entry in request.entries:
                routes[id(entry[2])] = entry
                bodies.append(entry[2])
        if not bodies:
            return
        result = await self.store.accept(bodies, key=lambda m: routes[id(m)][0], route=lambda m: routes[id(m)][1])
        self.stats.commits += 1
        self.stats.messages += len(bodies)
        self.stats.accepted += result.accepted
        self.stats.duplicates += result.duplicates
        self.stats.sizes.append(len(bodies))
        if self.on_commit is not None and result.batches:
            try:
                self.on_commit(dict(result.batches))
            except Exception:  # noqa: BLE001 - dispatch is best effort; the sweeper picks the batches up
                log.exception("on_commit callback failed")

    def _settle(self, group: list[_Request], error: Exception | None) -> None:
        for request in group:
            self._queued -= len(request.entries)
            if request.done.done():
                continue
            if error is None:
                request.done.set_result(None)
            else:
                request.done.set_exception(error)
