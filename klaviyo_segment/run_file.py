"""``klaviyo-segment run FLOW --input FILE``: deliver a file of any size through the receiver's path.

Passing messages inline as flow parameters fails above 512 KB (Prefect answers 422; ~2,000 messages) and stores
message content (PII) in Prefect's database. Instead the file is streamed into the state store as inbox batches
(``BATCH_SIZE`` messages each) leased by this command (``run:<uuid>``: serve's dispatcher leaves them alone), and
flow runs are started with ``batch_ids`` only, ``BATCHES_PER_RUN`` batches each, in file order (overlapping where
the flow's spec allows it). Memory is bounded by the batches of the runs in flight, whatever the file size; the
summary is added up run by run.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from klaviyo_segment import constants
from klaviyo_segment.flowspec import FlowSpec
from klaviyo_segment.run_state import call_flow

BATCH_SIZE = constants.RUN_BATCH_SIZE
BATCHES_PER_RUN = constants.RUN_BATCHES_PER_RUN
#: Non-sent outcomes kept for the table ``run`` prints (the counts cover all of them).
KEEP_OUTCOMES = 500

Progress = Callable[[str, int, int | None], None]  # (phase, completed, total)


class Totals:
    """The contract summary added up over several flow runs, keeping only the first ``KEEP_OUTCOMES``
    skipped/failed outcomes (a million failed messages must not be held in memory for a table of 500)."""

    def __init__(self, flow: str) -> None:
        self.summary: dict[str, Any] = {
            "flow": flow,
            "received": 0,
            "sent": 0,
            "skipped": 0,
            "failed": 0,
            "reasons": {},
        }
        self.reasons: Counter[str] = Counter()
        self.outcomes: list[dict[str, Any]] = []
        self.more = 0  # skipped/failed outcomes not kept

    def add(self, part: dict[str, Any]) -> None:
        for key, value in part.items():
            if key in ("received", "sent", "skipped", "failed"):
                self.summary[key] += int(value)
            elif key == "reasons":
                self.reasons.update(value)
            elif key == "outcomes":
                for outcome in value:
                    if outcome.get("status") == "sent":
                        continue
                    if len(self.outcomes) < KEEP_OUTCOMES:
                        self.outcomes.append(outcome)
                    else:
                        self.more += 1
            elif key != "flow":
                self.summary.setdefault(key, value)
        self.summary["reasons"] = dict(sorted(self.reasons.items()))


async def stage_file(
    store: Any,
    flow: str,
    path: Path,
    owner: str,
    lease_seconds: float,
    progress: Progress,
    batch_size: int = BATCH_SIZE,
) -> tuple[list[str], int]:
    """Stream ``path`` into leased inbox batches; returns (batch ids, message count). A broken file (ConfigError)
    removes what was staged, so nothing of it is delivered (as before: the whole file is refused)."""
    from klaviyo_segment.inputs import iter_messages

    size = path.stat().st_size if path.exists() else None
    ids: list[str] = []
    count = 0
    chunk: list[Any] = []
    try:
        for message, consumed in iter_messages(path):
            chunk.append(message)
            count += 1
            if len(chunk) >= batch_size:
                ids.append(await store.stage(flow, chunk, owner, lease_seconds))
                chunk = []
                progress("staging", consumed, size)
        if chunk:
            ids.append(await store.stage(flow, chunk, owner, lease_seconds))
    except BaseException:
        await store.discard_staged(ids, owner)
        raise
    progress("staging", size or 0, size)
    return ids, count


async def run_file(
    spec: FlowSpec,
    path: Path,
    document: dict[str, Any] | None,
    progress: Progress,
    *,
    batch_size: int = BATCH_SIZE,
    batches_per_run: int = BATCHES_PER_RUN,
) -> Totals:
    """Stage ``path``, then one flow run per ``batches_per_run`` batches; their summaries added up."""
    from klaviyo_segment.runtime import lease_seconds
    from klaviyo_segment.settings import credentials_document, resolve_store_url
    from klaviyo_segment.store import STAGED_PREFIX, Store

    owner = f"{STAGED_PREFIX}{uuid.uuid4().hex}"
    store = await Store.open(resolve_store_url(config=credentials_document(document)))
    try:
        ids, count = await stage_file(store, spec.name, path, owner, lease_seconds(), progress, batch_size)
    finally:
        await store.close()
    totals = Totals(spec.name)
    progress("delivering", 0, count)
    # Runs overlap where the flow allows it (forward-track: one maps while another waits on the rate limit);
    # the semaphore hands out the runs in file order.
    gate = asyncio.Semaphore(spec.overlapping_runs)

    async def deliver(start: int) -> None:
        async with gate:
            part, rest = ids[start : start + batches_per_run], ids[start:]
            store = await Store.open(resolve_store_url(config=credentials_document(document)))
            try:  # the batches still waiting keep their lease for as long as the runs before them take
                await store.renew_staged(rest, owner, lease_seconds())
            finally:
                await store.close()
            # return_state: a run with dead letters ends Failed, which would raise before its summary is read
            summary, _state = await call_flow(spec.flow, batch_ids=part, config=document)
            totals.add(summary)
            progress("delivering", totals.summary["received"], count)

    try:
        async with asyncio.TaskGroup() as group:  # a crashed run cancels the others; their batches stay staged
            for start in range(0, len(ids), batches_per_run):
                group.create_task(deliver(start))
    except BaseExceptionGroup as group_error:  # the caller handles the crash itself, as with one run at a time
        raise group_error.exceptions[0] from None
    return totals
