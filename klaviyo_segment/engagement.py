"""Klaviyo email engagement -> Segment track calls, as pure functions (no I/O).

Why pure: the webhook path, the polling path, ``preview`` and tests all translate the same way. The output
mirrors Segment's own Klaviyo source (event names, ``userId`` = the profile's external_id, else
``anonymousId`` = its email) so downstream warehouse tables and audiences keep working when a workspace
switches from that source to this flow. The Segment ``messageId`` is derived from the Klaviyo event id, so a
redelivered webhook, an overlapping poll window or a replay never creates a second event in Segment.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from klaviyo_segment.builders.segment import build_track
from klaviyo_segment.jsondict import obj

#: Klaviyo metric name -> Segment event name (Segment's Klaviyo source / Email spec).
SEGMENT_EVENTS: dict[str, str] = {
    "Received Email": "Email Delivered",
    "Opened Email": "Email Opened",
    "Clicked Email": "Email Link Clicked",
    "Bounced Email": "Email Bounced",
    "Unsubscribed": "Email Unsubscribed",
    "Marked Email as Spam": "Email Marked as Spam",
}
METRICS: tuple[str, ...] = tuple(SEGMENT_EVENTS)

#: System-webhook topic -> metric name. Klaviyo's docs also show ``email_delivered`` style topic ids.
TOPICS: dict[str, str] = {
    "event:klaviyo.received_email": "Received Email",
    "event:klaviyo.email_delivered": "Received Email",
    "event:klaviyo.opened_email": "Opened Email",
    "event:klaviyo.clicked_email": "Clicked Email",
    "event:klaviyo.bounced_email": "Bounced Email",
    "event:klaviyo.unsubscribed": "Unsubscribed",
    "event:klaviyo.marked_email_as_spam": "Marked Email as Spam",
}
_TOPIC_OF: dict[str, str] = {}
for _topic, _metric in TOPICS.items():
    _TOPIC_OF.setdefault(_metric, _topic)

#: Klaviyo event property -> Segment property (Email spec names where one exists).
_PROPERTIES: dict[str, str] = {
    "Campaign Name": "campaign_name",
    "Subject": "email_subject",
    "URL": "link_url",
    "Bounce Type": "bounce_type",
    "Email Domain": "email_domain",
    "Inbox Provider": "inbox_provider",
    "Client Name": "client_name",
    "Client Type": "client_type",
    "Client OS": "client_os",
    "List": "list_name",
}


def topic_for(metric: str) -> str:
    return _TOPIC_OF[metric]


def message_id_for(event_id: str) -> str:
    """Deterministic Segment messageId: Segment dedupes on it, so every retry path is idempotent."""
    return f"klaviyo-event-{event_id}"


def split_records(raws: Iterable[Any]) -> list[Any]:
    """Whole deliveries (``{"data": [records], "meta": {...}}``) become their records; anything else stays.

    Why: the receiver already splits deliveries, but a user replaying a captured webhook body (or a Cloud
    webhook template) passes the delivery as is, and the contract counts Klaviyo events, not deliveries."""
    out: list[Any] = []
    for raw in raws:
        if isinstance(raw, dict) and isinstance(raw.get("data"), list) and "payload" not in raw:
            out.extend(raw["data"])
        else:
            out.append(raw)
    return out


def record_key(raw: Any) -> str:
    """The Klaviyo event id (``external_id``), else the payload's id, else a content hash."""
    if isinstance(raw, dict):
        for value in (
            raw.get("external_id"),
            (raw.get("payload") or {}).get("id") if isinstance(raw.get("payload"), dict) else None,
        ):
            if isinstance(value, (str, int)) and str(value):
                return str(value)
        if isinstance(raw.get("messageId"), str) and raw["messageId"]:
            return raw["messageId"]  # a dead letter replayed without an id keeps the key it failed under
    blob = json.dumps(raw, sort_keys=True, default=str, ensure_ascii=False).encode()
    return "sha1:" + hashlib.sha1(blob).hexdigest()[:20]


@dataclass
class EngagementEvent:
    """What the translation needs from one Klaviyo event."""

    event_id: str
    metric: str
    datetime: datetime
    profile_id: str | None
    properties: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] | None = None  # the profile resource when it came along (include=profile)


def metric_of(raw: Any) -> str | None:
    """The metric a record is about, from its topic (webhooks) or our own ``metric`` hint (polling)."""
    if not isinstance(raw, dict):
        return None
    topic = raw.get("topic")
    if isinstance(topic, str) and topic in TOPICS:
        return TOPICS[topic]
    metric = raw.get("metric")
    return metric if isinstance(metric, str) and metric in SEGMENT_EVENTS else None


