"""Built-in templates on realistic Segment messages; every produced body validates against the pinned schema."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from klaviyo_segment.mapping import EventMapping, MappingError, ProfileMapping, TemplateChain, compile_template
from tests.mapping.helpers import assert_valid

IDENTIFY = compile_template("identify-default")
TRACK = compile_template("track-default")
ECOM = compile_template("ecommerce")


def _profile(message: dict[str, Any], template: Any = IDENTIFY) -> ProfileMapping:
    result = template.apply(message)
    assert result is not None and len(result) == 1
    mapping = result[0]
    assert isinstance(mapping, ProfileMapping)
    assert_valid(mapping)
    return mapping


def _events(message: dict[str, Any], template: Any) -> list[EventMapping]:
    result = template.apply(message)
    assert result is not None
    for mapping in result:
        assert isinstance(mapping, EventMapping)
        assert_valid(mapping)
        if mapping.time is not None:
            assert datetime.fromisoformat(mapping.time).tzinfo is not None
    return result  # type: ignore[return-value]


@pytest.mark.parametrize("casing", ["camel", "snake"])
def test_identify_reserved_traits_both_casings(casing: str) -> None:
    first, last, postal = (
        ("firstName", "lastName", "postalCode") if casing == "camel" else ("first_name", "last_name", "postal_code")
    )
    message = {
        "type": "identify",
        "userId": "97980cfea0067",
        "messageId": "m-1",
        "traits": {
            "email": "  Peter.Gibbons@Example.COM ",
            first: "Peter",
            last: "Gibbons",
            "phone": "(415) 555-2671",
            "company": {"name": "Initech", "industry": "software"},
            "title": "Engineer",
            "avatar": "https://img.example/p.png",
            "plan": "premium",
            "logins": 5,
            "address": {"street": "6th St", "city": "San Francisco", "state": "CA", postal: "94103", "country": "USA"},
        },
        "context": {"timezone": "America/Los_Angeles", "ip": "203.0.113.7"},
    }
    attrs = _profile(message).attributes
    assert attrs["email"] == "peter.gibbons@example.com"
    assert attrs["phone_number"] == "+14155552671"
    assert attrs["external_id"] == "97980cfea0067"
    assert (attrs["first_name"], attrs["last_name"]) == ("Peter", "Gibbons")
    assert attrs["organization"] == "Initech"
    assert attrs["title"] == "Engineer" and attrs["image"] == "https://img.example/p.png"
    assert attrs["location"] == {
        "address1": "6th St",
        "city": "San Francisco",
        "region": "CA",
        "zip": "94103",
        "country": "USA",
        "timezone": "America/Los_Angeles",
        "ip": "203.0.113.7",
    }
    # reserved traits mapped to profile fields are not duplicated into properties
    assert attrs["properties"] == {"plan": "premium", "logins": 5}
    assert "anonymous_id" not in attrs


def test_identify_string_company_unicode_and_local_phone_other_country() -> None:
    template = compile_template("identify-default", phone_default_country="GB")
    message = {
        "type": "identify",
        "userId": 42,
        "traits": {
            "first_name": "Zoë",
            "last_name": "Ñúñez 山田",
            "company": "Ünïcode GmbH",
            "phone": "020 7946 0958",
            "bio": "日本語 ✓",
        },
    }
    attrs = _profile(message, template).attributes
    assert attrs["external_id"] == "42"
    assert attrs["organization"] == "Ünïcode GmbH"
    assert attrs["phone_number"] == "+442079460958"
    assert attrs["first_name"] == "Zoë" and attrs["last_name"] == "Ñúñez 山田"
    assert attrs["properties"] == {"bio": "日本語 ✓"}


def test_identify_unparseable_phone_dropped_with_warning_rest_sent() -> None:
    mapping = _profile({"type": "identify", "userId": "u1", "traits": {"email": "a@b.co", "phone": "12"}})
    assert "phone_number" not in mapping.attributes
    assert mapping.attributes["email"] == "a@b.co"
    assert mapping.warnings == ["phone_number: value dropped: not a valid phone number (default country US)"]
    assert "12" not in mapping.warnings[0].split("(")[0]  # no raw value (PII) in warnings


def test_identify_missing_identifiers_and_anonymous_only() -> None:
    mapping = _profile({"type": "identify", "anonymousId": "anon-1", "traits": {"plan": "free"}})
    assert not mapping.has_identifier
    assert mapping.attributes == {"properties": {"plan": "free"}}


def test_identify_nulls_ignored_by_default_and_cleared_when_asked() -> None:
    message = {"type": "identify", "userId": "u1", "traits": {"email": None, "firstName": None, "plan": None}}
    assert _profile(message).attributes == {"external_id": "u1"}
    from klaviyo_segment.mapping import builtin_spec

    spec = builtin_spec("identify-default")
    assert spec is not None
    spec["nulls"] = "clear"
    clearing = compile_template(spec, name="identify-clear")
    attrs = _profile(message, clearing).attributes
    assert attrs["first_name"] is None and attrs["properties"] == {"plan": None}
    assert "email" not in attrs  # identifiers are never cleared


def test_identify_ignores_track_messages() -> None:
    assert IDENTIFY.apply({"type": "track", "event": "X"}) is None


def test_track_default_maps_event_fields() -> None:
    message = {
        "type": "track",
        "event": "Video Played",
        "userId": "u1",
        "anonymousId": "a-1",
        "messageId": "msg-9",
        "timestamp": "2024-05-01T10:00:00.123Z",
        "context": {"traits": {"email": "Fan@Example.com", "phone": "+44 20 7946 0958"}},
        "properties": {"title": "Intro", "revenue": "9.99", "currency": "eur", "nothing": None},
    }
    (event,) = _events(message, TRACK)
    assert event.metric == "Video Played"
    assert event.time == "2024-05-01T10:00:00.123000+00:00"
    assert (event.value, event.value_currency, event.unique_id) == (9.99, "EUR", "msg-9")
    assert event.profile == {
        "external_id": "u1",
        "anonymous_id": "a-1",
        "email": "fan@example.com",
        "phone_number": "+442079460958",
    }
    assert event.properties == {"title": "Intro", "revenue": "9.99", "currency": "eur"}


def test_track_default_value_fallback_and_bad_date() -> None:
    message = {
        "type": "track",
        "event": "Paid",
        "anonymousId": "a",
        "timestamp": "yesterday",
        "properties": {"total": 12, "value": 3},
    }
    (event,) = _events(message, TRACK)
    assert event.value == 12 and event.time is None
    assert event.warnings == ["time: value dropped: not an ISO-8601 date-time"]
    assert event.has_identifier


def test_track_without_event_name_is_a_mapping_error() -> None:
    with pytest.raises(MappingError, match="no metric"):
        TRACK.apply({"type": "track", "userId": "u"})


@pytest.mark.parametrize(
    ("segment", "klaviyo"),
    [
        ("Product Viewed", "Viewed Product"),
        ("Product Added", "Added to Cart"),
        ("Checkout Started", "Started Checkout"),
        ("Order Refunded", "Refunded Order"),
        ("Order Cancelled", "Cancelled Order"),
    ],
)
def test_ecommerce_metric_names(segment: str, klaviyo: str) -> None:
    message = {
        "type": "track",
        "event": segment,
        "userId": "u1",
        "messageId": "m1",
        "properties": {"product_id": "p1", "price": 5, "order_id": "o1", "value": 5},
    }
    (event,) = _events(message, ECOM)
    assert event.metric == klaviyo and event.value == 5


def _order(message_id: str = "m-order") -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": "u1",
        "messageId": message_id,
        "timestamp": "2024-05-01T10:00:00+02:00",
        "context": {"traits": {"email": "buyer@example.com"}},
        "properties": {
            "order_id": "50314b8e",
            "total": 27.5,
            "revenue": 25.0,
            "currency": "USD",
            "products": [
                {"product_id": "507f1f77", "sku": "45790-32", "name": "Monopoly", "price": 19, "quantity": 1},
                {"sku": "46493-32", "name": "Uno", "price": 3, "quantity": 2},
                {"name": "Gift wrap", "price": "0.5"},
            ],
        },
    }


def test_ecommerce_order_completed_expands_products_deterministically() -> None:
    events = _events(_order(), ECOM)
    assert [e.metric for e in events] == ["Placed Order", "Ordered Product", "Ordered Product", "Ordered Product"]
    placed, *products = events
    assert placed.value == 27.5 and placed.unique_id == "50314b8e"  # total incl. shipping; one per order id
    assert [p.unique_id for p in products] == ["50314b8e:0", "50314b8e:1", "50314b8e:2"]  # per line position
    assert products[0].properties == {
        "order_id": "50314b8e",
        "total": 27.5,
        "revenue": 25.0,
        "currency": "USD",
        "product_id": "507f1f77",
        "sku": "45790-32",
        "name": "Monopoly",
        "price": 19,
        "quantity": 1,
    }  # order-level properties, then the line item's
    assert [p.value for p in products] == [19, 6, 0.5]  # price x quantity (no quantity: 1)
    assert all(p.profile == placed.profile == {"external_id": "u1", "email": "buyer@example.com"} for p in products)
    assert all(p.time == "2024-05-01T10:00:00+02:00" for p in products)
    # a retry of the same order (new messageId) yields the same product ids: Klaviyo dedupes them
    again = _events(_order("m-retry"), ECOM)
    assert [e.unique_id for e in again[1:]] == [p.unique_id for p in products]


def test_ecommerce_leaves_unknown_events_to_next_template() -> None:
    chain = TemplateChain([ECOM, TRACK])
    message = {"type": "track", "event": "Signed Up", "userId": "u"}
    assert ECOM.apply(message) is None
    result = chain.match(message)
    assert result is not None and result[0].name == "track-default"
    assert chain.map(_order())[0].metric == "Placed Order"  # type: ignore[index, union-attr]
    assert TemplateChain([ECOM]).map(message) is None
