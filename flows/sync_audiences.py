"""sync-audiences: Segment Engage audience membership -> Klaviyo list membership.

Membership arrives in two forms (track ``Audience Entered``/``Audience Exited``, and identify calls computed by
Engage); both become the same per-(person, audience) change. Segment redelivers and reorders, so a change is
applied only when it is newer than the one already applied for that person and audience (versions in the state
store; the shared steps live in ``klaviyo_segment.membership``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import flow

from klaviyo_segment.config import AppConfig
from klaviyo_segment.flowspec import FlowSpec
from klaviyo_segment.jsondict import obj
from klaviyo_segment.membership import (
    Change,
    apply_membership,
    identity_of,
    order_changes,
    person_of,
    record_versions,
    resolve_profiles,
    settle,
    with_aliases,
)
from klaviyo_segment.outcomes import Outcome, Status
from klaviyo_segment.routing import AUDIENCE_EVENTS, audience_key, is_audience_identify
from klaviyo_segment.run_report import flow_run_name
from klaviyo_segment.runtime import FlowEnv, Item, common_rules, outcome, run_flow
from klaviyo_segment.tasks.klaviyo_lists import get_or_create_lists

NAME = "sync-audiences"


def accepts(item: Item, config: AppConfig | None = None) -> str | None:
    """Audience tracks, Engage audience identifies, and identifies with a boolean trait named like a configured
    audience key (the last needs ``config``; without it every identify is accepted for a closer look)."""
    msg = item.msg
    assert msg is not None
    if msg.type == "track" and msg.event in AUDIENCE_EVENTS:
        return None
    if msg.type == "identify":
        if is_audience_identify(item.raw) or config is None:
            return None
        if any(isinstance(msg.traits.get(k), bool) for k in config.audiences):
            return None
    return "not for this flow"


def routes(msg: dict[str, Any], config: AppConfig) -> bool:
    """Audience tracks, Engage audience identifies, and identifies carrying a configured audience key as a trait
    (any value: a non-boolean one is then skipped by the flow with a reason)."""
    kind = msg.get("type")
    if kind == "track":
        return msg.get("event") in AUDIENCE_EVENTS
    if kind == "identify":
        traits = obj(msg, "traits")
        return is_audience_identify(msg) or any(k in traits for k in (config.audiences or {}))
    return False


def memberships(item: Item, config: AppConfig) -> list[tuple[str, bool]]:
    """(audience key, member?) pairs a message states; ValueError = invalid data (the message fails)."""
    msg = item.msg
    assert msg is not None
    if msg.type == "track":
        key = audience_key(item.raw)
        if not key:
            raise ValueError("invalid message: properties.audience_key is required")
        return [(key, msg.event == AUDIENCE_EVENTS[0])]
    if is_audience_identify(item.raw):
        key = audience_key(item.raw)
        value = msg.traits.get(key) if key else None
        if not isinstance(value, bool):
            raise ValueError(f"invalid message: audience trait {key!r} must be true or false")
        return [(str(key), value)]
    return [(k, v) for k, v in msg.traits.items() if k in config.audiences and isinstance(v, bool)]


def list_id_of(item: Item, key: str, config: AppConfig) -> str | None:
    """Config table first, then what Segment's Klaviyo destination reads from the personas context."""
    if key in config.audiences:
        return config.audiences[key]
    personas = item.msg.context.get("personas") if item.msg else None
    if isinstance(personas, dict):
        settings = personas.get("audience_settings")
        for value in (
            (settings or {}).get("listId") if isinstance(settings, dict) else None,
            personas.get("external_audience_id"),
        ):
            if value:
                return str(value)
    return None


async def create_lists(env: FlowEnv, changes: Sequence[Change]) -> None:
    """Get-or-create lists named after unknown audience keys (only when enabled; the task caches and caps)."""
    names = list(dict.fromkeys(c.audience for c in changes if c.open and not c.list_id))
    if not names:
        return
    if not env.config.audiences_create_lists:
        for change in changes:
            if change.open and not change.list_id:
                change.skip = f"unknown audience {change.audience}"
        return
    results = await env.call(get_or_create_lists, names, env.klaviyo)
    found = dict(zip(names, results, strict=False))
    for change in changes:
        if change.open and not change.list_id:
            result = found[change.audience]
            if result.ok and result.value:
                change.list_id = result.value["id"]
            else:
                change.failed(f"could not get or create list {change.audience!r}", result.error)


async def process(env: FlowEnv, items: list[Item], outcomes: dict[str, Outcome]) -> None:
    todo = await common_rules(env, items, outcomes, lambda i: accepts(i, env.config))
    changes: list[Change] = []
    for item in todo:
        assert item.msg is not None
        try:
            states = memberships(item, env.config)
        except ValueError as exc:
            outcomes[item.key] = outcome(item, Status.FAILED, str(exc))
            continue
        if not states:
            outcomes[item.key] = outcome(item, Status.SKIPPED, "not for this flow")
            continue
        identity = identity_of(item.msg)
        person = person_of(item.msg, identity)
        at = item.msg.timestamp or env.now
        for key, member in states:
            changes.append(
                Change(
                    item=item,
                    version_key=f"audience:{key}:{person}",
                    at=at,
                    identity=identity,
                    enter=member,
                    audience=key,
                    list_id=list_id_of(item, key, env.config),
                )
            )
    await order_changes(env, changes)
    await create_lists(env, changes)
    await with_aliases(env, changes)
    await resolve_profiles(env, changes)
    await apply_membership(env, changes)
    await record_versions(env, changes)
    settle(todo, changes, outcomes)


@flow(
    name=NAME,
    flow_run_name=flow_run_name,
    description="Segment Engage audience membership -> Klaviyo list membership, newest change wins.",
    log_prints=False,
)
async def sync_audiences(
    messages: list[dict[str, Any]] | None = None,
    batch_ids: list[str] | None = None,
    config: dict[str, Any] | None = None,
    config_block: str | None = None,
) -> dict[str, Any]:
    """Mirror Engage audiences into Klaviyo lists; redelivered or reordered changes never undo newer ones."""
    return await run_flow(NAME, messages, batch_ids, config, config_block, process)


SPEC = FlowSpec(name=NAME, flow=sync_audiences, process=process, accepts=accepts, routes=routes)