def _parse_datetime(attrs: Mapping[str, Any]) -> datetime:
    value = attrs.get("datetime")
    if isinstance(value, str) and value:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    stamp = attrs.get("timestamp")
    if isinstance(stamp, (int, float)) and not isinstance(stamp, bool):
        return datetime.fromtimestamp(stamp, UTC)
    raise ValueError("payload.attributes: needs datetime or timestamp")


def parse_record(raw: Any) -> EngagementEvent | str:
    """The event, or a one-line reason why the record is unusable (a failed outcome, never an exception)."""
    if not isinstance(raw, dict):
        return f"invalid record: expected a JSON object, got {type(raw).__name__}"
    payload = raw.get("payload")
    if not isinstance(payload, dict):
        return "invalid record: 'payload' (a Klaviyo event resource) is missing"
    metric = metric_of(raw)
    if metric is None:
        return f"invalid record: unknown topic {raw.get('topic')!r}"
    event_id = raw.get("external_id") or payload.get("id")
    if not event_id:
        return "invalid record: no event id (external_id or payload.id)"
    attrs = obj(payload, "attributes")
    try:
        when = _parse_datetime(attrs)
    except (ValueError, TypeError, OverflowError) as exc:
        return f"invalid record: {exc}"
    rel = ((payload.get("relationships") or {}).get("profile") or {}).get("data") or {}
    props = attrs.get("event_properties")
    return EngagementEvent(
        event_id=str(event_id),
        metric=metric,
        datetime=when,
        profile_id=rel.get("id") if isinstance(rel, dict) else None,
        properties=dict(props) if isinstance(props, dict) else {},
        profile=raw.get("profile") if isinstance(raw.get("profile"), dict) else None,
    )


def segment_properties(event: EngagementEvent, email: str | None) -> dict[str, Any]:
    """Campaign/flow/message ids and names, subject, link and bounce details, plus the Klaviyo ids."""
    p = event.properties
    out: dict[str, Any] = {"klaviyo_event_id": event.event_id, "klaviyo_metric": event.metric}
    message = p.get("$message")
    flow = p.get("$flow")
    if message:
        out["email_id"] = message
        if flow:
            out["flow_id"] = flow
            out["flow_message_id"] = message
        else:
            out["campaign_id"] = message
    elif flow:
        out["flow_id"] = flow
    if p.get("Flow Name"):
        out["flow_name"] = p["Flow Name"]
    for source, target in _PROPERTIES.items():
        if p.get(source) not in (None, ""):
            out[target] = p[source]
    if email:
        out["email"] = email
    return out


def identity_of(profile: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    """(userId, anonymousId) as Segment's Klaviyo source sets them: external_id, else the email."""
    attrs = (profile or {}).get("attributes") or {}
    external_id = attrs.get("external_id")
    email = attrs.get("email")
    if external_id not in (None, ""):
        return str(external_id), None
    if email:
        return None, str(email)
    return None, None


def to_track(event: EngagementEvent, profile: Mapping[str, Any] | None) -> dict[str, Any]:
    """The Segment track call; ValueError when the profile has neither external_id nor email."""
    user_id, anonymous_id = identity_of(profile)
    if not user_id and not anonymous_id:
        raise ValueError("profile has no external_id or email")
    email = ((profile or {}).get("attributes") or {}).get("email")
    context: dict[str, Any] = {"integration": {"name": "klaviyo"}}
    if email:
        context["traits"] = {"email": email}
    return build_track(
        SEGMENT_EVENTS[event.metric],
        user_id=user_id,
        anonymous_id=anonymous_id,
        properties=segment_properties(event, email),
        timestamp=event.datetime,
        message_id=message_id_for(event.event_id),
        context=context,
    )


def records_from_events(response: Mapping[str, Any], metric: str) -> list[dict[str, Any]]:
    """Get Events output (``{"data", "included"}``) as webhook-shaped records, so polling shares one path.

    The included profile rides along in ``record["profile"]`` so polling needs no extra lookup."""
    profiles = {r.get("id"): r for r in response.get("included") or [] if r.get("type") == "profile"}
    records = []
    for event in response.get("data") or []:
        rel = ((event.get("relationships") or {}).get("profile") or {}).get("data") or {}
        record: dict[str, Any] = {"external_id": str(event.get("id")), "payload": event, "topic": topic_for(metric)}
        if rel.get("id") in profiles:
            record["profile"] = profiles[rel["id"]]
        records.append(record)
    return records
