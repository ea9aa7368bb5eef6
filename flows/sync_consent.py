"""sync-consent: consent changes in Segment -> Klaviyo subscribe/unsubscribe jobs, per channel (email, SMS).

What Segment's "Subscribe Profile"/"Unsubscribe Profile" actions do, made safe for redelivery and reordering:

- A track named in ``consent.subscribe_events``/``unsubscribe_events`` changes the ``consent.event_channels``
  it has an identifier for; an identify whose ``consent.email_trait``/``sms_trait`` is ``true``/``false``
  changes that one channel.
- Newest change per (person, channel) wins (versions in the state store, as sync-audiences); an unsubscribe
  wins a tie. An older subscribe redelivered later is skipped.
- A subscribe job clears Klaviyo suppressions, so before subscribing the consent state is read and a channel
  that opted out in Klaviyo after the subscribe event is left alone.
- ``historical_import`` (consented_at = event time, no double opt-in, no "Added to list" flows) only when
  configured, never because an event is old. Unsubscribe has neither; without ``list_id`` it is global.
- Off by default (``consent.enabled``): the router feeds it nothing, so existing deployments see no change.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from typing import Any

from prefect import flow

from klaviyo_segment import flowkit
from klaviyo_segment.config import AppConfig, ConsentConfig
from klaviyo_segment.consent import opted_out_after
from klaviyo_segment.flowspec import FlowSpec
from klaviyo_segment.membership import (
    SUPERSEDED,
    Change,
    identity_of,
    order_changes,
    person_of,
    record_versions,
    settle,
)
from klaviyo_segment.outcomes import Outcome, Status
from klaviyo_segment.run_report import flow_run_name
from klaviyo_segment.runtime import FlowEnv, Item, common_rules, outcome, run_flow
from klaviyo_segment.services.identity import normalize_phone
from klaviyo_segment.tasks.klaviyo_profiles import get_profile_consent
from klaviyo_segment.tasks.klaviyo_subscriptions import (
    subscribe_profiles,
    unsubscribe_profiles,
)

NAME = "sync-consent"
DISABLED = "consent sync is disabled (consent.enabled: false)"
OPTED_OUT_LATER = "opted out in Klaviyo after the subscribe event"
CHANNEL_IDENTIFIER = {"email": "email", "sms": "phone"}


def wanted(msg: Any, consent: ConsentConfig) -> list[tuple[str, bool]]:
    """(channel, subscribe?) pairs a parsed Segment message states, before identifiers are checked."""
    if msg.type == "track":
        if msg.event in consent.unsubscribe_events:
            return [(channel, False) for channel in consent.event_channels]
        if msg.event in consent.subscribe_events:
            return [(channel, True) for channel in consent.event_channels]
        return []
    if msg.type == "identify":
        return [
            (channel, msg.traits[trait])
            for channel, trait in (("email", consent.email_trait), ("sms", consent.sms_trait))
            if trait and isinstance(msg.traits.get(trait), bool)
        ]
    return []


def accepts(item: Item, config: AppConfig | None = None) -> str | None:
    assert item.msg is not None
    return None if wanted(item.msg, (config or AppConfig()).consent) else "not for this flow"


def routes(msg: dict[str, Any], config: AppConfig) -> bool:
    """Only with ``consent.enabled``: consent tracks, and identifies carrying a consent trait."""
    consent = config.consent
    if not consent.enabled:
        return False
    kind = msg.get("type")
    if kind == "track":
        return msg.get("event") in (*consent.subscribe_events, *consent.unsubscribe_events)
    if kind == "identify":
        traits = msg.get("traits")
        return isinstance(traits, dict) and any(t and t in traits for t in (consent.email_trait, consent.sms_trait))
    return False


def identifiers(item: Item, config: AppConfig) -> dict[str, str]:
    """Email and E.164 phone (traits, then context.traits, then properties; ``phone`` or ``phone_number``)."""
    assert item.msg is not None
    traits, props = item.msg.all_traits(), item.msg.properties
    out = {}
    email = traits.get("email") or props.get("email")
    if isinstance(email, str) and email.strip():
        out["email"] = email.strip()
    for key in ("phone", "phone_number"):
        phone = normalize_phone(traits.get(key) or props.get(key), config.phone_default_country)
        if phone:
            out["phone"] = phone
            break
    return out


def tie_to_unsubscribe(changes: Sequence[Change]) -> None:
    """At equal times an unsubscribe beats a subscribe for the same person and channel (consent-safe)."""
    stops = {(c.version_key, c.at) for c in changes if c.open and not c.enter}
    for change in changes:
        if change.open and change.enter and (change.version_key, change.at) in stops:
            change.skip = SUPERSEDED


async def check_later_opt_outs(env: FlowEnv, changes: Sequence[Change]) -> None:
    """Subscribing clears suppressions: skip a subscribe older than an opt-out Klaviyo recorded since."""
    list_id = env.config.consent.list_id
    for channel, field in (("email", "email"), ("sms", "phone_number")):
        group = [c for c in changes if c.open and c.enter and c.data["channel"] == channel]
        if not group:
            continue
        values = [c.data[CHANNEL_IDENTIFIER[channel]] for c in group]
        results = await env.call(get_profile_consent, values, env.klaviyo, field=field)
        for change, result in zip(group, results, strict=False):
            if not result.ok:
                change.failed(f"consent lookup failed: {flowkit.describe(result.error)}", result.error)
            elif opted_out_after((result.value or {}).get(channel), change.at, list_id):
                change.skip = OPTED_OUT_LATER


def _consented_at(change: Change) -> str:
    return change.at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def apply(env: FlowEnv, changes: Sequence[Change], subscribe: bool) -> None:
    """One entry per message (its email and SMS changes together), one job call per SMS/no-SMS group."""
    consent = env.config.consent
    per_item: dict[str, list[Change]] = {}
    for change in changes:
        if change.open and change.enter == subscribe:
            per_item.setdefault(change.item.key, []).append(change)
    for sms in (False, True):
        groups = [g for g in per_item.values() if any(c.data["channel"] == "sms" for c in g) == sms]
        entries = []
        for group in groups:
            entry = {
                field: c.data[CHANNEL_IDENTIFIER[c.data["channel"]]]
                for c in group
                for field in (("email",) if c.data["channel"] == "email" else ("phone_number",))
            }
            if subscribe and consent.historical_import:
                entry["consented_at"] = _consented_at(group[0])
            entries.append(entry)
        if not entries:
            continue
        if subscribe:
            results = await env.call(
                subscribe_profiles,
                entries,
                env.klaviyo,
                list_id=consent.list_id,
                custom_source=consent.custom_source,
                historical_import=consent.historical_import,
                sms=sms,
            )
        else:
            results = await env.call(unsubscribe_profiles, entries, env.klaviyo, list_id=consent.list_id, sms=sms)
        what = "subscribe" if subscribe else "unsubscribe"
        for group, result in zip(groups, results, strict=False):
            for change in group:
                if result.ok:
                    change.done = True
                else:
                    change.failed(f"{what} failed: {flowkit.describe(result.error)}", result.error)


async def process(env: FlowEnv, items: list[Item], outcomes: dict[str, Outcome]) -> None:
    todo = await common_rules(env, items, outcomes, lambda i: accepts(i, env.config))
    if not env.config.consent.enabled:
        for item in todo:
            outcomes[item.key] = outcome(item, Status.SKIPPED, DISABLED)
        return
    changes: list[Change] = []
    for item in todo:
        assert item.msg is not None
        ids = identifiers(item, env.config)
        states = [(ch, sub) for ch, sub in wanted(item.msg, env.config.consent) if ids.get(CHANNEL_IDENTIFIER[ch])]
        if not states:
            outcomes[item.key] = outcome(item, Status.SKIPPED, "no email or phone for the consent change")
            continue
        identity = identity_of(item.msg)
        person = person_of(item.msg, identity)
        at = item.msg.timestamp or env.now
        for channel, subscribe in states:
            changes.append(
                Change(
                    item=item,
                    version_key=f"consent:{channel}:{person}",
                    at=at,
                    identity=identity,
                    enter=subscribe,
                    data={"channel": channel, **ids},
                )
            )
    tie_to_unsubscribe(changes)
    await order_changes(env, changes)
    await check_later_opt_outs(env, changes)
    await apply(env, changes, subscribe=False)
    await apply(env, changes, subscribe=True)
    await record_versions(env, changes)
    settle(todo, changes, outcomes)


@flow(
    name=NAME,
    flow_run_name=flow_run_name,
    description="Segment consent events/traits -> Klaviyo subscribe/unsubscribe per channel, newest change wins.",
    log_prints=False,
)
async def sync_consent(
    messages: list[dict[str, Any]] | None = None,
    batch_ids: list[str] | None = None,
    config: dict[str, Any] | None = None,
    config_block: str | None = None,
) -> dict[str, Any]:
    """Mirror consent changes into Klaviyo; an older subscribe never undoes a newer opt-out."""
    return await run_flow(NAME, messages, batch_ids, config, config_block, process)


SPEC = FlowSpec(name=NAME, flow=sync_consent, process=process, accepts=accepts, routes=routes)
