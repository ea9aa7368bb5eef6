"""ingest-segment: the event path's front door on a work pool. One webhook event (Prefect Cloud webhook, or any
``segment.*`` event) -> its messages staged in the state store as one inbox batch per flow that has work -> one
``klaviyo-segment.batch.ready`` event per such flow, carrying only batch ids.

Why: triggering every event flow from the webhook event started four deployments per ``segment.track`` (most had
nothing to do) and put the messages (emails, phones) in each run's parameters, where Prefect keeps them. Here the
trigger passes only ``{{ event.id | string }}`` (a lone ``{{ event.id }}`` is rendered ``| tojson`` by Prefect,
which fails on the UUID: no run); the messages are read back from Prefect's events API and written to the
store, where retention, ``delete`` and redaction apply. The event flows' deployments trigger on their own
``klaviyo-segment.batch.ready`` event with ``batch_ids`` parameters, exactly what the receiver's deployments
dispatch passes. The webhook event itself stays in Prefect's events table for its retention period
(docs/cloud-webhooks.md).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from prefect import flow

from klaviyo_segment.errors import ConfigError
from klaviyo_segment.flowspec import FlowSpec

NAME = "ingest-segment"
#: Emitted once per flow that got a batch; its deployment's trigger matches the resource below.
READY_EVENT = "klaviyo-segment.batch.ready"
RESOURCE_PREFIX = "klaviyo-segment.flow."
#: How long a run waits for its triggering event to become readable (the server persists events in batches).
EVENT_WAIT_SECONDS = 60.0
#: How far back the event is looked up (Prefect's default events retention is 7 days).
EVENT_LOOKBACK = timedelta(days=8)

logger = logging.getLogger("klaviyo_segment.flows.ingest")


async def read_event_messages(event_id: str, wait: float = EVENT_WAIT_SECONDS) -> Any:
    """The ``messages`` of event ``event_id`` from the Prefect events API, waiting while it is not stored yet."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventIDFilter, EventOccurredFilter
    from prefect.types._datetime import now

    try:
        wanted = UUID(str(event_id))
    except ValueError:
        raise ConfigError(
            f"event_id {event_id!r} is not an event id (the trigger passes {{{{ event.id | string }}}})"
        ) from None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    async with get_client() as client:
        while True:
            page = await client.read_events(
                EventFilter(
                    id=EventIDFilter(id=[wanted]),
                    occurred=EventOccurredFilter(since=now("UTC") - EVENT_LOOKBACK),  # type: ignore[arg-type]
                ),
                limit=1,
            )
            if page.events:
                return page.events[0].payload.get("messages")
            if loop.time() >= deadline:
                raise ConfigError(
                    f"event {event_id} not found in Prefect's events (expired after its retention "
                    "period, or never stored)"
                )
            await asyncio.sleep(1.0)


def emit_ready(batches: dict[str, str]) -> int:
    """One ``klaviyo-segment.batch.ready`` event per flow; the payload holds batch ids only, never messages."""
    from prefect.events import emit_event

    for flow_name, batch_id in batches.items():
        emit_event(
            event=READY_EVENT,
            resource={"prefect.resource.id": f"{RESOURCE_PREFIX}{flow_name}", "prefect.resource.name": flow_name},
            payload={"batch_ids": [batch_id]},
        )
    return len(batches)


async def stage(messages: Any, config_block: str | None = None) -> dict[str, Any]:
    """Validate at the door, route with ``routing.flows_for`` and commit one batch per flow (duplicates of
    messages accepted before are dropped by the inbox). Returns counts and {flow: batch id}."""
    from klaviyo_segment.ingress.receiver import Rejected, segment_entries
    from klaviyo_segment.ingress.runner import runnable_flows
    from klaviyo_segment.routing import flows_for
    from klaviyo_segment.runtime import load_flow_config
    from klaviyo_segment.settings import credentials_document, resolve_store_url
    from klaviyo_segment.store import Store

    config = load_flow_config(None, config_block)
    allowed = set(runnable_flows(config))
    payload = messages if isinstance(messages, list) else [messages]
    try:
        entries, dead = segment_entries(payload, lambda m: [f for f in flows_for(m, config) if f in allowed])
    except Rejected as exc:  # e.g. an empty batch: nothing to stage
        return {"received": 0, "accepted": 0, "duplicates": 0, "dead_letters": 0, "batches": {}, "rejected": exc.reason}
    store = await Store.open(resolve_store_url(config=credentials_document()))
    try:
        if dead:
            await store.add_dead_letters(dead)
        routes = {id(e[2]): e for e in entries}
        result = await store.accept(
            [e[2] for e in entries], key=lambda m: routes[id(m)][0], route=lambda m: routes[id(m)][1]
        )
    finally:
        await store.close()
    return {
        "received": len(payload),
        "accepted": result.accepted,
        "duplicates": result.duplicates,
        "dead_letters": len(dead),
        "batches": dict(result.batches),
    }


@flow(
    name=NAME,
    description="Stage a Segment webhook event's messages in the state store and start only the "
    "flows that have work (one klaviyo-segment.batch.ready event each).",
    flow_run_name="ingest-segment · event {event_id:.8}…",  # the event's id only (no content), not a random name
    log_prints=False,
)
async def ingest_segment(event_id: str, config_block: str | None = None) -> dict:
    """``event_id`` is the triggering event's id (``{{ event.id | string }}``): messages never become parameters."""
    from prefect.logging import get_run_logger

    summary = await stage(await read_event_messages(event_id), config_block)
    summary["events"] = emit_ready(summary["batches"])
    get_run_logger().info(
        "ingest: %d received, %d staged, %d duplicates, %d refused at the door; batches for %s",
        summary["received"],
        summary["accepted"],
        summary["duplicates"],
        summary["dead_letters"],
        ", ".join(sorted(summary["batches"])) or "no flow",
    )
    return summary


SPEC = FlowSpec(name=NAME, flow=ingest_segment)
