"""Flow ``forward-track``: Segment track (and, when enabled, page/screen) -> Klaviyo events via bulk create jobs.

Steps: common rules -> page/screen switch, loop prevention, track filter -> anonymous ids resolved through the
alias map -> mapping (one message may become several events) -> backfill decision -> one bulk create per chunk
-> a message is sent only when every event it produced was accepted.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from klaviyo_segment import flowkit
from klaviyo_segment.flowspec import FlowSpec
from klaviyo_segment.mapping import EventMapping
from klaviyo_segment.outcomes import Outcome, Status
from klaviyo_segment.routing import AUDIENCE_EVENTS
from klaviyo_segment.run_report import flow_run_name
from klaviyo_segment.runtime import FlowEnv, Item, common_rules, outcome, run_flow
from klaviyo_segment.segment_spec import sent_by_us

NAME = "forward-track"
PAGE_SCREEN_METRICS = {"page": "Viewed Page", "screen": "Viewed Screen"}


def accepts(item: Item) -> str | None:
    msg = item.msg
    if msg is None:
        return "not for this flow"
    if msg.type == "track":
        return "not for this flow" if msg.event in AUDIENCE_EVENTS else None
    return None if msg.type in PAGE_SCREEN_METRICS else "not for this flow"


def routes(msg: dict[str, Any], config: Any) -> bool:
    """Tracks other than audience membership, and page/screen (the ``page_screen`` switch applies in the flow,
    so the skip is recorded as an outcome)."""
    kind = msg.get("type")
    if kind == "track":
        return msg.get("event") not in AUDIENCE_EVENTS
    return kind in PAGE_SCREEN_METRICS


def as_track(item: Item) -> dict[str, Any]:
    """The message as a track call (page/screen become Viewed Page/Viewed Screen), so one template chain and
    one filter handle all three types."""
    assert item.msg is not None and isinstance(item.raw, dict)
    message = dict(item.raw)
    if item.msg.type in PAGE_SCREEN_METRICS:
        properties = dict(item.msg.properties)
        if item.msg.name and "name" not in properties:
            properties["name"] = item.msg.name
        message.update(type="track", event=PAGE_SCREEN_METRICS[item.msg.type], properties=properties)
    return message


def _screen(env: FlowEnv, item: Item) -> str | None:
    """Why a message this flow accepts is still not sent (None = send it)."""
    assert item.msg is not None
    if item.msg.type in PAGE_SCREEN_METRICS and not env.config.page_screen.enabled:
        return "page/screen disabled"
    if sent_by_us(item.msg):
        return "sent by klaviyo-segment: loop prevention"
    return None


def _task_event(mapping: EventMapping, item: Item, backfill: bool) -> dict[str, Any]:
    """The bulk task's item; unique_id falls back to the message key so a resend never double-counts."""
    event: dict[str, Any] = {
        "metric": mapping.metric,
        "profile": mapping.profile,
        "properties": mapping.properties,
        "unique_id": mapping.unique_id or item.key,
    }
    for key in ("time", "value", "value_currency"):
        if getattr(mapping, key) is not None:
            event[key] = getattr(mapping, key)
    if backfill:
        event["backfill"] = True
    return event


async def process(env: FlowEnv, items: list[Item], outcomes: dict[str, Outcome]) -> None:
    """The template's steps; every message gets exactly one outcome."""
    todo = await common_rules(env, items, outcomes, accepts)
    compiled = env.config.compiled()  # once: a pydantic private attribute costs ~10 us per read
    ready: list[tuple[Item, dict[str, Any]]] = []
    for item in todo:
        reason = _screen(env, item)
        message = as_track(item)
        reason = reason or compiled.track_filter.check(message)
        if reason:
            outcomes[item.key] = outcome(item, Status.SKIPPED, reason)
        else:
            ready.append((item, message))
    anonymous = [i.msg.anonymous_id for i, _ in ready if i.msg and i.msg.anonymous_id and not i.msg.user_id]
    aliases = await flowkit.resolve_aliases(env, anonymous)
    events: list[dict[str, Any]] = []
    owners: list[tuple[Item, list[int], list[str]]] = []
    for item, message in ready:
        assert item.msg is not None
        known = aliases.get(item.msg.anonymous_id or "") if not item.msg.user_id else None
        if known and flowkit.alias_identity(known):
            message = flowkit.with_alias_identity(message, known)
        mapped = flowkit.map_message(compiled.track, message, EventMapping)
        if mapped is None:
            outcomes[item.key] = outcome(item, Status.SKIPPED, "no template matched")
            continue
        if isinstance(mapped, str):
            outcomes[item.key] = outcome(item, Status.FAILED, mapped)
            continue
        backfill = flowkit.is_backfill(env, item)
        positions = list(range(len(events), len(events) + len(mapped)))
        events += [_task_event(m, item, backfill) for m in mapped]
        owners.append((item, positions, [w for m in mapped for w in m.warnings]))
    await _send(env, events, owners, outcomes)


async def _send(
    env: FlowEnv,
    events: list[dict[str, Any]],
    owners: list[tuple[Item, list[int], list[str]]],
    outcomes: dict[str, Outcome],
) -> None:
    from klaviyo_segment.tasks.klaviyo_events import bulk_create_events

    results = await env.call(bulk_create_events, events, env.klaviyo) if events else []
    for item, positions, warnings in owners:
        failures = [results[p] for p in positions if not results[p].ok]
        if not positions:
            outcomes[item.key] = outcome(item, Status.SKIPPED, "no events mapped", warnings=warnings)
        elif failures:
            what = f"{len(failures)} of {len(positions)} events" if len(positions) > 1 else "event"
            outcomes[item.key] = flowkit.api_failure(item, failures[0].error, what, warnings)
        else:
            outcomes[item.key] = outcome(item, Status.SENT, warnings=warnings)


@flow(
    name=NAME,
    flow_run_name=flow_run_name,
    description="Segment track/page/screen -> Klaviyo events (bulk create, backfill-aware).",
    log_prints=False,
)
async def forward_track(
    messages: list[dict[str, Any]] | None = None,
    batch_ids: list[str] | None = None,
    config: dict[str, Any] | None = None,
    config_block: str | None = None,
    replay: bool = False,
) -> dict[str, Any]:
    """Forward behavioural events so Klaviyo flows and segments see them; ``replay=True`` (dead-letter replays,
    re-imports) marks every event as backfill so Klaviyo flows do not fire twice."""

    async def steps(env: FlowEnv, items: list[Item], outcomes: dict[str, Outcome]) -> None:
        env.replay = replay  # type: ignore[attr-defined]  # read by flowkit.is_backfill
        await process(env, items, outcomes)

    return await run_flow(NAME, messages, batch_ids, config, config_block, steps)


SPEC = FlowSpec(name=NAME, flow=forward_track, process=process, accepts=accepts, routes=routes, overlapping_runs=2)
