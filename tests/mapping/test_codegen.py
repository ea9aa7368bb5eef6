"""The generated per-template code (codegen.py) and the iso8601 fast path: the branches the built-in templates
never take (explicit nulls, map to null, default after drop_if_empty, non-string values through string
transforms, item paths), each pinned to the value the per-field semantics give."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from klaviyo_segment.mapping import EventMapping, ProfileMapping, compile_template
from klaviyo_segment.mapping.transforms import Drop, to_iso8601


def _slow_iso(value: str) -> str:
    """The datetime route the fast path must agree with."""
    parsed = datetime.fromisoformat(value)
    return parsed.isoformat()


@pytest.mark.parametrize(
    "value",
    [
        "2026-03-02T09:00:01.234Z",
        "2026-03-02T09:00:01Z",
        "2026-03-02T09:00:01.000Z",
        "2026-03-02T23:59:59.123456Z",
        "2024-02-29T00:00:00.000100Z",
        "2026-03-02T09:00:01.1Z",
        "2026-03-02T09:00:01.12345Z",
    ],
)
def test_zulu_fast_path_matches_datetime(value: str) -> None:
    assert to_iso8601(value) == _slow_iso(value)


@pytest.mark.parametrize(
    "value",
    [
        "2023-02-29T00:00:00Z",
        "2026-03-02T24:00:00Z",
        "2026-03-02T09:60:00Z",
        "2026-03-02T09:00:60Z",
        "0000-01-01T00:00:00Z",
        "٢٠٢٦-03-02T09:00:01Z",
    ],
)
def test_impossible_zulu_times_are_still_dropped(value: str) -> None:
    with pytest.raises(Drop):
        to_iso8601(value)


def test_generated_identify_handles_nulls_defaults_and_odd_types() -> None:
    template = compile_template(
        {
            "name": "odd",
            "kind": "identify",
            "nulls": "clear",
            "fields": {
                "email": {"path": "$.traits.email", "transform": ["trim", "lowercase", "drop_if_empty"]},
                "first_name": {"path": "$.traits.first", "default": "Anon"},
                "last_name": {"path": "$.traits.last", "transform": ["uppercase", {"map": {"X": None}}]},
                "title": {"path": "$.traits.title", "transform": ["trim", "drop_if_empty", {"default": "none"}]},
                "organization": {"coalesce": ["$.traits.company.name", "$.traits.company"], "transform": ["trim"]},
                "location.zip": {"path": "$.traits.zip", "transform": ["string", "trim"]},
                "image": "$.traits.image",
                "properties.logins": {"path": "$.traits.logins", "transform": ["int"]},
            },
        }
    )
    message = {
        "type": "identify",
        "traits": {
            "email": "  ",
            "last": "x",
            "title": "   ",
            "company": {"name": 7},
            "zip": 2100,
            "image": None,
            "logins": "1.5",
        },
    }
    (mapping,) = template.apply(message)  # type: ignore[misc]
    assert isinstance(mapping, ProfileMapping)
    assert mapping.attributes == {
        "first_name": "Anon",
        "last_name": None,
        "title": "none",
        "organization": "7",
        "location": {"zip": "2100"},
        "image": None,
    }
    assert list(mapping.attributes) == ["first_name", "last_name", "title", "organization", "location", "image"]
    assert mapping.warnings == ["properties.logins: value dropped: not an integer"]


def test_generated_expand_reads_item_paths() -> None:
    template = compile_template(
        {
            "name": "items",
            "kind": "track",
            "fields": {"metric": "$.event"},
            "expand": [
                {
                    "each": "$.properties.items[*]",
                    "fields": {
                        "metric": {"literal": "Item"},
                        "value": {"coalesce": ["@.price", "@.value"], "transform": ["number"]},
                        "properties.sku": {"path": "@.meta.sku", "transform": ["lowercase"]},
                    },
                }
            ],
        }
    )
    message: dict[str, Any] = {
        "type": "track",
        "event": "Bought",
        "properties": {
            "items": [
                {"price": "2.5", "meta": {"sku": "AB"}},
                {"value": 3, "meta": "flat"},
                "not-a-dict",
                {"price": "free"},
            ]
        },
    }
    parent, *children = template.apply(message)  # type: ignore[misc]
    assert isinstance(parent, EventMapping) and parent.metric == "Bought"
    assert [(c.value, c.properties, c.warnings) for c in children] == [
        (2.5, {"sku": "ab"}, []),
        (3, {}, []),
        (None, {}, []),
        (None, {}, ["value: value dropped: not a number"]),
    ]
