"""onboard-new-users: a qualifying sign-up creates/updates the profile and subscribes it to the onboarding list.

Subscribing clears suppressions in Klaviyo, so consent safety comes first: the profile's consent is read and
anyone who unsubscribed, reported spam or was suppressed, whenever that happened, is never subscribed on that
channel (``klaviyo_segment.consent``); stale sign-ups are never subscribed; with
``onboarding.email_consent_trait`` set, email needs an explicit consent trait too; and each person is onboarded
once (a claim in the state store), so redeliveries and replays never re-subscribe anyone or re-trigger the
welcome flow.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from prefect import flow

from klaviyo_segment import flowkit
from klaviyo_segment.config import AppConfig, OnboardingConfig
from klaviyo_segment.consent import opt_out_reason
from klaviyo_segment.flowspec import FlowSpec
from klaviyo_segment.mapping.models import ProfileMapping
from klaviyo_segment.membership import Change, identity_of, person_of, settle
from klaviyo_segment.outcomes import Outcome, Status
from klaviyo_segment.run_report import flow_run_name
from klaviyo_segment.runtime import FlowEnv, Item, common_rules, outcome, run_flow
from klaviyo_segment.tasks.klaviyo_profiles import get_profile_consent
from klaviyo_segment.tasks.klaviyo_subscriptions import subscribe_profiles

NAME = "onboard-new-users"
NO_EMAIL_CONSENT = "no email consent"
ALREADY = "already onboarded"


def accepts(item: Item, config: AppConfig | None = None) -> str | None:
    events = (config.onboarding if config else OnboardingConfig()).events
    msg = item.msg
    assert msg is not None
    return None if msg.type == "track" and msg.event in events else "not for this flow"


def routes(msg: dict[str, Any], config: AppConfig) -> bool:
    """Tracks whose event is one of ``onboarding.events``."""
    return msg.get("type") == "track" and msg.get("event") in (config.onboarding.events or [])


def profile_attributes(env: FlowEnv, item: Item) -> dict[str, Any]:
    """The user's traits (``context.traits``, where Segment puts user data on a track call) through the identify
    template, as if Segment sent an identify. Event properties describe the sign-up, not the person: copying them
    would race with sync-identify writing the same trait from an identify (seen in the chaos run)."""
    assert item.msg is not None
    raw = item.raw if isinstance(item.raw, dict) else {}
    identify = {
        "type": "identify",
        "userId": raw.get("userId"),
        "anonymousId": raw.get("anonymousId"),
        "timestamp": raw.get("timestamp"),
        "context": raw.get("context") or {},
        "traits": dict(item.msg.context_traits),
    }
    mapped = env.config.compiled().identify.map(identify) or []
    attrs = next((m.attributes for m in mapped if isinstance(m, ProfileMapping)), {})
    return dict(attrs)


def stated(item: Item, trait: str) -> bool:
    """Consent is stated only by the value ``true`` of ``trait`` (traits first, then event properties)."""
    assert item.msg is not None
    return item.msg.all_traits().get(trait, item.msg.properties.get(trait)) is True


async def upsert(env: FlowEnv, changes: Sequence[Change]) -> None:
    todo = [c for c in changes if c.open]
    results = await flowkit.upsert_profiles(env, [c.data["attributes"] for c in todo]) if todo else []
    for change, result in zip(todo, results, strict=False):
        if not result.ok:
            reason = (
                flowkit.conflict_failure(change.item, result.error)
                if flowkit.is_conflict(result.error)
                else flowkit.api_failure(change.item, result.error, "profile upsert")
            ).reason
            change.failed(reason or "profile upsert failed", result.error)
        elif (result.value or {}).get("id"):  # a bulk import job returns none: consent is then read by email
            change.profile_id = result.value["id"]


def _lookups(changes: Sequence[Change]) -> list[tuple[str, list[Change], list[str]]]:
    """(field, changes, values): by profile id when known; else (bulk import jobs return no ids) by email, or by
    phone for an SMS-only sign-up, so every change that would subscribe has its consent read."""
    todo = [c for c in changes if c.open]
    by_id = [c for c in todo if c.profile_id]
    by_email = [c for c in todo if not c.profile_id and c.data["attributes"].get("email")]
    by_phone = [c for c in todo if not c.profile_id and not c.data["attributes"].get("email") and c.data["sms"]]
    return [
        ("id", by_id, [c.profile_id or "" for c in by_id]),
        ("email", by_email, [c.data["attributes"]["email"] for c in by_email]),
        ("phone_number", by_phone, [c.data["phone"] for c in by_phone]),
    ]


async def check_consent(env: FlowEnv, changes: Sequence[Change]) -> None:
    """A consent read per lookup field; a channel that ever opted out (any date) is never subscribed; a change
    left with no channel is skipped with the opt-out's reason."""
    list_id = env.config.onboarding.list_id
    for field, group, values in _lookups(changes):
        if not group:
            continue
        results = await env.call(get_profile_consent, values, env.klaviyo, field=field)
        for change, result in zip(group, results, strict=False):
            if not result.ok:
                change.failed(f"consent lookup failed: {flowkit.describe(result.error)}", result.error)
                continue
            subs = result.value or {}
            email_out = opt_out_reason("email", subs.get("email"), list_id) if change.data["email"] else None
            sms_out = opt_out_reason("sms", subs.get("sms"), list_id) if change.data["sms"] else None
            if email_out:
                change.data["email"] = None
            if sms_out:
                change.data["sms"] = False
            if not change.data["email"] and not change.data["sms"]:
                change.skip = email_out or sms_out or NO_EMAIL_CONSENT


