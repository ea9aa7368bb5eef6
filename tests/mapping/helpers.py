"""Wrap mapping outputs into the official request bodies and validate them against the pinned trimmed schema."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import jsonschema

from klaviyo_segment.constants import schema_path
from klaviyo_segment.mapping import EventMapping, ProfileMapping


@lru_cache(maxsize=1)
def _ops() -> dict[str, Any]:
    return json.loads(schema_path().read_text())["operations"]


def profile_body(mapping: ProfileMapping) -> dict[str, Any]:
    return {"data": {"type": "profile", "attributes": mapping.attributes}}


def event_body(mapping: EventMapping) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "properties": mapping.properties,
        "metric": {"data": {"type": "metric", "attributes": {"name": mapping.metric}}},
        "profile": {"data": {"type": "profile", "attributes": mapping.profile}},
    }
    for key in ("time", "value", "value_currency", "unique_id"):
        if getattr(mapping, key) is not None:
            attributes[key] = getattr(mapping, key)
    return {"data": {"type": "event", "attributes": attributes}}


def assert_valid(mapping: ProfileMapping | EventMapping) -> None:
    """Raises jsonschema.ValidationError when the body would be rejected (closed objects, types)."""
    if isinstance(mapping, ProfileMapping):
        jsonschema.validate(profile_body(mapping), _ops()["create_or_update_profile"]["request_schema"])
    else:
        jsonschema.validate(event_body(mapping), _ops()["create_event"]["request_schema"])
