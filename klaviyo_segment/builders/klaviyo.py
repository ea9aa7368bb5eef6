"""Pure builders of every Klaviyo request body and query this project sends (no I/O).

Used by the tasks and by ``preview``. The live API rejects attributes its schema does not declare, so every
builder only emits declared fields and raises ``ValueError`` (naming the field) on anything else: a failed item is
better than a silently dropped trait.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from klaviyo_segment import constants
from klaviyo_segment.builders.limits import email_problem, event_time_problem, metric_name_problem

T = TypeVar("T")
Body = dict[str, Any]

LOCATION_FIELDS = frozenset(
    {"address1", "address2", "city", "country", "latitude", "longitude", "region", "zip", "timezone", "ip"}
)
PROFILE_FIELDS = frozenset(
    {
        "email",
        "phone_number",
        "external_id",
        "_kx",
        "first_name",
        "last_name",
        "organization",
        "locale",
        "title",
        "image",
        "location",
        "properties",
    }
)
#: Event profiles may also carry anonymous_id (profile-import cannot).
EVENT_PROFILE_FIELDS = PROFILE_FIELDS | {"anonymous_id"}
IDENTIFIER_FIELDS = ("id", "email", "phone_number", "external_id", "anonymous_id", "_kx")
PROFILE_META_FIELDS = frozenset({"patch_properties", "patch_identifiers"})
EVENT_FIELDS = frozenset(
    {
        "metric",
        "service",
        "profile",
        "profile_id",
        "profile_meta",
        "properties",
        "time",
        "value",
        "value_currency",
        "unique_id",
        "backfill",
    }
)


def _unknown(kind: str, given: Iterable[str], allowed: Iterable[str]) -> None:
    extra = sorted(set(given) - set(allowed))
    if extra:
        raise ValueError(f"{kind}: field(s) not accepted by Klaviyo: {', '.join(extra)}")


def format_datetime(value: datetime | str) -> str:
    """ISO-8601 in UTC with ``Z``; naive datetimes are taken as UTC (Segment timestamps are UTC)."""
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def profile_attributes(attributes: Mapping[str, Any], *, allowed: frozenset[str] = PROFILE_FIELDS) -> Body:
    """Validated profile attributes. ``None`` values are kept on purpose: Klaviyo clears a field sent as null."""
    _unknown("profile", attributes, allowed)
    out = dict(attributes)
    location = out.get("location")
    if location is not None:
        if not isinstance(location, Mapping):
            raise ValueError("profile: location must be an object")
        _unknown("profile.location", location, LOCATION_FIELDS)
        out["location"] = dict(location)
    if out.get("properties") is not None and not isinstance(out["properties"], Mapping):
        raise ValueError("profile: properties must be an object")
    return out


def _profile_resource(
    attributes: Mapping[str, Any],
    *,
    profile_id: str | None = None,
    meta: Mapping[str, Any] | None = None,
    allowed: frozenset[str] = PROFILE_FIELDS,
) -> Body:
    resource: Body = {"type": "profile", "attributes": profile_attributes(attributes, allowed=allowed)}
    if profile_id:
        resource["id"] = profile_id
    if meta:
        _unknown("profile meta", meta, PROFILE_META_FIELDS)
        resource["meta"] = dict(meta)
    return resource


def has_identifier(attributes: Mapping[str, Any], profile_id: str | None = None) -> bool:
    # spelled out: this runs for every event of every bulk body (several times), a generator costs 3x more
    get = attributes.get
    return bool(
        profile_id or get("email") or get("phone_number") or get("external_id") or get("anonymous_id") or get("_kx")
    )


def profile_import_body(
    attributes: Mapping[str, Any], *, profile_id: str | None = None, meta: Mapping[str, Any] | None = None
) -> Body:
    """``POST /api/profile-import`` (create_or_update_profile)."""
    if not has_identifier(attributes, profile_id):
        raise ValueError("profile: needs an id, email, phone_number, external_id or _kx")
    _check_email(attributes)
    return {"data": _profile_resource(attributes, profile_id=profile_id, meta=meta)}


def _check_email(attributes: Mapping[str, Any]) -> None:
    """Single requests only: a bulk import reports per-row errors itself, and one bad row must not fail the job."""
    problem = email_problem(attributes.get("email"))
    if problem:
        raise ValueError(f"profile: {problem}")


def bulk_profile_import_body(profiles: Sequence[Mapping[str, Any]], *, list_ids: Sequence[str] = ()) -> Body:
    """``POST /api/profile-bulk-import-jobs``; each item is profile attributes (optionally with ``id``)."""
    data = []
    for item in profiles:
        attrs = {k: v for k, v in item.items() if k != "id"}
        if not has_identifier(attrs, item.get("id")):
            raise ValueError("profile: needs an id, email, phone_number, external_id or _kx")
        data.append(_profile_resource(attrs, profile_id=item.get("id")))
    body: Body = {"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": data}}}}
    if list_ids:
        body["data"]["relationships"] = {"lists": {"data": [{"type": "list", "id": i} for i in list_ids]}}
    return body


def event_profile(event: Mapping[str, Any]) -> Body:
    attrs = dict(event.get("profile") or {})
    if not has_identifier(attrs, event.get("profile_id")):
        raise ValueError("event: the profile needs an email, phone_number, external_id, anonymous_id, _kx or id")
    _check_email(attrs)
    return _profile_resource(
        attrs, profile_id=event.get("profile_id"), meta=event.get("profile_meta"), allowed=EVENT_PROFILE_FIELDS
    )


def event_attributes(event: Mapping[str, Any]) -> Body:
    _unknown("event", event, EVENT_FIELDS)
    name = event.get("metric")
    problem = metric_name_problem(name) or event_time_problem(event.get("time"))
    if problem:
        raise ValueError(f"event: {problem}")
    properties = event.get("properties") or {}
    if not isinstance(properties, Mapping):
        raise ValueError("event: properties must be an object")
    metric: Body = {"name": name}
    if event.get("service"):
        metric["service"] = event["service"]
    attrs: Body = {"properties": dict(properties), "metric": {"data": {"type": "metric", "attributes": metric}}}
    if event.get("time") is not None:
        attrs["time"] = format_datetime(event["time"])
    for key in ("value", "value_currency", "unique_id", "backfill"):
        if event.get(key) is not None:
            attrs[key] = event[key]
    return attrs


def create_event_body(event: Mapping[str, Any]) -> Body:
    """``POST /api/events``. ``event`` keys: metric, profile (attributes), profile_id, properties, time, value,
    value_currency, unique_id, backfill, service, profile_meta."""
    attrs = event_attributes(event)
    attrs["profile"] = {"data": event_profile(event)}
    return {"data": {"type": "event", "attributes": attrs}}


def list_relationships_body(profile_ids: Sequence[str]) -> Body:
    """Add/remove profiles on a list (ids only: emails are not accepted there)."""
    if not profile_ids or not all(isinstance(i, str) and i for i in profile_ids):
        raise ValueError("list membership: profile ids must be non-empty strings")
    return {"data": [{"type": "profile", "id": i} for i in profile_ids]}


def create_list_body(name: str, *, opt_in_process: str | None = None) -> Body:
    if not name.strip():
        raise ValueError("list: name is required")
    attrs: Body = {"name": name}
    if opt_in_process is not None:
        if opt_in_process not in ("double_opt_in", "single_opt_in"):
            raise ValueError("list: opt_in_process must be double_opt_in or single_opt_in")
        attrs["opt_in_process"] = opt_in_process
    return {"data": {"type": "list", "attributes": attrs}}


def _list_relationship(list_id: str | None) -> Body:
    return {"list": {"data": {"type": "list", "id": list_id}}} if list_id else {}


def subscription_profile(profile: Mapping[str, Any], *, sms: bool = False, historical_import: bool = False) -> Body:
    """One subscribe entry: email marketing when there is an email, SMS marketing when asked and a phone exists."""
    _unknown("subscribe profile", profile, {"id", "email", "phone_number", "consented_at", "age_gated_date_of_birth"})
    consented_at = profile.get("consented_at")
    if historical_import and not consented_at:
        raise ValueError("subscribe: historical_import needs consented_at")
    if consented_at and not historical_import:
        raise ValueError("subscribe: consented_at is only accepted with historical_import")
    consent: Body = {"consent": "SUBSCRIBED"}
    if consented_at:
        consent["consented_at"] = format_datetime(consented_at)
    subs: Body = {}
    if profile.get("email"):
        subs["email"] = {"marketing": dict(consent)}
    if sms and profile.get("phone_number"):
        subs["sms"] = {"marketing": dict(consent)}
    if not subs:
        raise ValueError("subscribe: needs an email (or a phone_number with sms=True)")
    attrs: Body = {k: profile[k] for k in ("email", "phone_number", "age_gated_date_of_birth") if profile.get(k)}
    attrs["subscriptions"] = subs
    entry: Body = {"type": "profile", "attributes": attrs}
    if profile.get("id"):
        entry["id"] = profile["id"]
    return entry


def subscribe_body(
    profiles: Sequence[Mapping[str, Any]],
    *,
    list_id: str | None = None,
    custom_source: str | None = None,
    historical_import: bool = False,
    sms: bool = False,
) -> Body:
    """``POST /api/profile-subscription-bulk-create-jobs`` (note: subscribing clears suppressions)."""
    attrs: Body = {
        "profiles": {"data": [subscription_profile(p, sms=sms, historical_import=historical_import) for p in profiles]}
    }
    if custom_source:
        attrs["custom_source"] = custom_source
    if historical_import:
        attrs["historical_import"] = True
    body: Body = {"data": {"type": "profile-subscription-bulk-create-job", "attributes": attrs}}
    if list_id:
        body["data"]["relationships"] = _list_relationship(list_id)
    return body


def unsubscription_profile(profile: Mapping[str, Any], *, sms: bool = False) -> Body:
    _unknown("unsubscribe profile", profile, {"email", "phone_number"})
    subs: Body = {}
    if profile.get("email"):
        subs["email"] = {"marketing": {"consent": "UNSUBSCRIBED"}}
    if sms and profile.get("phone_number"):
        subs["sms"] = {"marketing": {"consent": "UNSUBSCRIBED"}}
    if not subs:
        raise ValueError("unsubscribe: needs an email (or a phone_number with sms=True)")
    attrs: Body = {k: profile[k] for k in ("email", "phone_number") if profile.get(k)}
    attrs["subscriptions"] = subs
    return {"type": "profile", "attributes": attrs}


def unsubscribe_body(profiles: Sequence[Mapping[str, Any]], *, list_id: str | None = None, sms: bool = False) -> Body:
    """``POST /api/profile-subscription-bulk-delete-jobs``. Without a list the unsubscribe is global."""
    body: Body = {
        "data": {
            "type": "profile-subscription-bulk-delete-job",
            "attributes": {"profiles": {"data": [unsubscription_profile(p, sms=sms) for p in profiles]}},
        }
    }
    if list_id:
        body["data"]["relationships"] = _list_relationship(list_id)
    return body


def merge_body(destination_id: str, source_id: str) -> Body:
    """``POST /api/profile-merge``: the API merges exactly one source into the destination."""
    if not destination_id or not source_id or destination_id == source_id:
        raise ValueError("merge: needs two different profile ids")
    return {
        "data": {
            "type": "profile-merge",
            "id": destination_id,
            "relationships": {"profiles": {"data": [{"type": "profile", "id": source_id}]}},
        }
    }


def deletion_body(*, profile_id: str | None = None, email: str | None = None, phone_number: str | None = None) -> Body:
    """``POST /api/data-privacy-deletion-jobs``: exactly one identifier (external_id must be resolved first)."""
    given = [(k, v) for k, v in (("id", profile_id), ("email", email), ("phone_number", phone_number)) if v]
    if len(given) != 1:
        raise ValueError("deletion: give exactly one of profile id, email or phone_number")
    key, value = given[0]
    profile: Body = {"type": "profile", "attributes": {}}
    if key == "id":
        profile["id"] = value
    else:
        profile["attributes"][key] = value
    return {"data": {"type": "data-privacy-deletion-job", "attributes": {"profile": {"data": profile}}}}


def quote_filter_value(value: str) -> str:
    """A filter string literal: double quotes, with backslash and double quote escaped."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def filter_equals(field_name: str, value: str) -> str:
    return f"equals({field_name},{quote_filter_value(value)})"


