"""Every body the builders make validates against the operation's request schema (declared objects closed)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest

from klaviyo_segment import constants
from klaviyo_segment.builders import klaviyo as b
from klaviyo_segment.builders.bulk_events import bulk_create_events_body
from klaviyo_segment.clients.operations import load_schema

FULL_PROFILE = {
    "email": "zoë.müller@example.com",
    "phone_number": "+14155552671",
    "external_id": "user-42",
    "first_name": "Zoë",
    "last_name": "Müller",
    "organization": "Ünïcode GmbH",
    "locale": "de-DE",
    "title": "CTO",
    "image": "https://example.com/z.png",
    "location": {
        "address1": "Straße 1",
        "city": "Berlin",
        "country": "DE",
        "zip": "10115",
        "latitude": 52.52,
        "longitude": "13.40",
        "timezone": "Europe/Berlin",
        "region": None,
        "ip": "127.0.0.1",
    },
    "properties": {"plan": "pro", "tags": ["a", "b"], "nested": {"x": 1}},
}


def validate(operation_id: str, body: dict[str, Any]) -> None:
    schema = load_schema(constants.KLAVIYO_REVISION)["operations"][operation_id]["request_schema"]
    jsonschema.validate(json.loads(json.dumps(body)), schema)


@pytest.mark.parametrize(
    "attrs",
    [
        FULL_PROFILE,
        {"email": "a@b.co"},
        {"external_id": "u1", "first_name": None, "last_name": None, "location": {"city": None}},  # nulls clear
        {"phone_number": "+447911123456", "properties": None},
    ],
)
def test_profile_import_bodies_validate(attrs: dict[str, Any]) -> None:
    body = b.profile_import_body(attrs)
    validate("create_or_update_profile", body)
    assert body["data"]["attributes"] == attrs


def test_profile_import_with_id_and_meta() -> None:
    body = b.profile_import_body(
        {"email": "a@b.co"}, profile_id="01ABC", meta={"patch_properties": {"append": {"tags": "x"}, "unset": ["old"]}}
    )
    validate("create_or_update_profile", body)
    assert body["data"]["id"] == "01ABC"


@pytest.mark.parametrize(
    "bad, needle",
    [
        ({"email": "a@b.co", "anonymous_id": "anon"}, "anonymous_id"),
        ({"email": "a@b.co", "traits": {}}, "traits"),
        ({"email": "a@b.co", "location": {"street": "x"}}, "street"),
        ({"first_name": "No identifier"}, "needs an id"),
    ],
)
def test_profile_builder_rejects_undeclared_fields(bad: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        b.profile_import_body(bad)


def test_bulk_profile_import_body() -> None:
    body = b.bulk_profile_import_body(
        [FULL_PROFILE, {"id": "01X", "first_name": "Ann"}, {"email": "c@d.io"}], list_ids=["LIST1"]
    )
    validate("bulk_import_profiles", body)
    assert body["data"]["relationships"]["lists"]["data"] == [{"type": "list", "id": "LIST1"}]
    no_list = b.bulk_profile_import_body([{"email": "c@d.io"}])
    validate("bulk_import_profiles", no_list)
    assert "relationships" not in no_list["data"]


EVENT = {
    "metric": "Order Completed",
    "profile": {"email": "a@b.co", "anonymous_id": "anon-1"},
    "properties": {"order_id": "o1", "items": [{"sku": "ü"}]},
    "time": datetime(2026, 7, 1, 12, tzinfo=UTC),
    "value": 19.99,
    "value_currency": "EUR",
    "unique_id": "m-1",
    "backfill": True,
    "service": "segment",
}


def test_create_event_body() -> None:
    body = b.create_event_body(EVENT)
    validate("create_event", body)
    assert body["data"]["attributes"]["time"] == "2026-07-01T12:00:00Z"
    minimal = b.create_event_body({"metric": "Viewed", "profile": {"anonymous_id": "anon"}})
    validate("create_event", minimal)
    assert minimal["data"]["attributes"]["properties"] == {}
    validate("create_event", b.create_event_body({"metric": "X", "profile_id": "01P", "properties": {}}))


@pytest.mark.parametrize(
    "bad, needle",
    [
        ({"profile": {"email": "a@b.co"}}, "metric"),
        ({"metric": "x" * 128, "profile": {"email": "a@b.co"}}, "128"),
        ({"metric": "X", "profile": {}}, "profile needs"),
        ({"metric": "X", "profile": {"email": "a@b.co"}, "context": {}}, "context"),
    ],
)
def test_event_builder_rejects(bad: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        b.create_event_body(bad)


def test_bulk_events_grouped_per_profile_and_deduplicated() -> None:
    events = [
        {"metric": "A", "profile": {"email": "a@b.co"}, "unique_id": "1"},
        {"metric": "A", "profile": {"email": "x@y.co"}, "unique_id": "1"},
        {"metric": "A", "profile": {"email": "A@B.co "}, "unique_id": "1"},  # same person, same id: dropped
        {"metric": "B", "profile": {"email": "a@b.co"}, "unique_id": "1"},  # other metric: kept
        {"metric": "A", "profile": {"email": "a@b.co"}},
    ]
    plan = bulk_create_events_body(events)
    validate("bulk_create_events", plan.body)
    assert plan.duplicates == {2: 0}
    assert plan.groups == [[0, 3, 4], [1]]
    entries = plan.body["data"]["attributes"]["events-bulk-create"]["data"]
    assert len(entries[0]["attributes"]["events"]["data"]) == 3


def test_list_and_merge_and_create_list_bodies() -> None:
    validate("add_profiles_to_list", b.list_relationships_body(["01A", "01B"]))
    validate("remove_profiles_from_list", b.list_relationships_body(["01A"]))
    validate("merge_profiles", b.merge_body("01DEST", "01SRC"))
    validate("create_list", b.create_list_body("Newsletter – Ünïcode"))
    validate("create_list", b.create_list_body("VIP", opt_in_process="single_opt_in"))
    with pytest.raises(ValueError):
        b.merge_body("01A", "01A")
    with pytest.raises(ValueError):
        b.list_relationships_body([])


def test_subscribe_bodies() -> None:
    body = b.subscribe_body(
        [{"email": "a@b.co", "phone_number": "+14155552671", "id": "01P"}, {"email": "ü@b.co"}],
        list_id="L1",
        custom_source="Segment",
        sms=True,
    )
    validate("bulk_subscribe_profiles", body)
    first = body["data"]["attributes"]["profiles"]["data"][0]["attributes"]["subscriptions"]
    assert set(first) == {"email", "sms"}
    hist = b.subscribe_body([{"email": "a@b.co", "consented_at": datetime(2024, 1, 1)}], historical_import=True)
    validate("bulk_subscribe_profiles", hist)
    assert (
        hist["data"]["attributes"]["profiles"]["data"][0]["attributes"]["subscriptions"]["email"]["marketing"][
            "consented_at"
        ]
        == "2024-01-01T00:00:00Z"
    )
    with pytest.raises(ValueError, match="historical_import"):
        b.subscribe_body([{"email": "a@b.co", "consented_at": "2024-01-01T00:00:00Z"}])
    with pytest.raises(ValueError, match="consented_at"):
        b.subscribe_body([{"email": "a@b.co"}], historical_import=True)
    with pytest.raises(ValueError):
        b.subscribe_body([{"phone_number": "+14155552671"}])  # sms not requested


def test_unsubscribe_bodies() -> None:
    body = b.unsubscribe_body([{"email": "a@b.co", "phone_number": "+14155552671"}], list_id="L1", sms=True)
    validate("bulk_unsubscribe_profiles", body)
    validate("bulk_unsubscribe_profiles", b.unsubscribe_body([{"email": "a@b.co"}]))
    with pytest.raises(ValueError, match="id"):
        b.unsubscribe_body([{"id": "01P", "email": "a@b.co"}])


@pytest.mark.parametrize("kwargs", [{"profile_id": "01P"}, {"email": "zoë@b.co"}, {"phone_number": "+14155552671"}])
def test_deletion_bodies(kwargs: dict[str, str]) -> None:
    validate("request_profile_deletion", b.deletion_body(**kwargs))


def test_deletion_needs_exactly_one_identifier() -> None:
    with pytest.raises(ValueError):
        b.deletion_body(email="a@b.co", phone_number="+14155552671")
    with pytest.raises(ValueError):
        b.deletion_body()


def test_filters_quote_and_escape() -> None:
    assert b.filter_any("email", ["a@b.co", "x@y.io"]) == 'any(email,["a@b.co","x@y.io"])'
    assert b.filter_equals("external_id", 'we"ird\\id') == r'equals(external_id,"we\"ird\\id")'
    params = b.get_profiles_params("phone_number", ["+14155552671"], additional_fields=["subscriptions"])
    assert params == {
        "filter": 'any(phone_number,["+14155552671"])',
        "page[size]": 100,
        "additional-fields[profile]": "subscriptions",
    }
    with pytest.raises(ValueError):
        b.get_profiles_params("anonymous_id", ["x"])


def test_events_filter_has_unquoted_datetimes() -> None:
    since = datetime(2026, 7, 1, tzinfo=UTC)
    until = datetime(2026, 7, 2, 2, 0, tzinfo=UTC)
    assert b.events_filter("Xj5uUn", since=since, until=until) == (
        'and(equals(metric_id,"Xj5uUn"),greater-or-equal(datetime,2026-07-01T00:00:00Z),'
        "less-than(datetime,2026-07-02T02:00:00Z))"
    )
    assert b.events_filter("M1") == 'equals(metric_id,"M1")'


def test_chunk_by_count_and_bytes() -> None:
    items = [{"p": "x" * 100}] * 25
    chunks, oversize = b.chunk(items, max_count=10, max_bytes=10_000, envelope_bytes=0)
    assert [len(c) for c in chunks] == [10, 10, 5] and oversize == []
    chunks, _ = b.chunk(items, max_count=1000, max_bytes=1200, envelope_bytes=0)
    assert all(sum(b.json_size(items[i]) + 1 for i in c) <= 1200 for c in chunks) and len(chunks) > 2
    assert sorted(i for c in chunks for i in c) == list(range(25))
    huge = [{"a": 1}, {"p": "y" * 5000}, {"b": 2}]
    chunks, oversize = b.chunk(huge, max_count=10, max_bytes=1000, envelope_bytes=0)
    assert oversize == [1] and chunks == [[0, 2]]


def test_schema_is_closed_so_validation_can_fail() -> None:
    body = b.profile_import_body({"email": "a@b.co"})
    body["data"]["attributes"]["anonymous_id"] = "x"
    with pytest.raises(jsonschema.ValidationError):
        validate("create_or_update_profile", body)
