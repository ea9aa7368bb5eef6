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

    events: dict[tuple[str, str], str] = field(default_factory=dict)  # (metric, unique_id) -> userId
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


def _signed_up(message: dict[str, Any], config: AppConfig, now: datetime) -> bool:
    """A qualifying sign-up with an email: onboard-new-users subscribes that person to email marketing."""
    if message.get("type") != "track" or message.get("event") not in config.onboarding.events:
        return False
    context = message.get("context") if isinstance(message.get("context"), dict) else {}
    traits = {**(context.get("traits") or {}), **(message.get("properties") or {})}
    fresh = now - _when(message) <= timedelta(days=config.onboarding.max_age_days)
    return fresh and bool(traits.get("email"))


def expected_state(stream: list[dict[str, Any]], invalid: set[str], config: AppConfig,
                   now: datetime) -> Expected:
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
        if kind == "track" and message.get("event") not in AUDIENCE_EVENTS \
                and not compiled.track_filter.check(message):
            for event in compiled.track.map(message) or []:
                if isinstance(event, EventMapping):
                    out.events[(event.metric, event.unique_id or message["messageId"])] = str(user)
        if kind == "identify" and user:
            for profile in compiled.identify.map(message) or []:
                if isinstance(profile, ProfileMapping) and profile.has_identifier:
                    props = out.profiles.setdefault(str(user), {})
                    props.update(profile.attributes.get("properties") or {})
        if not user:
            continue
        for key, member in _membership(message, config):
            if key in config.audiences:
                out.lists.setdefault(config.audiences[key], {})[str(user)] = member
        transition = _churn_transition(message, config, scores)
        if transition is not None and config.churn.list_id:
            out.churn[str(user)] = transition
            out.lists.setdefault(config.churn.list_id, {})[str(user)] = transition
        if _signed_up(message, config, now):
            out.subscribed.add(str(user))
    for user in out.deleted:
        out.profiles.pop(user, None)
        out.subscribed.discard(user)
        out.churn.pop(user, None)
        for members in out.lists.values():
            members.pop(user, None)
    out.events = {k: u for k, u in out.events.items() if u not in out.deleted}
    return out


def _diff(expected: set[Any], actual: set[Any]) -> dict[str, Any]:
    missing, unexpected = sorted(map(str, expected - actual)), sorted(map(str, actual - expected))
    return {"missing": len(missing), "unexpected": len(unexpected),
            "first_missing": missing[:SHOWN], "first_unexpected": unexpected[:SHOWN]}


def compare(expected: Expected, profiles: list[dict[str, Any]], events: list[dict[str, Any]],
            lists: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Missing and unexpected items per category (sandbox inspection views in, counts + first ids out)."""
    people = {p["id"]: p["attributes"] for p in profiles}
    who = {pid: str(attrs.get("external_id") or f"<no external_id {pid}>") for pid, attrs in people.items()}
    by_user = {who[pid]: attrs for pid, attrs in people.items()}
    keys = Counter((e["metric"], str((e.get("properties") or {}).get("$event_id"))) for e in events)

    def props_ok(user: str, want: dict[str, Any]) -> bool:
        have = (by_user.get(user) or {}).get("properties") or {}
        return all(have.get(k) == v for k, v in want.items() if not k.startswith(RACY_PROPERTIES))

    membership = {(lst["id"], who.get(m, m)) for lst in lists for m in lst["members"]}
    figures = {
        "events": _diff(set(expected.events), set(keys)),
        "profiles": _diff(set(expected.profiles), set(by_user)),
        "profile_properties": _diff({u for u in expected.profiles if u in by_user},
                                    {u for u, want in expected.profiles.items() if u in by_user
                                     and props_ok(u, want)}),
        "list_memberships": _diff({(lid, u) for lid, m in expected.lists.items() for u, ok in m.items() if ok},
                                  {(lid, u) for lid, u in membership if lid in expected.lists}),
        "subscriptions": _diff(expected.subscribed,
                               {u for u, a in by_user.items()
                                if ((a.get("subscriptions") or {}).get("email") or {}).get("marketing", {})
                                .get("consent") == "SUBSCRIBED"}),
        "churn_flags": _diff(set(expected.churn.items()),
                             {(u, a["properties"]["churn_risk"]) for u, a in by_user.items()
                              if "churn_risk" in (a.get("properties") or {})}),
        "deleted_remaining": _diff(set(), expected.deleted & set(by_user)),
    }
    figures["events"]["duplicates"] = sum(n - 1 for n in keys.values() if n > 1)
    return figures


def failures(figures: dict[str, dict[str, Any]]) -> list[str]:
    """Categories with a missing or unexpected item or a duplicated event (empty = Klaviyo holds exactly the
    expected state)."""
    return [name for name, c in figures.items() if c["missing"] or c["unexpected"] or c.get("duplicates")]
