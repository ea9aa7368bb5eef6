"""Issue 14 sections C and D: e-commerce semantics, migration naming, loop guard, local validation, list ids.

Each test starts from what a user sends (a Segment message) and checks what we would send to Klaviyo, through
``klaviyo_segment.preview`` (the flows' real code against a recording transport) or the sandbox.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from klaviyo_segment.builders.segment import build_track
from klaviyo_segment.config import AppConfig
from klaviyo_segment.errors import ConfigError
from klaviyo_segment.preview import preview_flow

NOW = datetime.now(UTC).replace(microsecond=0)


def _run(
    flow: str, messages: list[dict[str, Any]], config: dict[str, Any] | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    return asyncio.run(preview_flow(flow, messages, config or {}))


def _events(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every event attribute object sent in bulk create jobs, with ``metric`` flattened to its name."""
    out = []
    for line in lines:
        if line["method"] == "POST" and line["path"] == "/api/event-bulk-create-jobs":
            for entry in line["body"]["data"]["attributes"]["events-bulk-create"]["data"]:
                for event in entry["attributes"]["events"]["data"]:
                    attrs = dict(event["attributes"])
                    attrs["metric"] = attrs["metric"]["data"]["attributes"]["name"]
                    out.append(attrs)
    return out


def _order(message_id: str, event: str = "Order Completed", **props: Any) -> dict[str, Any]:
    properties = {
        "order_id": "o-1",
        "total": 43.0,
        "revenue": 38.0,
        "shipping": 5.0,
        "currency": "USD",
        "coupon": "SUMMER",
        "affiliation": "Web shop",
        "products": [
            {"product_id": "tee", "sku": "tee-S", "size": "S", "price": 19, "quantity": 1},
            {"product_id": "tee", "sku": "tee-M", "size": "M", "price": 9.5, "quantity": 2},
        ],
    }
    properties.update(props)
    return {
        "type": "track",
        "event": event,
        "userId": "u1",
        "messageId": message_id,
        "timestamp": NOW.isoformat(),
        "context": {"traits": {"email": "buyer@example.com"}},
        "properties": properties,
    }


# -- item 10 -------------------------------------------------------------------------------------------------
def test_same_product_in_two_sizes_is_two_ordered_products_stable_across_retries() -> None:
    lines, summary = _run("forward-track", [_order("m-1")])
    products = [e for e in _events(lines) if e["metric"] == "Ordered Product"]
    assert [p["properties"]["size"] for p in products] == ["S", "M"]
    assert len({p["unique_id"] for p in products}) == 2
    assert summary["sent"] == 1
    retry, _ = _run("forward-track", [_order("m-retry")])  # Segment retried with a new messageId
    assert [e["unique_id"] for e in _events(retry) if e["metric"] == "Ordered Product"] == [
        p["unique_id"] for p in products
    ]


# -- item 11 -------------------------------------------------------------------------------------------------
def test_placed_order_unique_id_is_the_order_id_refunds_stay_per_message() -> None:
    lines, _ = _run("forward-track", [_order("m-1"), _order("m-2")])
    placed = [e for e in _events(lines) if e["metric"] == "Placed Order"]
    assert [p["unique_id"] for p in placed] == ["o-1"]  # second copy collapses into the first: revenue once
    refunds = [_order(f"r-{i}", event="Order Refunded", total=5.0, products=[]) for i in (1, 2)]
    lines, _ = _run("forward-track", refunds)
    assert [e["unique_id"] for e in _events(lines) if e["metric"] == "Refunded Order"] == ["r-1", "r-2"]


# -- item 12 -------------------------------------------------------------------------------------------------
def test_order_values_and_order_level_properties_on_products() -> None:
    lines, _ = _run("forward-track", [_order("m-1")])
    events = _events(lines)
    placed = next(e for e in events if e["metric"] == "Placed Order")
    assert placed["value"] == 43.0  # total (incl. shipping) wins over revenue
    products = [e for e in events if e["metric"] == "Ordered Product"]
    assert [p["value"] for p in products] == [19, 19.0]  # price x quantity
    for product in products:
        assert {k: product["properties"].get(k) for k in ("currency", "coupon", "affiliation", "order_id")} == {
            "currency": "USD",
            "coupon": "SUMMER",
            "affiliation": "Web shop",
            "order_id": "o-1",
        }
        assert "products" not in product["properties"]
    no_total, _ = _run("forward-track", [_order("m-3", total=None)])
    assert next(e for e in _events(no_total) if e["metric"] == "Placed Order")["value"] == 38.0  # then revenue


def test_generic_track_value_is_not_monetary() -> None:
    points = {
        "type": "track",
        "event": "Points Earned",
        "userId": "u1",
        "messageId": "p-1",
        "timestamp": NOW.isoformat(),
        "properties": {"value": 50},
    }
    lines, _ = _run("forward-track", [points])
    (event,) = _events(lines)
    assert "value" not in event and event["properties"] == {"value": 50}


