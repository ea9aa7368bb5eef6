"""Signature checks: the JS serialisation the Segment signature depends on, and Klaviyo's replay defences."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klaviyo_segment.devkit.sandbox.klaviyo.webhooks import build_delivery
from klaviyo_segment.devkit.sandbox.segment.simulator import js_json_stringify, sign
from klaviyo_segment.ingress.signatures import (
    SignatureError,
    js_stringify,
    segment_signature,
    verify_klaviyo,
    verify_segment,
)

SECRET = "s3cret"

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**18), 10**18)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.0, "1"),
        (1e-7, "1e-7"),
        (1e21, "1e+21"),
        (1e16, "10000000000000000"),
        (0.000001, "0.000001"),
        (-2.5, "-2.5"),
        ("é😀\u2028", '"é😀\u2028"'),
        ({"b": 1, "a": [True, None]}, '{"b":1,"a":[true,null]}'),
    ],
)
def test_js_stringify_matches_javascript(value: object, expected: str) -> None:
    assert js_stringify(value) == expected


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_js_stringify_agrees_with_the_independent_simulator(value: object) -> None:
    assert js_stringify(value) == js_json_stringify(value)


def test_single_event_signature_verifies_and_forgeries_fail() -> None:
    event = {"type": "track", "event": "Ordér ✓", "messageId": "m1", "properties": {"price": 10.0}}
    verify_segment(SECRET, event, sign(SECRET, event))
    with pytest.raises(SignatureError, match="missing"):
        verify_segment(SECRET, event, None)
    with pytest.raises(SignatureError, match="does not match"):
        verify_segment(SECRET, event, sign("other", event))
    tampered = dict(event, event="Order")
    with pytest.raises(SignatureError):
        verify_segment(SECRET, tampered, sign(SECRET, event))


def test_batch_signature_is_of_the_first_event_serialised_the_js_way() -> None:
    batch = [
        {"type": "identify", "userId": "ü-1", "traits": {"score": 1.0, "name": "Zoë 😀"}},
        {"type": "track", "event": "X"},
    ]
    raw = json.loads(js_json_stringify(batch))  # what the receiver parses from the wire
    verify_segment(SECRET, raw, sign(SECRET, batch[0]))
    assert segment_signature(SECRET, raw[0]) == sign(SECRET, batch[0])
    with pytest.raises(SignatureError):
        verify_segment(SECRET, raw, sign(SECRET, batch[1]))


def _headers(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _delivery(now: datetime | None = None, webhook_id: str = "WH1") -> tuple[bytes, dict[str, str]]:
    record = {"external_id": "ev1", "payload": {"type": "event", "id": "ev1"}, "topic": "event:klaviyo.opened_email"}
    body, headers = build_delivery([record], secret=SECRET, webhook_id=webhook_id, account_id="A1", now=now)
    return body, _headers(headers)


def test_klaviyo_delivery_verifies() -> None:
    body, headers = _delivery()
    verify_klaviyo(SECRET, body, json.loads(body), headers)


def test_klaviyo_forged_missing_replayed_and_mismatched_id_are_rejected() -> None:
    body, headers = _delivery()
    with pytest.raises(SignatureError, match="does not match"):
        verify_klaviyo("wrong", body, json.loads(body), headers)
    with pytest.raises(SignatureError, match="missing"):
        verify_klaviyo(SECRET, body, json.loads(body), {k: v for k, v in headers.items() if k != "klaviyo-signature"})
    tampered = body.replace(b"ev1", b"ev2")
    with pytest.raises(SignatureError, match="does not match"):
        verify_klaviyo(SECRET, tampered, json.loads(tampered), headers)
    old_body, old_headers = _delivery(now=datetime.now(UTC) - timedelta(minutes=6))
    with pytest.raises(SignatureError, match="window"):
        verify_klaviyo(SECRET, old_body, json.loads(old_body), old_headers)
    future_body, future_headers = _delivery(now=datetime.now(UTC) + timedelta(minutes=6))
    with pytest.raises(SignatureError, match="window"):
        verify_klaviyo(SECRET, future_body, json.loads(future_body), future_headers)
    with pytest.raises(SignatureError, match="webhook_id"):
        verify_klaviyo(SECRET, body, json.loads(body), dict(headers, **{"klaviyo-webhook-id": "WH2"}))


def test_klaviyo_window_uses_the_signed_meta_timestamp_not_the_header_clock() -> None:
    """A wrong header clock alone must not reject (the header is only part of the signed material)."""
    body, headers = _delivery()
    skewed = dict(headers, **{"klaviyo-timestamp": "Mon, 01 Jan 2001 00:00:00 GMT"})
    from klaviyo_segment.devkit.sandbox.klaviyo.webhooks import sign as k_sign

    skewed["klaviyo-signature"] = k_sign(SECRET, body, skewed["klaviyo-timestamp"])
    verify_klaviyo(SECRET, body, json.loads(body), skewed)
