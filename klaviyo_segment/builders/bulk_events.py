"""The bulk create events body (``POST /api/event-bulk-create-jobs``), built once per event.

Each event is validated and turned into its bulk entry exactly once (:func:`prepare_event`); grouping per
profile, duplicate detection, chunking by count and size, and a resend after a partial 400 all reuse that entry.
Building the same body four times over (validate, find duplicates, size, send) cost more CPU per event than the
rest of the forward-track path together.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from klaviyo_segment.builders.klaviyo import Body, event_attributes, event_profile

#: Bytes one entry adds around its attributes and profile in the body: the ``type`` keys, braces and commas.
ENTRY_OVERHEAD_BYTES = 120


@dataclass(frozen=True)
class PreparedEvent:
    """One validated event: its bulk attributes, its profile resource, the profile's grouping key (canonical
    JSON) and the bytes it adds to a request body."""

    attributes: Body
    profile: Body
    profile_key: str
    size: int


def _compact(value: Any, *, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys, default=str)


def prepare_event(event: Mapping[str, Any]) -> PreparedEvent:
    """Validate and build one event's entry; ``ValueError`` names what Klaviyo would reject."""
    attributes = event_attributes(event)
    profile = event_profile(event)
    key = _compact(profile, sort_keys=True)
    size = len(key.encode("utf-8")) + len(_compact(attributes).encode("utf-8")) + ENTRY_OVERHEAD_BYTES
    return PreparedEvent(attributes, profile, key, size)


def identity_key(event: Mapping[str, Any]) -> tuple[Any, ...]:
    """Who an event is about, for grouping and for the bulk endpoint's "same profile and metric" duplicate rule."""
    profile = event.get("profile") or {}
    email = profile.get("email")
    return (
        event.get("profile_id"),
        email.strip().lower() if isinstance(email, str) else email,
        *(profile.get(k) for k in ("phone_number", "external_id", "anonymous_id", "_kx")),
    )


def duplicate_key(event: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """Events with the same key repeat one another (same profile, metric and unique_id): the endpoint fails a
    whole request that contains both, and Klaviyo records only the first anyway. None = never a repeat."""
    if event.get("unique_id") is None:
        return None
    return (identity_key(event), event.get("metric"), event["unique_id"])


@dataclass
class BulkEventsPlan:
    """A bulk-create body plus the maps needed to turn server pointers back into input indices."""

    body: Body
    #: groups[n][m] = input index of event m of profile group n (pointer ``.../data/n/.../events/data/m``).
    groups: list[list[int]]
    #: input index -> index of the earlier event it repeats (same profile, metric and unique_id); not sent.
    duplicates: dict[int, int] = field(default_factory=dict)


def plan_bulk_events(prepared: Sequence[tuple[int, PreparedEvent]]) -> BulkEventsPlan:
    """The request body for already prepared, de-duplicated events (``(label, event)`` pairs), grouped per
    profile in first-seen order."""
    group_of: dict[str, int] = {}
    groups: list[list[int]] = []
    entries: list[Body] = []
    for label, event in prepared:
        n = group_of.get(event.profile_key)
        if n is None:
            n = group_of[event.profile_key] = len(groups)
            groups.append([])
            attributes = {"profile": {"data": event.profile}, "events": {"data": []}}
            entries.append({"type": "event-bulk-create", "attributes": attributes})
        groups[n].append(label)
        entries[n]["attributes"]["events"]["data"].append({"type": "event", "attributes": event.attributes})
    body = {"data": {"type": "event-bulk-create-job", "attributes": {"events-bulk-create": {"data": entries}}}}
    return BulkEventsPlan(body=body, groups=groups)


@dataclass
class PreparedEvents:
    """Every event of a call, prepared once: the sendable ones (label, entry) in order, the repeats (label ->
    label of the first copy) and the invalid ones (label -> the ValueError/TypeError naming why)."""

    sendable: list[tuple[int, PreparedEvent]] = field(default_factory=list)
    duplicates: dict[int, int] = field(default_factory=dict)
    invalid: dict[int, Exception] = field(default_factory=dict)


def prepare_events(events: Sequence[Mapping[str, Any]], labels: Sequence[int] | None = None) -> PreparedEvents:
    """Validate and build each event once, and drop repeats of an earlier (valid) event."""
    out = PreparedEvents()
    first_of: dict[tuple[Any, ...], int] = {}
    for label, event in zip(labels if labels is not None else range(len(events)), events, strict=True):
        try:
            entry = prepare_event(event)
        except (ValueError, TypeError) as exc:
            out.invalid[label] = exc
            continue
        dup = duplicate_key(event)
        if dup is not None:
            if dup in first_of:
                out.duplicates[label] = first_of[dup]
                continue
            first_of[dup] = label
        out.sendable.append((label, entry))
    return out


def bulk_create_events_body(
    events: Sequence[Mapping[str, Any]], indices: Sequence[int] | None = None
) -> BulkEventsPlan:
    """``POST /api/event-bulk-create-jobs``: events grouped per profile, in-request duplicate unique_ids removed
    (the endpoint fails the whole request on them). ``indices`` label the events (default 0..n-1). An invalid
    event raises its ``ValueError``."""
    prepared = prepare_events(events, indices)
    if prepared.invalid:
        raise next(iter(prepared.invalid.values()))
    plan = plan_bulk_events(prepared.sendable)
    plan.duplicates = prepared.duplicates
    return plan