# -- item 13 -------------------------------------------------------------------------------------------------
def test_event_names_segment_keeps_segment_names() -> None:
    config = {"track": {"event_names": "segment"}}
    viewed = {
        "type": "track",
        "event": "Product Viewed",
        "userId": "u1",
        "messageId": "v-1",
        "timestamp": NOW.isoformat(),
        "properties": {"product_id": "tee", "price": 19},
    }
    lines, _ = _run("forward-track", [_order("m-1"), viewed], config)
    names = [e["metric"] for e in _events(lines)]
    assert names == ["Order Completed", "Ordered Product", "Ordered Product", "Product Viewed"]
    assert _events(lines)[0]["unique_id"] == "o-1"  # the e-commerce semantics stay
    assert AppConfig.from_document({}).track.event_names == "klaviyo"
    with pytest.raises(ConfigError, match="event_names"):
        AppConfig.from_document({"track": {"event_names": "legacy"}})


@pytest.mark.parametrize(("names", "metric"), [("klaviyo", "Placed Order"), ("segment", "Completed Order")])
def test_v1_completed_order_is_an_order_either_way(names: str, metric: str) -> None:
    lines, _ = _run("forward-track", [_order("m-1", event="Completed Order")], {"track": {"event_names": names}})
    events = _events(lines)
    assert [e["metric"] for e in events] == [metric, "Ordered Product", "Ordered Product"]
    assert events[0]["unique_id"] == "o-1" and events[0]["value"] == 43.0


# -- item 14 -------------------------------------------------------------------------------------------------
def test_loop_guard_disables_both_klaviyo_destinations() -> None:
    message = build_track("Opened Email", user_id="u1", properties={})
    assert message["integrations"] == {"Klaviyo": False, "Klaviyo (Actions)": False}


# -- item 15 -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"timestamp": "1989-12-31T23:59:59Z"}, "before 1990"),
        ({"timestamp": (NOW + timedelta(days=400)).isoformat()}, "more than a year"),
        ({"context": {"traits": {"email": "user@domain.c"}}}, "not a valid email"),
        ({"event": "E" * 128}, "must be less than 128 characters"),
    ],
)
def test_what_klaviyo_rejects_is_failed_locally_not_sent(change: dict[str, Any], reason: str) -> None:
    message = {
        "type": "track",
        "event": "Signed In",
        "userId": "u1",
        "messageId": "bad",
        "timestamp": NOW.isoformat(),
        "properties": {},
        **change,
    }
    lines, summary = _run("forward-track", [message])
    assert not _events(lines), "nothing Klaviyo would reject may be sent"
    (out,) = summary["outcomes"]
    assert out["status"] == "failed" and reason in out["reason"]
    assert "domain.c" not in out["reason"]  # no PII in reasons


def test_malformed_email_on_identify_is_failed_locally() -> None:
    identify = {"type": "identify", "userId": "u1", "messageId": "i-1", "traits": {"email": "user@domain.c"}}
    lines, summary = _run("sync-identify", [identify])
    assert not [line for line in lines if line["method"] == "POST"]
    assert summary["outcomes"][0]["status"] == "failed"
    assert "not a valid email" in summary["outcomes"][0]["reason"]


# -- item 16 -------------------------------------------------------------------------------------------------
def _list_adds(lines: list[dict[str, Any]]) -> list[str]:
    return [line["path"] for line in lines if line["method"] == "POST" and line["path"].startswith("/api/lists/")]


def test_identify_list_id_and_classic_override_add_to_list() -> None:
    base = {
        "type": "identify",
        "userId": "u1",
        "messageId": "i-1",
        "traits": {"email": "a@example.com", "firstName": "Ann", "list_id": "L1"},
    }
    lines, summary = _run("sync-identify", [base])
    assert _list_adds(lines) == ["/api/lists/L1/relationships/profiles"]
    upsert = next(line for line in lines if line["path"] == "/api/profile-import")
    assert "list_id" not in upsert["body"]["data"]["attributes"].get("properties", {})
    assert summary["sent"] == 1
    override = {**base, "messageId": "i-2", "integrations": {"Klaviyo": {"listId": "L2"}}}
    lines, _ = _run("sync-identify", [override])
    assert _list_adds(lines) == ["/api/lists/L2/relationships/profiles"]
    plain = {**base, "messageId": "i-3", "traits": {"email": "a@example.com"}}
    lines, _ = _run("sync-identify", [plain])
    assert _list_adds(lines) == []


async def test_audience_created_profile_keeps_context_traits(flow_env: Any) -> None:
    from klaviyo_segment.flows.sync_audiences import sync_audiences

    created = flow_env.http.post("/api/lists", json={"data": {"type": "list", "attributes": {"name": "VIP"}}})
    vip = created.json()["data"]["id"]
    message = {
        "type": "track",
        "event": "Audience Entered",
        "userId": "u-new",
        "messageId": "a-1",
        "timestamp": NOW.isoformat(),
        "properties": {"audience_key": "vip", "email": "new@example.com"},
        "context": {
            "traits": {
                "email": "new@example.com",
                "firstName": "Nia",
                "lastName": "Okafor",
                "address": {"city": "Lagos", "country": "NG"},
                "plan": "gold",
            },
            "personas": {"computation_class": "audience", "computation_key": "vip"},
        },
    }
    result = await sync_audiences(messages=[message], config={"audiences": {"vip": vip}})
    assert result["sent"] == 1
    profile = flow_env.profile(email="new@example.com")
    assert profile is not None
    attrs = profile["attributes"]
    assert (attrs.get("first_name"), attrs.get("last_name"), attrs.get("external_id")) == ("Nia", "Okafor", "u-new")
    assert (attrs.get("location") or {}).get("city") == "Lagos"
    assert (attrs.get("properties") or {}).get("plan") == "gold"
