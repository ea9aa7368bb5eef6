"""What Klaviyo must hold after a chaos run, computed from the Segment stream alone, and the diff against what the
sandbox holds.

The expectation is derived from the messages in stream order (the generator stamps time in stream order, so "the
newest change per person wins" is "the last one in the stream wins"), not from the flows' state store or
outcomes: a flow that drops, repeats or reorders something under faults shows up as a missing or unexpected item.
Only the message -> Klaviyo field mapping (event metric/unique_id, profile properties) reuses the compiled
templates, because re-implementing the templates here would test a second copy instead of the flows.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from klaviyo_segment.config import AppConfig
from klaviyo_segment.mapping.models import EventMapping, ProfileMapping
from klaviyo_segment.routing import AUDIENCE_EVENTS, audience_key, is_audience_identify

#: Properties written by more than one flow (churn-winback and sync-identify) at independent times: their final
#: value is a race between flows, not a delivery guarantee, so only ``churn_risk`` itself is checked.
RACY_PROPERTIES = ("churn_risk",)
#: How many ids each category lists in the figures (the counts are always complete).
SHOWN = 5


@dataclass
class Expected:
    """Klaviyo's final state in the stream's own terms (people are Segment userIds = Klaviyo external_ids)."""

    events: set[tuple[str, str, str]] = field(default_factory=set)  # (userId, metric, unique_id)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)  # userId -> final mapped properties
    lists: dict[str, dict[str, bool]] = field(default_factory=dict)  # list id -> userId -> member?
    subscribed: set[str] = field(default_factory=set)  # userIds with email marketing SUBSCRIBED
    churn: dict[str, bool] = field(default_factory=dict)  # userId -> churn_risk after the last transition
    deleted: set[str] = field(default_factory=set)


def _when(message: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(message["timestamp"]).replace("Z", "+00:00"))


def _membership(message: dict[str, Any], config: AppConfig) -> list[tuple[str, bool]]:
    """(audience key, member?) the message states, in both Engage forms and as a plain boolean trait."""
    key = audience_key(message)
    traits = message.get("traits") if isinstance(message.get("traits"), dict) else {}
    if message.get("type") == "track" and message.get("event") in AUDIENCE_EVENTS and key:
        return [(key, message["event"] == AUDIENCE_EVENTS[0])]
    if is_audience_identify(message) and key and isinstance(traits.get(key), bool):
        return [(key, traits[key])]
    if message.get("type") == "identify":
        return [(k, v) for k, v in traits.items() if k in config.audiences and isinstance(v, bool)]
    return []


def _churn_transition(message: dict[str, Any], config: AppConfig, scores: dict[str, float]) -> bool | None:
    """Entry/exit of the churn cohort: the churn audience, or the score trait crossing the threshold."""
    churn, user = config.churn, str(message.get("userId"))
    for key, member in _membership(message, config):
        if key == churn.audience_key:
            return member
    traits = message.get("traits") if isinstance(message.get("traits"), dict) else {}
    if message.get("type") != "identify" or not isinstance(traits.get(churn.trait), (int, float)):
        return None
    before, now = scores.get(user), float(traits[churn.trait])
    scores[user] = now
    was_in = before is not None and before >= churn.threshold
    if now >= churn.threshold and not was_in:
        return True
    if now < churn.threshold and was_in:
        return False
    return None


def _sign_up_traits(message: dict[str, Any], config: AppConfig, now: datetime) -> dict[str, Any] | None:
    """The traits of a qualifying sign-up with an email (onboard-new-users upserts them as the profile and
    subscribes the person to email marketing), else None."""
    if message.get("type") != "track" or message.get("event") not in config.onboarding.events:
        return None
    context = message.get("context") if isinstance(message.get("context"), dict) else {}
    traits = dict(context.get("traits") or {})  # the user's traits; event properties describe the sign-up
    fresh = now - _when(message) <= timedelta(days=config.onboarding.max_age_days)
    return traits if fresh and traits.get("email") else None


def _profile_properties(config: AppConfig, identify: dict[str, Any]) -> dict[str, Any] | None:
    for profile in config.compiled().identify.map(identify) or []:
        if isinstance(profile, ProfileMapping) and profile.has_identifier:
            return dict(profile.attributes.get("properties") or {})
    return None


def expected_state(stream: list[dict[str, Any]], invalid: set[str], config: AppConfig, now: datetime) -> Expected:
    """Fold the valid messages into the state Klaviyo must end in; deleted people are removed last."""
    compiled, out = config.compiled(), Expected()
    scores: dict[str, float] = {}
    for message in stream:
        if message.get("messageId") in invalid:
            continue
        kind, user = message.get("type"), message.get("userId")
        if kind == "delete" and user:
            out.deleted.add(str(user))
            continue
        if kind == "track" and message.get("event") not in AUDIENCE_EVENTS and not compiled.track_filter.check(message):
            for event in compiled.track.map(message) or []:
                if isinstance(event, EventMapping):
                    out.events.add((str(user), event.metric, event.unique_id or message["messageId"]))
        if not user:
            continue
        sign_up = _sign_up_traits(message, config, now) if str(user) not in out.subscribed else None
        if sign_up is not None:  # a person is onboarded once: their first qualifying sign-up
            out.subscribed.add(str(user))
        as_identify = {**message, "type": "identify", "traits": sign_up} if sign_up is not None else message
        props = _profile_properties(config, as_identify) if as_identify.get("type") == "identify" else None
        if props is not None:
            out.profiles.setdefault(str(user), {}).update(props)
        for key, member in _membership(message, config):
            if key in config.audiences:
                out.lists.setdefault(config.audiences[key], {})[str(user)] = member
        transition = _churn_transition(message, config, scores)
        if transition is not None and config.churn.list_id:
            out.churn[str(user)] = transition
            out.lists.setdefault(config.churn.list_id, {})[str(user)] = transition
    for user in out.deleted:
        out.profiles.pop(user, None)
        out.subscribed.discard(user)
        out.churn.pop(user, None)
        for members in out.lists.values():
            members.pop(user, None)
    out.events = {e for e in out.events if e[0] not in out.deleted}
    if config.onboarding.list_id:  # subscribing to the onboarding list also makes the person a member
        out.lists[config.onboarding.list_id] = {u: True for u in out.subscribed}
    return out


def _diff(expected: set[Any], actual: set[Any]) -> dict[str, Any]:
    missing, unexpected = sorted(map(str, expected - actual)), sorted(map(str, actual - expected))
    return {
        "missing": len(missing),
        "unexpected": len(unexpected),
        "first_missing": missing[:SHOWN],
        "first_unexpected": unexpected[:SHOWN],
    }


def compare(
    expected: Expected, profiles: list[dict[str, Any]], events: list[dict[str, Any]], lists: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Missing and unexpected items per category (sandbox inspection views in, counts + first ids out)."""
    people = {p["id"]: p["attributes"] for p in profiles}
    who = {pid: str(attrs.get("external_id") or f"<no external_id {pid}>") for pid, attrs in people.items()}
    by_user = {who[pid]: attrs for pid, attrs in people.items()}
    # Klaviyo de-duplicates per profile and metric: two people may share a unique_id (same order id by chance)
    keys = Counter(
        (who.get(e["profile_id"], e["profile_id"]), e["metric"], str((e.get("properties") or {}).get("$event_id")))
        for e in events
    )

    wrong: Counter[str] = Counter()  # property name -> people whose final value differs (the diagnosis)

    def props_ok(user: str, want: dict[str, Any]) -> bool:
        have = (by_user.get(user) or {}).get("properties") or {}
        bad = [k for k, v in want.items() if not k.startswith(RACY_PROPERTIES) and have.get(k) != v]
        wrong.update(bad)
        return not bad

    membership = {(lst["id"], who.get(m, m)) for lst in lists for m in lst["members"]}
    figures = {
        "events": _diff(expected.events, set(keys)),
        "profiles": _diff(set(expected.profiles), set(by_user)),
        "profile_properties": _diff(
            {u for u in expected.profiles if u in by_user},
            {u for u, want in expected.profiles.items() if u in by_user and props_ok(u, want)},
        ),
        "list_memberships": _diff(
            {(lid, u) for lid, m in expected.lists.items() for u, ok in m.items() if ok},
            {(lid, u) for lid, u in membership if lid in expected.lists},
        ),
        "subscriptions": _diff(
            expected.subscribed,
            {
                u
                for u, a in by_user.items()
                if ((a.get("subscriptions") or {}).get("email") or {}).get("marketing", {}).get("consent")
                == "SUBSCRIBED"
            },
        ),
        # A person whose entry and exit were both superseded before reaching Klaviyo was never flagged: an absent
        # churn_risk means false, so the check is "exactly the people whose last transition was entry are true".
        "churn_flags": _diff(
            {u for u, at_risk in expected.churn.items() if at_risk},
            {u for u, a in by_user.items() if (a.get("properties") or {}).get("churn_risk") is True},
        ),
        "deleted_remaining": _diff(set(), expected.deleted & set(by_user)),
    }
    figures["events"]["duplicates"] = sum(n - 1 for n in keys.values() if n > 1)
    figures["profile_properties"]["wrong_values_by_property"] = dict(wrong.most_common(SHOWN))
    return figures


def failures(figures: dict[str, dict[str, Any]]) -> list[str]:
    """Categories with a missing or unexpected item or a duplicated event (empty = Klaviyo holds exactly the
    expected state)."""
    return [name for name, c in figures.items() if c["missing"] or c["unexpected"] or c.get("duplicates")]
