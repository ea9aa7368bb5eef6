"""Generators: deterministic by seed, every message kind present, per-user order realistic."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from typing import Any

import phonenumbers
import pytest

from klaviyo_segment.devkit.sandbox.segment.generators import DEFAULT_MIX, SegmentGenerator, generate_stream


def _events(stream: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [m for m in stream if m.get("event") == name]


def test_same_seed_same_bytes_other_seed_differs() -> None:
    a, b, c = generate_stream(120, seed=42), generate_stream(120, seed=42), generate_stream(120, seed=43)
    assert json.dumps(a) == json.dumps(b) and json.dumps(a) != json.dumps(c)


@pytest.mark.parametrize("count", [0, 1, 29, 30, 31, 250])
def test_exact_count_and_common_fields(count: int) -> None:
    stream = generate_stream(count, seed=count)
    assert len(stream) == count
    assert len({m["messageId"] for m in stream}) == count
    stamps = [m["timestamp"] for m in stream]
    assert all(s.endswith("Z") and datetime.fromisoformat(s) for s in stamps) and stamps == sorted(stamps)
    assert all(m["type"] in ("identify", "track", "page", "group", "alias", "delete") for m in stream)


def test_small_stream_covers_every_kind() -> None:
    stream = generate_stream(30, seed=5)
    events = {m.get("event") for m in stream}
    assert {
        "Product Viewed",
        "Product Added",
        "Checkout Started",
        "Order Completed",
        "Order Refunded",
        "Audience Entered",
        "Audience Exited",
        "Signed Up",
    } <= events
    assert {"identify", "track", "page", "group", "alias", "delete"} == {m["type"] for m in stream}
    assert any(
        m["type"] == "identify" and m.get("context", {}).get("personas", {}).get("computation_class") == "audience"
        for m in stream
    )
    assert any("churn_risk_score" in m.get("traits", {}) for m in stream)


def test_identify_reserved_traits_in_both_spellings_with_local_phones() -> None:
    identifies = [m for m in generate_stream(300, seed=1) if m["type"] == "identify" and "address" in m["traits"]]
    camel = [m for m in identifies if "firstName" in m["traits"]]
    snake = [m for m in identifies if "first_name" in m["traits"]]
    assert camel and snake
    assert all("postalCode" in m["traits"]["address"] for m in camel)
    assert all("postal_code" in m["traits"]["address"] for m in snake)
    assert any(
        any(ord(ch) > 127 for ch in m["traits"].get("firstName", m["traits"].get("first_name", ""))) for m in identifies
    )
    assert {type(m["traits"]["company"]) for m in identifies} == {dict, str}
    assert all(m["traits"]["avatar"].startswith("https://") for m in identifies)
    national = [m for m in identifies if not m["traits"]["phone"].startswith("+")]
    assert national, "some phones must be in local format without a country code"
    for m in identifies:
        region = m["context"]["locale"].split("-")[1]
        assert phonenumbers.is_valid_number(phonenumbers.parse(m["traits"]["phone"], region))


def test_ecommerce_v2_properties() -> None:
    stream = generate_stream(300, seed=2)
    for order in _events(stream, "Order Completed"):
        p = order["properties"]
        assert len(p["products"]) >= 2 and {
            "order_id",
            "checkout_id",
            "subtotal",
            "total",
            "revenue",
            "currency",
            "shipping",
            "tax",
            "discount",
        } <= set(p)
        assert p["total"] == round(p["revenue"] + p["shipping"] + p["tax"], 2)
        assert all({"product_id", "sku", "name", "price", "quantity"} <= set(x) for x in p["products"])
        assert order["context"]["traits"]["email"]
    assert all("cart_id" in m["properties"] for m in _events(stream, "Product Added"))
    orders = {m["properties"]["order_id"] for m in _events(stream, "Order Completed")}
    assert {m["properties"]["order_id"] for m in _events(stream, "Order Refunded")} <= orders


def test_per_user_order_audiences_churn_deletes() -> None:
    stream = generate_stream(400, seed=3)
    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in stream:
        if m.get("userId"):
            by_user[m["userId"]].append(m)
    for user_id, msgs in by_user.items():
        tracks = [i for i, m in enumerate(msgs) if m["type"] == "track"]
        identifies = [i for i, m in enumerate(msgs) if m["type"] == "identify"]
        if tracks:
            assert identifies and identifies[0] < tracks[0], user_id
        deletes = [i for i, m in enumerate(msgs) if m["type"] == "delete"]
        assert deletes in ([], [len(msgs) - 1])
        membership: dict[str, list[bool]] = defaultdict(list)
        for m in msgs:
            personas = m.get("context", {}).get("personas", {})
            if personas.get("computation_class") != "audience":
                continue
            key = m["properties"]["audience_key"] if m["type"] == "track" else personas["computation_key"]
            value = m["properties"][key] if m["type"] == "track" else m["traits"][key]
            if m["type"] == "track":
                assert m["event"] == ("Audience Entered" if value else "Audience Exited")
            membership[key].append(value)
        for key, values in membership.items():
            assert values[0] is True and values == [True, False][: len(values)], (user_id, key)
    churn = [m for m in stream if "churn_risk_score" in m.get("traits", {})]
    scores: dict[str, list[float]] = defaultdict(list)
    for m in churn:
        scores[m["userId"]].append(m["traits"]["churn_risk_score"])
    assert any(s[0] < 0.7 < s[1] and s[2] < 0.7 for s in scores.values() if len(s) == 3)
    churn_audience = [
        m for m in stream if m.get("context", {}).get("personas", {}).get("computation_key") == "churn_risk_users"
    ]
    assert {m["type"] for m in churn_audience} == {"track", "identify"}
    for d in (m for m in stream if m["type"] == "delete"):
        assert set(d) == {"type", "userId", "messageId", "timestamp"}
    signups = _events(stream, "Signed Up")
    assert signups and all({"email", "phone"} <= set(m["context"]["traits"]) for m in signups)
    aliases = [m for m in stream if m["type"] == "alias"]
    assert aliases and all(m["previousId"] and m["userId"] for m in aliases)


def test_mix_controls_scenarios() -> None:
    only_deletes = generate_stream(20, seed=0, mix={"delete": 1})
    assert {m["type"] for m in only_deletes} == {"identify", "delete"}
    with pytest.raises(ValueError):
        generate_stream(10, mix={"nope": 1})
    with pytest.raises(ValueError):
        generate_stream(10, mix={k: 0 for k in DEFAULT_MIX})


def test_individual_generators_are_usable_alone() -> None:
    gen = SegmentGenerator(seed=9)
    user = gen.user()
    entered = gen.audience_track(user, "vip_customers", True)
    assert entered["event"] == "Audience Entered" and entered["properties"]["audience_key"] == "vip_customers"
    assert entered["context"]["personas"]["computation_key"] == "vip_customers"
    exited = gen.audience_identify(user, "vip_customers", False)
    assert exited["traits"]["vip_customers"] is False
    assert gen.group(user)["groupId"] and gen.page(user)["properties"]["url"].startswith("https://")
