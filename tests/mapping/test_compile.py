"""Custom templates: each syntax feature works, and each kind of mistake fails at load time with a clear message."""

from __future__ import annotations

from typing import Any

import pytest

from klaviyo_segment.errors import ConfigError
from klaviyo_segment.mapping import EventMapping, ProfileMapping, compile_template
from tests.mapping.helpers import assert_valid


def _track(fields: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "t", "kind": "track", "fields": {"metric": "$.event", **fields}, **extra}


def test_custom_identify_features() -> None:
    spec = {
        "name": "crm",
        "kind": "identify",
        "fields": {
            "external_id": {"template": "crm-{$.traits.crm_id|$.userId}"},
            "email": {"path": "$.traits.mail", "transform": ["trim", "lowercase"]},
            "title": {"path": "$.traits.role", "transform": [{"map": {"eng": "Engineer"}}], "default": "Unknown"},
            "locale": {"literal": "de-DE"},
            "location.latitude": "$.traits.geo.lat",
            "properties.vip": {"path": "$.traits.vip", "transform": ["bool"]},
            "properties.first_tag": "$.traits.tags[0]",
            "properties.signup": {"path": "$.traits.createdAt", "transform": ["iso8601"]},
        },
        "properties": {"from": "$.traits", "exclude": ["secret"], "rename": {"plan": "plan_name"}},
    }
    template = compile_template(spec)
    assert (template.name, template.kind) == ("crm", "identify")
    message = {
        "type": "identify",
        "userId": "u7",
        "traits": {
            "mail": " X@Y.io ",
            "role": "eng",
            "geo": {"lat": 52.5},
            "vip": "yes",
            "tags": ["a", "b"],
            "createdAt": 0,
            "secret": "s",
            "plan": "pro",
        },
    }
    (mapping,) = template.apply(message)  # type: ignore[misc]
    assert isinstance(mapping, ProfileMapping)
    assert_valid(mapping)
    attrs = mapping.attributes
    assert attrs["external_id"] == "crm-u7" and attrs["email"] == "x@y.io" and attrs["title"] == "Engineer"
    assert attrs["locale"] == "de-DE" and attrs["location"] == {"latitude": 52.5}
    props = attrs["properties"]
    assert props["vip"] is True and props["first_tag"] == "a" and props["signup"] == "1970-01-01T00:00:00+00:00"
    assert props["plan_name"] == "pro" and "secret" not in props and "mail" not in props and "role" not in props
    (other,) = template.apply({"type": "identify", "userId": "u8", "traits": {}})  # type: ignore[misc]
    assert other.attributes["title"] == "Unknown"  # type: ignore[union-attr]


def test_track_match_where_and_wildcard() -> None:
    template = compile_template(
        _track(
            {"properties.skus": "$.properties.items[*].sku"},
            match={"events": ["Cart *"], "where": [{"property": "total", "gte": 10}]},
        )
    )
    base = {
        "type": "track",
        "userId": "u",
        "properties": {"total": 10, "items": [{"sku": "a"}, {"x": 1}, {"sku": "b"}]},
    }
    assert template.apply({**base, "event": "Order Completed"}) is None
    assert template.apply({**base, "event": "Cart Viewed", "properties": {"total": 9}}) is None
    (event,) = template.apply({**base, "event": "Cart Viewed"})  # type: ignore[misc]
    assert isinstance(event, EventMapping) and event.properties == {"skus": ["a", "b"]}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (_track({"emial": "$.x"}), "template 't', field 'emial': unknown Klaviyo track field 'emial'"),
        (
            {"name": "i", "kind": "identify", "fields": {"anonymous_id": "$.anonymousId"}},
            "field 'anonymous_id': unknown Klaviyo identify field",
        ),
        (_track({"value": "$..x"}), "field 'value': path '$..x': cannot parse"),
        (_track({"value": "traits.total"}), "field 'value': 'traits.total' is not a path"),
        (_track({"value": {"path": "$.p.v", "transform": ["lowercase"]}}), None),
        (
            _track({"value": {"literal": "ten"}}),
            "field 'value': type mismatch: the expression produces string but Klaviyo field 'value' is number",
        ),
        (
            _track({"unique_id": {"path": "$.x", "transform": ["number", "lowercase"]}}),
            "field 'unique_id': transform 'lowercase' expects a string but gets number",
        ),
        (_track({"time": {"path": "$.t", "transform": ["bool"]}}), "field 'time': type mismatch"),
        (_track({"value": {"path": "$.x", "transform": ["square"]}}), "unknown transform 'square'"),
        (_track({"profile.phone_number": {"path": "$.p", "transform": [{"e164": "XX"}]}}), "unknown default country"),
        (_track({"value": {"path": "$.x", "coalesce": ["$.y"]}}), "exactly one of path, coalesce, literal, template"),
        (_track({"unique_id": {"template": "{$.a"}}), "unbalanced"),
        (_track({"properties": "$.properties"}), "field 'properties': write individual keys"),
        (_track({"value": "@.price"}), "'@' paths only exist inside an 'expand' entry"),
        ({"name": "t", "kind": "track", "fields": {}}, "a track template must set 'metric'"),
        ({"name": "t", "kind": "page"}, "key 'kind': must be one of identify, track"),
        ({**_track({}), "nulls": "wipe"}, "key 'nulls': must be one of ignore, clear"),
        ({**_track({}), "feilds": {}}, "key 'feilds': unknown key"),
        ({"name": "i", "kind": "identify", "match": {"events": ["X"]}}, "only track templates match on event names"),
        (_track({}, match={"where": [{"property": "total", "gt": "ten"}]}), "'gt' compares numbers"),
        (
            _track({}, expand=[{"each": "$.properties.products[*]", "fields": {}}]),
            "expand[0].fields: each expanded event needs a 'metric'",
        ),
        (_track({}, properties={"form": "$.properties"}), "expected a path or a mapping with 'from'"),
    ],
)
def test_load_time_errors(spec: dict[str, Any], expected: str | None) -> None:
    if expected is None:  # lowercase on a path is fine: its type is only known at runtime
        compile_template(spec)
        return
    with pytest.raises(ConfigError) as info:
        compile_template(spec)
    assert expected in str(info.value)


def test_unknown_builtin_name() -> None:
    with pytest.raises(ConfigError, match="unknown template 'identify-defualt' .*identify-default"):
        compile_template("identify-defualt")


def test_runtime_type_mismatch_drops_field_with_warning() -> None:
    template = compile_template(_track({"value": "$.properties.amount", "unique_id": "$.properties.obj"}))
    (event,) = template.apply(
        {
            "type": "track",
            "event": "E",
            "userId": "u",  # type: ignore[misc]
            "properties": {"amount": "lots", "obj": {"a": 1}},
        }
    )
    assert event.value is None and event.unique_id is None  # type: ignore[union-attr]
    assert event.warnings == [
        "value: value dropped: not a number",  # type: ignore[union-attr]
        "unique_id: value dropped: not a string (dict)",
    ]