def filter_any(field_name: str, values: Sequence[str]) -> str:
    """``any(email,["a@x.com","b@x.com"])``; httpx URI-encodes it when sent as the ``filter`` param."""
    if not values:
        raise ValueError("filter: any() needs at least one value")
    return f"any({field_name},[{','.join(quote_filter_value(v) for v in values)}])"


def get_profiles_params(
    field_name: str,
    values: Sequence[str],
    *,
    additional_fields: Sequence[str] = (),
    page_size: int = constants.GET_PROFILES_PAGE_MAX,
) -> dict[str, Any]:
    """Query for a batched profile lookup by one identifier field."""
    if field_name not in ("id", "email", "phone_number", "external_id"):
        raise ValueError(f"get_profiles: cannot look profiles up by {field_name!r}")
    params: dict[str, Any] = {
        "filter": filter_any(field_name, values),
        "page[size]": min(page_size, constants.GET_PROFILES_PAGE_MAX),
    }
    if additional_fields:
        params["additional-fields[profile]"] = ",".join(additional_fields)
    return params


def events_filter(
    metric_id: str | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    profile_id: str | None = None,
) -> str:
    """``and(equals(metric_id,"X"),greater-or-equal(datetime,2026-01-01T00:00:00Z),...)``; datetimes unquoted."""
    parts = []
    if metric_id:
        parts.append(filter_equals("metric_id", metric_id))
    if profile_id:
        parts.append(filter_equals("profile_id", profile_id))
    if since is not None:
        parts.append(f"greater-or-equal(datetime,{format_datetime(since)})")
    if until is not None:
        parts.append(f"less-than(datetime,{format_datetime(until)})")
    if not parts:
        raise ValueError("get_events: give at least a metric, a profile or a time window")
    return parts[0] if len(parts) == 1 else f"and({','.join(parts)})"


def json_size(value: Any) -> int:
    """Bytes of the compact UTF-8 JSON the client sends."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8"))


def chunk(
    items: Sequence[T],
    *,
    max_count: int,
    max_bytes: int = constants.BULK_PAYLOAD_MAX_BYTES,
    size_of: Callable[[T], int] = json_size,
    envelope_bytes: int = 1024,
) -> tuple[list[list[int]], list[int]]:
    """Split item indices into chunks within both the count and the serialized-size limit.

    Returns ``(chunks, oversize)``: an item that alone exceeds the limit can never be sent and is reported
    separately instead of poisoning a chunk.
    """
    budget = max_bytes - envelope_bytes
    chunks: list[list[int]] = []
    oversize: list[int] = []
    current: list[int] = []
    used = 0
    for i, item in enumerate(items):
        size = size_of(item) + 1  # the separating comma
        if size > budget:
            oversize.append(i)
            continue
        if current and (len(current) >= max_count or used + size > budget):
            chunks.append(current)
            current, used = [], 0
        current.append(i)
        used += size
    if current:
        chunks.append(current)
    return chunks, oversize
