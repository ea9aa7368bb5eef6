"""engagement-to-segment: Klaviyo email engagement (delivered, opened, clicked, bounced, unsubscribed, spam)
becomes Segment track calls, as Segment's own Klaviyo source would send them.

Two ways in, one way out: (a) webhook mode takes Klaviyo system-webhook records (or whole deliveries) as
``messages`` and resolves the profiles they reference in batched lookups; (b) polling mode (``poll=True``)
reads the engagement metrics' events since the stored cursor (minus a lookback, because Klaviyo may store an
event a little after its datetime) and advances the cursor after the send. Both count Klaviyo events, not
deliveries, and key each event by its Klaviyo id, so redeliveries and overlapping polls are skipped as already
delivered (and Segment dedupes on the derived messageId anyway).

The inputs are not Segment messages, so this module gives ``runtime`` its own :func:`load_items` (one item
per Klaviyo event) and applies its own version of the common rules; ``run``/``preview``/replay still go
through ``process`` like every other flow.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow

from klaviyo_segment import engagement as eng
from klaviyo_segment.errors import ApiError, ConfigError
from klaviyo_segment.flowspec import FlowSpec
from klaviyo_segment.outcomes import Outcome, Status
from klaviyo_segment.run_report import flow_run_name
from klaviyo_segment.run_state import final_state
from klaviyo_segment.runtime import MALFORMED, FlowEnv, Inputs, Item, delivered_key, finish, open_env, run_flow
from klaviyo_segment.tasks.klaviyo_events import get_events
from klaviyo_segment.tasks.klaviyo_metrics import get_metrics
from klaviyo_segment.tasks.klaviyo_profiles import get_profiles_by_identifiers
from klaviyo_segment.tasks.segment import send_to_segment

NAME = "engagement-to-segment"
CURSOR = "engagement-to-segment:cursor"
#: Where polling starts when there is neither a stored cursor nor ``since`` (contract: 24 h back).
FIRST_POLL_WINDOW = timedelta(hours=24)

Pending = tuple[Item, eng.EngagementEvent]


def accepts(item: Item) -> str | None:
    """Records about other topics (SMS, custom metrics) are deliberately left alone."""
    raw = item.raw
    if isinstance(raw, dict) and isinstance(raw.get("payload"), dict) and eng.metric_of(raw) is None:
        return "not for this flow"
    return None


def _outcome(
    item: Item,
    status: Status,
    reason: str | None = None,
    error: ApiError | None = None,
    event: eng.EngagementEvent | None = None,
) -> Outcome:
    kind = eng.SEGMENT_EVENTS.get(event.metric) if event else eng.SEGMENT_EVENTS.get(eng.metric_of(item.raw) or "")
    return Outcome(message_id=item.key, status=status, type=kind or "klaviyo-event", reason=reason, error=error)


def load_items(raws: list[Any]) -> tuple[list[Item], dict[str, Outcome]]:
    """The ``runtime`` hook: one item per Klaviyo event (deliveries split) keyed by its id. No outcomes yet:
    malformed and invalid records are judged by :func:`engagement_rules`, not by Segment's message rules."""
    records = eng.split_records(raws)
    return [Item(index, eng.record_key(raw), raw) for index, raw in enumerate(records)], {}


async def engagement_rules(env: FlowEnv, items: list[Item], outcomes: dict[str, Outcome]) -> list[Pending]:
    """The common rules for records: malformed, not for this flow, invalid, in-batch repeat, already delivered."""
    seen: set[str] = set()
    candidates: list[Pending] = []
    for item in items:
        if item.key in outcomes or item.key in seen:
            continue  # finish() reports repeats as duplicates
        seen.add(item.key)
        if isinstance(item.raw, dict) and MALFORMED in item.raw:
            outcomes[item.key] = _outcome(item, Status.FAILED, f"malformed JSON: {item.raw[MALFORMED]}")
            continue
        reason = accepts(item)
        if reason:
            outcomes[item.key] = _outcome(item, Status.SKIPPED, reason)
            continue
        parsed = eng.parse_record(item.raw)
        if isinstance(parsed, str):
            outcomes[item.key] = _outcome(item, Status.FAILED, parsed)
        else:
            candidates.append((item, parsed))
    keys = [delivered_key(env.flow, item.key) for item, _ in candidates]
    done = await env.store.is_done(keys) if keys else set()
    todo = []
    for item, event in candidates:
        if delivered_key(env.flow, item.key) in done:
            outcomes[item.key] = _outcome(
                item, Status.SKIPPED, "duplicate of an already delivered messageId", event=event
            )
        else:
            todo.append((item, event))
    return todo


async def resolve_profiles(env: FlowEnv, todo: list[Pending], outcomes: dict[str, Outcome]) -> list[Pending]:
    """Profiles the records only reference by id, in batched ``any(id,[...])`` lookups."""
    ids = list(dict.fromkeys(e.profile_id for _, e in todo if e.profile is None and e.profile_id))
    found: dict[str, Any] = {}
    if ids:
        results = await env.call(get_profiles_by_identifiers, ids, env.klaviyo, field="id")
        found = {pid: r for pid, r in zip(ids, results, strict=False)}
    ready: list[Pending] = []
    for item, event in todo:
        if event.profile is None:
            result = found.get(event.profile_id or "")
            if result is None:
                outcomes[item.key] = _outcome(item, Status.SKIPPED, "no Klaviyo profile on the event", event=event)
                continue
            if not result.ok:
                outcomes[item.key] = _outcome(item, Status.FAILED, "profile lookup failed", result.error, event)
                continue
            if result.value is None:
                outcomes[item.key] = _outcome(item, Status.SKIPPED, "profile not found in Klaviyo", event=event)
                continue
            event.profile = result.value
        ready.append((item, event))
    return ready


