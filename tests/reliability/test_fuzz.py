"""Property-based fuzzing: hostile input must end as a reasoned rejection, never a crash, and never take the
well-formed rest of its batch down with it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from klaviyo_segment.errors import ConfigError
from klaviyo_segment.ingress.receiver import Rejected, klaviyo_entries, segment_entries
from klaviyo_segment.ingress.signatures import SignatureError, klaviyo_signature, verify_klaviyo, verify_segment
from klaviyo_segment.mapping import MappingError, compile_template
from klaviyo_segment.preview import preview_flow

FUZZ = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
NOW = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")

json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63), st.floats(allow_nan=False), st.text(max_size=30)
)
json_value = st.recursive(
    json_leaf,
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=10), kids, max_size=4)),
    max_leaves=12,
)
maybe_text = st.one_of(st.none(), st.text(max_size=40), st.integers(), st.sampled_from(["", " ", "a@b.co"]))
timestamps = st.one_of(st.just(NOW), st.none(), st.text(max_size=25), st.integers(), st.just("2026-13-45T99:00Z"))
traits = st.dictionaries(
    st.sampled_from(["email", "phone", "firstName", "address", "plan", "createdAt", "company", "birthday", "x"]),
    st.one_of(json_value, st.emails(), st.sampled_from(["+1 415 555 0132", "555", "+99"])),
    max_size=6,
)
segment_message = st.one_of(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["identify", "track", "page", "screen", "group", "alias", "delete", "bogus"]),
            "messageId": maybe_text,
            "userId": maybe_text,
            "anonymousId": maybe_text,
            "timestamp": timestamps,
        },
        optional={
            "traits": st.one_of(traits, json_value),
            "properties": st.one_of(traits, json_value),
            "event": maybe_text,
            "previousId": maybe_text,
            "integrations": json_value,
            "context": json_value,
        },
    ),
    json_value,
)

GOOD = {
    "sync-identify": {
        "type": "identify",
        "messageId": "fuzz-good",
        "userId": "fuzz-user",
        "timestamp": NOW,
        "traits": {"email": "good@example.com", "firstName": "Good"},
    },
    "forward-track": {
        "type": "track",
        "messageId": "fuzz-good",
        "userId": "fuzz-user",
        "timestamp": NOW,
        "event": "Fuzz Passed",
        "properties": {"n": 1},
    },
}


def _check(summary: dict[str, Any], sent: int) -> None:
    outcomes = summary["outcomes"]
    assert summary["received"] == sent == len(outcomes)
    for o in outcomes:
        if o["status"] in ("failed", "skipped"):
            assert o.get("reason"), o  # every rejection names its reason
    good = [o for o in outcomes if o["message_id"] == "fuzz-good"]
    assert good and good[0]["status"] == "sent", good


@FUZZ
@given(messages=st.lists(segment_message, max_size=6), flow=st.sampled_from(sorted(GOOD)))
async def test_segment_messages_through_flows_in_preview(messages: list[Any], flow: str) -> None:
    for m in messages:  # the good message's id must stay unique, or it would rightly be a duplicate
        if isinstance(m, dict) and m.get("messageId") == "fuzz-good":
            m["messageId"] = "other"
    batch = [*messages, GOOD[flow]]
    _lines, summary = await preview_flow(flow, batch, {})
    _check(summary, len(batch))


@FUZZ
@given(payload=json_value)
def test_segment_delivery_splitting(payload: Any) -> None:
    try:
        entries, dead = segment_entries(payload, lambda m: ["sync-identify"])
    except Rejected as exc:
        assert exc.status == 400 and exc.reason
        return
    # every element ends as exactly one entry or one dead letter with a reason; a single event is never dead
    assert len(entries) + len(dead) == (len(payload) if isinstance(payload, list) else 1)
    assert all(d.reason for d in dead) and (isinstance(payload, list) or not dead)


@FUZZ
@given(payload=json_value, signature=st.one_of(st.none(), st.text(max_size=70)))
def test_segment_signature_rejects_forgeries(payload: Any, signature: str | None) -> None:
    try:
        verify_segment("s3cret", payload, signature)
    except SignatureError as exc:
        assert str(exc)
    else:  # only a correct HMAC may pass; random text never is one
        raise AssertionError(f"forged signature {signature!r} accepted")


klaviyo_record = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "external_id": maybe_text,
            "email": maybe_text,
            "event": maybe_text,
            "timestamp": timestamps,
            "properties": json_value,
        },
    ),
    json_value,
)


@FUZZ
@given(
    data=st.one_of(st.lists(klaviyo_record, max_size=5), json_value),
    meta=json_value,
    tamper=st.booleans(),
    when=st.one_of(st.just("now"), st.text(max_size=25), st.integers()),
)
def test_klaviyo_deliveries_verify_and_split(data: Any, meta: Any, tamper: bool, when: Any) -> None:
    stamp = NOW if when == "now" else when
    payload = {"data": data, "meta": {**meta, "timestamp": stamp} if isinstance(meta, dict) else meta}
    body = json.dumps(payload).encode()
    sig = klaviyo_signature("whsec_x", body, str(stamp))
    headers = {"Klaviyo-Signature": sig + ("0" if tamper else ""), "Klaviyo-Timestamp": str(stamp)}
    try:
        verify_klaviyo("whsec_x", body if not tamper else body + b" ", payload, headers)
    except SignatureError as exc:
        assert str(exc)
    else:
        assert not tamper, "a tampered delivery was accepted"
    try:
        entries = klaviyo_entries(payload)
    except Rejected as exc:
        assert exc.status == 400 and exc.reason
        return
    assert isinstance(data, list) and len(entries) == len(data)


field_spec = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["$.userId", "$.traits.email", "$.event", "$.x[*].y", "$..bad", "$.properties.total"]),
    st.fixed_dictionaries(
        {},
        optional={
            "path": st.text(max_size=15),
            "template": st.text(max_size=20),
            "literal": json_value,
            "default": json_value,
            "transform": st.lists(
                st.one_of(
                    st.sampled_from(["trim", "lowercase", "bool", "iso8601", "e164", "number", "nope"]), json_value
                ),
                max_size=3,
            ),
        },
    ),
    json_value,
)
template_spec = st.fixed_dictionaries(
    {"name": st.text(max_size=10), "kind": st.sampled_from(["identify", "track", "page", "other"])},
    optional={
        "fields": st.dictionaries(
            st.sampled_from(
                [
                    "email",
                    "external_id",
                    "metric",
                    "properties.a",
                    "location.x",
                    "title",
                    "phone_number",
                    "value",
                    "unique_id",
                    "zzz",
                ]
            ),
            field_spec,
            max_size=5,
        ),
        "match": json_value,
        "properties": json_value,
    },
)


@FUZZ
@given(spec=template_spec, messages=st.lists(segment_message, max_size=4))
@example(spec={"name": "\x00", "kind": "identify"}, messages=[])  # found by this test: ValueError from codegen
def test_mapping_templates_compile_cleanly_or_refuse(spec: dict[str, Any], messages: list[Any]) -> None:
    try:
        template = compile_template(spec)
    except ConfigError as exc:
        assert str(exc)
        return
    for message in messages:
        if not isinstance(message, dict):
            continue
        try:
            template.apply(message)
        except MappingError as exc:
            assert str(exc)