async def subscribe(env: FlowEnv, changes: Sequence[Change]) -> None:
    """Claim each person first, subscribe (one call without and one with SMS), unmark the claims that failed."""
    todo = [c for c in changes if c.open]
    claimed = await env.store.claim_once([c.version_key for c in todo]) if todo else set()
    for change in todo:
        if change.version_key not in claimed:
            change.skip = ALREADY
    for sms in (False, True):
        group = [c for c in todo if c.open and c.data["sms"] == sms]
        entries = [
            {
                k: v
                for k, v in (
                    ("id", c.profile_id),
                    ("email", c.data["email"]),
                    ("phone_number", c.data["phone"] if sms else None),
                )
                if v
            }
            for c in group
        ]
        results = (
            await env.call(
                subscribe_profiles,
                entries,
                env.klaviyo,
                list_id=env.config.onboarding.list_id,
                custom_source="Segment onboarding",
                sms=sms,
            )
            if group
            else []
        )
        for change, result in zip(group, results, strict=False):
            if result.ok:
                change.done = True
            else:
                change.failed(f"subscribe failed: {flowkit.describe(result.error)}", result.error)
    failed = [c.version_key for c in todo if c.fail]
    if failed:
        await env.store.unmark(failed)


async def process(env: FlowEnv, items: list[Item], outcomes: dict[str, Outcome]) -> None:
    onboarding = env.config.onboarding
    todo = await common_rules(env, items, outcomes, lambda i: accepts(i, env.config))
    changes: list[Change] = []
    for item in sorted(todo, key=lambda i: (i.msg.timestamp or env.now) if i.msg else env.now):
        assert item.msg is not None
        at = item.msg.timestamp or env.now
        if env.now - at > timedelta(days=onboarding.max_age_days):
            outcomes[item.key] = outcome(item, Status.SKIPPED, f"sign-up older than {onboarding.max_age_days:g} days")
            continue
        attributes = profile_attributes(env, item)
        email, phone = attributes.get("email"), attributes.get("phone_number")
        sms = stated(item, onboarding.sms_consent_trait) and bool(phone)
        if email and onboarding.email_consent_trait and not stated(item, onboarding.email_consent_trait):
            email = None  # explicit consent required: the profile is still upserted, email is not subscribed
            if not sms:
                outcomes[item.key] = outcome(item, Status.SKIPPED, NO_EMAIL_CONSENT)
                continue
        if not email and not sms:
            outcomes[item.key] = outcome(item, Status.SKIPPED, "no email or SMS-consented phone to subscribe")
            continue
        identity = identity_of(item.msg)
        changes.append(
            Change(
                item=item,
                version_key=f"onboard:{person_of(item.msg, identity)}",
                at=at,
                identity=identity,
                data={"attributes": attributes, "email": email, "phone": phone, "sms": sms},
            )
        )
    done = await env.store.is_done([c.version_key for c in changes]) if changes else set()
    seen: set[str] = set()
    for change in changes:  # oldest sign-up per person goes first; the rest are redeliveries
        if change.version_key in done or change.version_key in seen:
            change.skip = ALREADY
        seen.add(change.version_key)
    await upsert(env, changes)
    await check_consent(env, changes)
    await subscribe(env, changes)
    settle(todo, changes, outcomes)


@flow(
    name=NAME,
    flow_run_name=flow_run_name,
    description="Sign-ups -> profile with all traits -> consent-safe subscription to the onboarding list.",
    log_prints=False,
)
async def onboard_new_users(
    messages: list[dict[str, Any]] | None = None,
    batch_ids: list[str] | None = None,
    config: dict[str, Any] | None = None,
    config_block: str | None = None,
) -> dict[str, Any]:
    """Welcome new users once: profile upsert, consent check, subscription (email; SMS only with consent)."""
    return await run_flow(NAME, messages, batch_ids, config, config_block, process)


SPEC = FlowSpec(
    name=NAME,
    flow=onboard_new_users,
    process=process,
    accepts=accepts,
    routes=routes,
    required_config_keys=("onboarding.list_id",),
)