async def deliver(env: FlowEnv, todo: list[Pending], outcomes: dict[str, Outcome]) -> None:
    """Look up profiles, translate, and send everything in as few Segment batch requests as the limits allow."""
    ready = await resolve_profiles(env, todo, outcomes)
    sendable: list[Pending] = []
    messages: list[dict[str, Any]] = []
    for item, event in ready:
        try:
            messages.append(eng.to_track(event, event.profile))
        except ValueError as exc:
            outcomes[item.key] = _outcome(item, Status.SKIPPED, f"no Klaviyo identifier ({exc})", event=event)
            continue
        sendable.append((item, event))
    if not messages:
        return
    results = await env.call(send_to_segment, messages, env.segment, transport=env.segment_transport)
    for (item, event), result in zip(sendable, results, strict=False):
        outcomes[item.key] = (
            _outcome(item, Status.SENT, event=event)
            if result.ok
            else _outcome(item, Status.FAILED, "Segment rejected the message", result.error, event)
        )


async def process(env: FlowEnv, items: list[Item], outcomes: dict[str, Outcome]) -> None:
    """Webhook records in (items from :func:`load_items`), Segment track calls out."""
    todo = await engagement_rules(env, items, outcomes)
    await deliver(env, todo, outcomes)


def _parse_since(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"since: not an ISO-8601 datetime: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def poll_start(env: FlowEnv, since: str | None) -> datetime:
    """``since`` wins; else the stored cursor minus the lookback; else 24 h back."""
    if since:
        return _parse_since(since)
    cursor = await env.store.get_cursor(CURSOR)
    if cursor:
        return _parse_since(cursor) - timedelta(minutes=env.config.engagement.lookback_minutes)
    return env.now - FIRST_POLL_WINDOW


async def poll_records(env: FlowEnv, start: datetime) -> list[dict[str, Any]]:
    """One metrics listing, then one paginated Get Events per engagement metric, profiles included."""
    metric_ids = await env.call(get_metrics, env.klaviyo, integration_name="Klaviyo")
    records: list[dict[str, Any]] = []
    for metric in eng.METRICS:
        if metric in metric_ids:
            response = await env.call(
                get_events, env.klaviyo, metric_id=metric_ids[metric], since=start, include=["profile"]
            )
            records.extend(eng.records_from_events(response, metric))
    return records


def _transient(error: ApiError | None) -> bool:
    return error is None or error.status is None or error.status == 429 or error.status >= 500


def next_cursor(items: list[Item], outcomes: dict[str, Outcome]) -> datetime | None:
    """The newest event datetime seen, held back to the oldest transient failure so the next poll (whose
    window starts at the cursor minus the lookback) retries it; permanent failures are dead letters."""
    newest: datetime | None = None
    hold: datetime | None = None
    for item in items:
        parsed = eng.parse_record(item.raw)
        if isinstance(parsed, str):
            continue
        newest = max(newest, parsed.datetime) if newest else parsed.datetime
        out = outcomes.get(item.key)
        if out is not None and out.status == Status.FAILED and _transient(out.error):
            hold = min(hold, parsed.datetime) if hold else parsed.datetime
    return hold if hold is not None else newest


async def run_poll(config: dict[str, Any] | None, config_block: str | None, since: str | None) -> dict[str, Any]:
    async with open_env(NAME, config, config_block=config_block, segment=True) as env:
        start = await poll_start(env, since)
        records = await poll_records(env, start)
        items, outcomes = load_items(records)
        await deliver(env, await engagement_rules(env, items, outcomes), outcomes)
        summary = await finish(env, Inputs(items=items, batch_ids=[]), outcomes)
        cursor = next_cursor(items, outcomes)
        previous = await env.store.get_cursor(CURSOR)
        if cursor is not None and (previous is None or _parse_since(previous) < cursor):
            await env.store.set_cursor(CURSOR, cursor.isoformat())
        summary["polled_since"] = start.isoformat()
        summary["cursor"] = cursor.isoformat() if cursor else previous
        return summary


@flow(
    name=NAME,
    flow_run_name=flow_run_name,
    description="Klaviyo email engagement -> Segment track calls (webhook records or polling).",
    log_prints=False,
)
async def engagement_to_segment(
    messages: list[dict] | None = None,
    batch_ids: list[str] | None = None,
    config: dict | None = None,
    config_block: str | None = None,
    poll: bool = False,
    since: str | None = None,
) -> dict:
    """Send Klaviyo's email engagement to Segment so warehouse and audiences see it like Segment's Klaviyo
    source. Pass webhook records as ``messages`` (or ``batch_ids`` from the receiver), or ``poll=True`` for the
    scheduled ``engagement-to-segment-poll`` deployment (``since`` overrides the stored cursor)."""
    if poll:
        if messages is not None or batch_ids is not None:
            raise ConfigError("poll=True reads Klaviyo itself: do not pass 'messages' or 'batch_ids'")
        return final_state(await run_poll(config, config_block, since))  # Failed when records failed
    return await run_flow(NAME, messages, batch_ids, config, config_block, process, segment=True, load_items=load_items)


#: No ``routes``: Segment messages never feed it; the receiver's ``/klaviyo`` endpoint does.
SPEC = FlowSpec(
    name=NAME,
    flow=engagement_to_segment,
    process=process,
    accepts=accepts,
    load_items=load_items,
    sends_to_segment=True,
)
