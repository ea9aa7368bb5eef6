"""Writes tests/compat/cases/*.json: the public test cases of Segment's Klaviyo (Actions) destination, as data.

Source: github.com/segmentio/action-destinations, packages/destination-actions/src/destinations/klaviyo,
commit 970a17ee8d064501db7ae555f4d90f17befadfc0 (each action's ``__tests__/index.test.ts`` and snapshots).
Only the data is transcribed (the Segment event, the action mapping, the request Segment's test expects);
none of their code. Segment's ``createTestEvent`` fills defaults (anonymousId, context, userId, ...); they are
spelled out here with fixed messageId/timestamps so every case is reproducible.

Each case also carries ``ours``: the flow and config of this project that express the same mapping, plus
``verdict`` (agree | differ_on_purpose | differ_by_revision | unsupported | defect) and ``differences`` (dotted
field -> our documented value, ``"<absent>"`` when we do not send it). Run by hand (never by tests):
``python scripts/transcribe_segment_compat.py``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "tests" / "compat" / "cases"
SOURCE = "segmentio/action-destinations@970a17ee8d064501db7ae555f4d90f17befadfc0"
ABSENT = "<absent>"


def test_event(**fields: Any) -> dict[str, Any]:
    """Segment's createTestEvent defaults, with a fixed messageId and clock."""
    base: dict[str, Any] = {
        "anonymousId": "anonId1234",
        "context": {
            "ip": "8.8.8.8",
            "library": {"name": "analytics.js", "version": "2.11.1"},
            "locale": "en-US",
            "location": {
                "city": "San Francisco",
                "country": "United States",
                "latitude": 40.2964197,
                "longitude": -76.9411617,
                "speed": 0,
            },
            "page": {
                "path": "/academy/",
                "referrer": "",
                "search": "",
                "title": "Analytics Academy",
                "url": "https://segment.com/academy/",
            },
            "timezone": "Europe/Amsterdam",
            "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 9_1 like Mac OS X)",
        },
        "event": "Test Event",
        "messageId": "segment-test-message-id",
        "properties": {},
        "receivedAt": "2026-07-20T10:00:00.000Z",
        "sentAt": "2026-07-20T10:00:00.000Z",
        "timestamp": "2026-07-20T10:00:00.000Z",
        "traits": {},
        "type": "track",
        "userId": "user1234",
    }
    base.update(fields)
    return base


def profile_body(attributes: dict[str, Any], pid: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"type": "profile"}
    if pid:
        data["id"] = pid
    data["attributes"] = attributes
    return {"data": data}


def event_body(
    metric: str,
    profile: dict[str, Any],
    properties: dict[str, Any],
    value: Any = None,
    time: str | None = None,
    unique_id: str | None = None,
) -> dict[str, Any]:
    attrs: dict[str, Any] = {"properties": properties}
    if time is not None:
        attrs["time"] = time
    if value is not None:
        attrs["value"] = value
    if unique_id is not None:
        attrs["unique_id"] = unique_id
    attrs["metric"] = {"data": {"type": "metric", "attributes": {"name": metric}}}
    attrs["profile"] = {"data": {"type": "profile", "attributes": profile}}
    return {"data": {"type": "event", "attributes": attrs}}


def lit(value: Any) -> dict[str, Any]:
    return {"literal": value}


def track_template(
    metric: str,
    profile: dict[str, Any],
    properties: dict[str, Any],
    value: Any = None,
    unique_id: str | None = None,
    time: Any = "$.timestamp",
) -> dict[str, Any]:
    """Our custom track template equal to a Segment trackEvent/orderCompleted mapping of literals."""
    fields: dict[str, Any] = {"metric": lit(metric)}
    for key, val in profile.items():
        if key != "country_code":
            fields[f"profile.{key}"] = lit(val)
    for key, val in properties.items():
        fields[f"properties.{key}"] = lit(val)
    if value is not None:
        fields["value"] = lit(value)
    if unique_id is not None:
        fields["unique_id"] = lit(unique_id)
    if time is not None:
        fields["time"] = time
    return {"kind": "track", "fields": fields}


def track_config(template: dict[str, Any], **extra: Any) -> dict[str, Any]:
    cfg = {"custom_templates": {"segment-compat": template}, "templates": {"track": ["segment-compat"]}}
    cfg.update(extra)
    return cfg


def case(
    cid: str,
    test: str,
    event: dict[str, Any],
    mapping: Any,
    verdict: str,
    why: str,
    *,
    requests: list[dict[str, Any]] | None = None,
    error: str | None = None,
    flow: str | None = None,
    config: dict[str, Any] | None = None,
    message: dict[str, Any] | None = None,
    differences: dict[str, Any] | None = None,
    issue_item: int | None = None,
    defaults: bool = False,
    batch_events: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": cid,
        "segment_test": test,
        "segment": {"event": event, "mapping": mapping, "use_default_mappings": defaults},
    }
    if batch_events is not None:
        out["segment"]["batch_events"] = batch_events
    if requests is not None:
        out["segment"]["requests"] = requests
    if error is not None:
        out["segment"]["error"] = error
    out["verdict"] = verdict
    out["why"] = why
    if issue_item is not None:
        out["issue_item"] = issue_item
    if flow:
        out["ours"] = {
            "flow": flow,
            "config": config or {},
            "messages": [message or event],
            "differences": differences or {},
        }
    return out


def post(path: str, body: Any) -> dict[str, Any]:
    return {"method": "POST", "path": path, "body": body}


KV = {"key": "value"}
T22 = "2022-01-01T00:00:00.000Z"
PHONE_IN = (
    "issue 14 item 1: national-format phone numbers use one default country (phone_default_country); "
    "Segment's mapping carries a per-message country_code"
)


def track_cases(action: str) -> list[dict[str, Any]]:
    """trackEvent/__tests__/index.test.ts (and the shared cases of orderCompleted)."""
    name = "Track Event" if action == "trackEvent" else "Order Completed"
    out: list[dict[str, Any]] = []
    ev = test_event(type="track", timestamp=T22)
    metric = "event_name" if action == "trackEvent" else "Order Completed"

    out.append(
        case(
            f"{action}/no-identifiers",
            f"{name} > should throw error if no profile identifiers are provided",
            test_event(type="track"),
            {"profile": {}, "metric_name": "fake-name", "properties": {}},
            "agree",
            "no identifier: Segment throws, we skip the message (no request either way)",
            error="IntegrationError",
            flow="forward-track",
            config=track_config(track_template("fake-name", {}, {})),
            message=test_event(type="track", userId=None, anonymousId=None),
        )
    )
    out.append(
        case(
            f"{action}/external-id-too-long",
            f"{name} > should throw error if external_id exceeds 255 characters",
            ev,
            {
                "profile": {"external_id": "a" * 256},
                "metric_name": metric,
                "properties": {} if action == "trackEvent" else KV,
            },
            "unsupported",
            "we do not check external_id length; Klaviyo itself answers 400 for it",
            error="Length of external_id must be no more than 255 characters.",
        )
    )
    bad_phone = {"email": "test@example.com", "phone_number": "invalid-phone-number", "country_code": "US"}
    out.append(
        case(
            f"{action}/invalid-phone",
            f"{name} > should throw an error for invalid phone number format",
            ev,
            {"profile": bad_phone, "metric_name": "Order Completed", "properties": KV, "value": 10},
            "differ_on_purpose",
            "Segment rejects the whole event; we drop only the bad phone with a warning "
            "(docs/mapping.md) and still send the event with the email",
            error="invalid-phone-number is not a valid phone number and cannot be converted to E.164 format.",
            flow="forward-track",
            config=track_config(track_template("Order Completed", bad_phone, KV, 10)),
            differences={"__expect_body__": event_body("Order Completed", {"email": "test@example.com"}, KV, 10, T22)},
        )
    )
    prof_in = {"phone_number": "8448309222", "country_code": "IN"}
    out.append(
        case(
            f"{action}/phone-e164-country-code",
            f"{name} > should convert a phone number to E.164 format if country code is provided",
            ev,
            {
                "profile": prof_in,
                "metric_name": "Order Completed",
                "properties": KV,
                "value": 10,
                "unique_id": "text-example-xyz",
            },
            "defect",
            PHONE_IN,
            issue_item=1,
            defaults=True,
            requests=[
                post(
                    "/events/",
                    event_body("Order Completed", {"phone_number": "+918448309222"}, KV, 10, T22, "text-example-xyz"),
                )
            ],
            flow="forward-track",
            config=track_config(track_template("Order Completed", prof_in, KV, 10, "text-example-xyz")),
        )
    )
    for label, prof in (
        ("external Id", {"external_id": "3xt3rnal1d"}),
        ("anonymous Id", {"anonymous_id": "an0nym0u51d"}),
        ("proper parameters", {"email": "test@example.com", "phone_number": "+14155552671"}),
    ):
        title = (
            f"should successfully track event with {label}"
            if label != "proper parameters"
            else "should successfully track event if proper parameters are provided"
        )
        slug = label.lower().replace(" ", "-")
        if action == "trackEvent":
            mapping = {
                "profile": prof,
                "metric_name": "event_name",
                "properties": KV,
                "value": 10,
                "unique_id": "text-example-xyz",
            }
            body = event_body("event_name", prof, KV, 10, T22, "text-example-xyz")
            tpl = track_template("event_name", prof, KV, 10, "text-example-xyz")
            verdict, why, diffs = "agree", "same event body", {}
        else:
            mapping = {
                "profile": prof,
                "metric_name": "Order Completed",
                "properties": KV,
                "value": 10,
                "event_name": "Order Completed",
            }
            # orderCompleted sends no time and no unique_id (the action's defaults are off without
            # useDefaultMappings); our templates always send unique_id = messageId and the event time.
            body = event_body("Order Completed", prof, KV, 10)
            tpl = track_template("Order Completed", prof, KV, 10, time="$.timestamp")
            tpl["fields"]["unique_id"] = "$.messageId"
            verdict = "differ_on_purpose"
            why = (
                "we always send time (the Segment timestamp) and a deterministic unique_id (messageId) so a "
                "retried message never duplicates; Segment's test omits both"
            )
            diffs = {"data.attributes.time": T22, "data.attributes.unique_id": "segment-test-message-id"}
        out.append(
            case(
                f"{action}/{slug}",
                f"{name} > {title}",
                ev,
                mapping,
                verdict,
                why,
                defaults=action == "trackEvent",
                requests=[post("/events/", body)],
                flow="forward-track",
                config=track_config(tpl),
                differences=diffs,
            )
        )
    out.append(
        case(
            f"{action}/api-500",
            f"{name} > should throw an error if the API request fails",
            ev,
            {
                "profile": {"email": "test@example.com", "phone_number": "+14155552671"},
                "metric_name": metric,
                "properties": KV,
                "value": 10,
            },
            "unsupported",
            "about the HTTP error path, not the request body; our retries/outcomes are tested in tests/reliability",
            error="Internal Server Error",
        )
    )
    times = [
        (
            "2024-07-22T20:08:49.79Z",
            "2024-07-22T20:08:49.790Z",
            "should successfully convert the timestamp for the time property to ISO format.",
        ),
        (
            "2024-09-11T20:08:49.8919123123Z" if action == "trackEvent" else "2024-07-22T20:08:49.89191341Z",
            "2024-09-11T20:08:49.891Z" if action == "trackEvent" else "2024-07-22T20:08:49.891Z",
            "should not throw an error when the time property has more than three digits in the milliseconds "
            "and should convert the time to ISO format.",
        ),
    ]
    prof = {"anonymous_id": "an0nym0u51d"}
    for i, (ts, iso, title) in enumerate(times):
        e = test_event(type="track", timestamp=ts)
        if action == "trackEvent":
            mapping = {
                "profile": prof,
                "metric_name": "event_name",
                "properties": KV,
                "value": 10,
                "unique_id": "text-example-xyz",
            }
            body = event_body("event_name", prof, KV, 10, iso, "text-example-xyz")
            tpl = track_template("event_name", prof, KV, 10, "text-example-xyz")
            diffs: dict[str, Any] = {}
            verdict, why = "agree", "same instant (time compared as an instant, millisecond precision)"
        else:
            mapping = {
                "profile": prof,
                "metric_name": "Order Completed",
                "properties": KV,
                "value": 10,
                "event_name": "Order Completed",
                "time": ts,
            }
            body = event_body("Order Completed", prof, KV, 10, iso)
            tpl = track_template("Order Completed", prof, KV, 10, time=lit(ts))
            tpl["fields"]["time"] = {"literal": ts, "transform": ["iso8601"]}
            tpl["fields"]["unique_id"] = "$.messageId"
            diffs = {"data.attributes.unique_id": "segment-test-message-id"}
            verdict, why = "differ_on_purpose", "same time; we add unique_id = messageId (deterministic)"
        out.append(
            case(
                f"{action}/time-iso-{i + 1}",
                f"{name} > {title}",
                e,
                mapping,
                verdict,
                why,
                defaults=action == "trackEvent",
                requests=[post("/events/", body)],
                flow="forward-track",
                config=track_config(tpl),
                differences=diffs,
            )
        )
    e = test_event(
        type="track", timestamp="2024-07-22T20:08:49.79Z" if action == "trackEvent" else "2024-07-22T20:08:49.89191341Z"
    )
    if action == "trackEvent":
        mapping = {
            "profile": prof,
            "metric_name": "event_name",
            "properties": KV,
            "value": 10,
            "unique_id": "text-example-xyz",
        }
        body = event_body("event_name", prof, KV, 10, None, "text-example-xyz")
        tpl = track_template("event_name", prof, KV, 10, "text-example-xyz", time=None)
        title = "should not pass time property in API when it is not mapped or defined"
    else:
        mapping = {
            "profile": prof,
            "metric_name": "Order Completed",
            "properties": KV,
            "value": 10,
            "event_name": "Order Completed",
        }
        body = event_body("Order Completed", prof, KV, 10)
        tpl = track_template("Order Completed", prof, KV, 10, "segment-test-message-id", time=None)
        tpl["fields"]["unique_id"] = "$.messageId"
        title = "should not pass time property in API when it is not mapped"
    out.append(
        case(
            f"{action}/no-time",
            f"{name} > {title}",
            e,
            mapping,
            "agree" if action == "trackEvent" else "differ_on_purpose",
            "a template without `time` sends no time, like Segment"
            + ("" if action == "trackEvent" else "; we add unique_id = messageId (deterministic)"),
            requests=[post("/events/", body)],
            flow="forward-track",
            config=track_config(tpl),
            differences={} if action == "trackEvent" else {"data.attributes.unique_id": "segment-test-message-id"},
        )
    )
    return out


def order_product_cases() -> list[dict[str, Any]]:
    """orderCompleted products cases: Segment sends the order event plus one event per product."""
    prof = {"email": "test@example.com", "phone_number": "+14155552671"}
    ev = test_event(type="track", timestamp=T22)
    out = []
    for slug, title, products, props, metric, pmetric in (
        (
            "products-array",
            "should successfully track event with products array",
            [{"value": 10, "properties": {"productKey": "productValue"}}],
            KV,
            "Product Purchase Completed",
            "Order Products",
        ),
        (
            "product-overrides-properties",
            "should override event properties with product properties",
            [{"value": 10, "name": "product uno"}],
            {"key": "value", "name": "Order Completed"},
            "Product Puchase Completed",
            "Product Puchase",
        ),
    ):
        tpl = track_template(metric, prof, props, 10)
        tpl["fields"]["unique_id"] = "$.messageId"
        tpl["expand"] = [
            {
                "each": "$.properties.products[*]",
                "fields": {
                    "metric": lit(pmetric),
                    "value": "@.value",
                    "unique_id": {"template": "{$.messageId}:{@index}"},
                },
                "properties": {"from": "@"},
            }
        ]
        message = copy.deepcopy(ev)
        message["properties"] = {**props, "products": products}
        product_props = {**props, **{k: v for k, v in products[0].items() if k != "value"}}
        product_props = {k: v for k, v in product_props.items()}
        out.append(
            case(
                f"orderCompleted/{slug}",
                f"Order Completed > {title}",
                ev,
                {
                    "profile": prof,
                    "properties": props,
                    "value": 10,
                    "products": products,
                    "event_name": metric,
                    "product_event_name": pmetric,
                }
                | ({"metric_name": metric} if slug != "products-array" else {}),
                "differ_on_purpose",
                "order event agrees; product event: Segment merges the order properties with the product "
                "and a random uuid unique_id, we send the product item as properties with a deterministic "
                "unique_id <messageId>:<position> (docs/mapping.md `expand`)",
                requests=[
                    post("/events/", event_body(metric, prof, props, 10)),
                    post(
                        "/events/",
                        {
                            "__checks__": {
                                "data.attributes.metric.data.attributes.name": pmetric,
                                "data.attributes.unique_id": "<string>",
                                **(
                                    {"data.attributes.properties.name": "product uno"}
                                    if slug != "products-array"
                                    else {}
                                ),
                            }
                        },
                    ),
                ],
                flow="forward-track",
                config=track_config(tpl),
                message=message,
                differences={"data.attributes.time": T22, "data.attributes.unique_id": "segment-test-message-id"},
            )
        )
    # Derived from the products case: two line items with the same product_id stay two events in Segment
    # (random uuids); ours must not give them the same unique_id.
    dup = copy.deepcopy(ev)
    dup["event"] = "Order Completed"
    dup["properties"] = {
        "order_id": "o-1",
        "products": [{"product_id": "p-1", "price": 5, "size": "S"}, {"product_id": "p-1", "price": 5, "size": "M"}],
    }
    out.append(
        case(
            "orderCompleted/same-product-twice",
            "Order Completed > should successfully track event with "
            "products array (derived: two items sharing a product_id)",
            dup,
            {"products": "$.properties.products"},
            "differ_on_purpose",
            "issue 14 item 2 (fixed): one Ordered Product per line item with "
            "unique_id <order_id>:<position>, deterministic across retries; Segment sends a random uuid per "
            "product",
            requests=[],
            flow="forward-track",
            config={},
            message=dup,
        )
    )
    return out


def upsert_cases() -> list[dict[str, Any]]:
    """upsertProfile/__tests__/index.test.ts."""
    out = []
    jd = {"email": "test@example.com", "firstName": "John", "lastName": "Doe"}
    jd_attrs = {"email": "test@example.com", "first_name": "John", "last_name": "Doe", "location": {}, "properties": {}}
    ours_extra = {
        "data.attributes.external_id": "user1234",
        "data.attributes.location.timezone": "Europe/Amsterdam",
        "data.attributes.location.ip": "8.8.8.8",
    }
    why_extra = (
        "identify-default also maps userId -> external_id and context.timezone/ip -> location "
        "(docs/mapping.md); Segment's action has no external_id default"
    )
    out.append(
        case(
            "upsertProfile/no-identifiers",
            "Upsert Profile > should throw error if no email, phone_number, or external_id is provided",
            test_event(type="track", properties={}),
            None,
            "agree",
            "no identifier: Segment throws, we skip the message; no request either way",
            error="IntegrationError",
            flow="sync-identify",
            message=test_event(type="identify", userId=None, anonymousId="anonId1234"),
        )
    )
    out.append(
        case(
            "upsertProfile/external-id-too-long",
            "Upsert Profile > should throw error if external_id exceeds 255 characters",
            test_event(type="identify", traits={"email": "test@example.com"}),
            {"external_id": "a" * 256, "email": {"@path": "$.traits.email"}},
            "unsupported",
            "no length check on external_id; Klaviyo answers 400",
            error="Length of external_id must be no more than 255 characters.",
        )
    )
    out.append(
        case(
            "upsertProfile/external-id-255",
            "Upsert Profile > should not throw error if external_id is exactly 255 characters",
            test_event(type="identify", traits={"email": "test@example.com"}),
            {"external_id": "a" * 255, "email": {"@path": "$.traits.email"}},
            "differ_on_purpose",
            "one POST /api/profile-import (upsert) instead of POST /profiles -> 409 -> PATCH; location gets "
            "context timezone/ip",
            requests=[{"method": "POST", "path": "/profiles/", "body": None}],
            flow="sync-identify",
            message=test_event(type="identify", userId="a" * 255, traits={"email": "test@example.com"}),
        )
    )
    ph = {"phone": "invalid-phone-number", "email": "test@example.com", "country_code": "US"}
    out.append(
        case(
            "upsertProfile/invalid-phone",
            "Upsert Profile > should throw an error for invalid phone number format in perform",
            test_event(type="identify", traits=ph),
            {
                "phone_number": {"@path": "$.traits.phone"},
                "email": {"@path": "$.traits.email"},
                "country_code": {"@path": "$.traits.country_code"},
            },
            "differ_on_purpose",
            "Segment rejects the profile; we drop only phone_number with a warning and upsert the rest",
            error="invalid-phone-number is not a valid phone number and cannot be converted to E.164 format.",
            flow="sync-identify",
            differences={
                "__expect_body__": profile_body(
                    {
                        "email": "test@example.com",
                        "external_id": "user1234",
                        "location": {"timezone": "Europe/Amsterdam", "ip": "8.8.8.8"},
                        "properties": {"country_code": "US"},
                    }
                )
            },
        )
    )
    ph_in = {"phone": "8448309222", "email": "test@example.com", "country_code": "IN"}
    out.append(
        case(
            "upsertProfile/phone-e164-country-code",
            "Upsert Profile > should convert a phone number to E.164 format if country code is provided",
            test_event(type="identify", traits=ph_in),
            {
                "phone_number": {"@path": "$.traits.phone"},
                "email": {"@path": "$.traits.email"},
                "country_code": {"@path": "$.traits.country_code"},
            },
            "defect",
            PHONE_IN,
            issue_item=1,
            defaults=True,
            requests=[
                post(
                    "/profiles/",
                    profile_body(
                        {"email": "test@example.com", "phone_number": "+918448309222", "location": {}, "properties": {}}
                    ),
                )
            ],
            flow="sync-identify",
            differences={**ours_extra, "data.attributes.properties.country_code": "IN"},
        )
    )
    for slug, title, uid, verdict, why, extra_req in (
        ("create", "should create a new profile if successful", "123", "differ_on_purpose", why_extra, []),
        (
            "update-on-409",
            "should update an existing profile if duplicate is found",
            "user1234",
            "differ_on_purpose",
            "one POST /api/profile-import (an upsert) replaces POST /profiles -> 409 -> "
            "PATCH /profiles/{id}; " + why_extra,
            [{"method": "PATCH", "path": "/profiles/123", "body": profile_body(jd_attrs, "123")}],
        ),
        (
            "api-500",
            "should throw an error if the API request fails",
            "user1234",
            "unsupported",
            "about the HTTP error path; our retries/outcomes are tested in tests/reliability",
            [],
        ),
    ):
        ev = test_event(type="track", userId=uid, traits=jd)
        diffs = {**ours_extra, "data.attributes.external_id": uid}
        out.append(
            case(
                f"upsertProfile/{slug}",
                f"Upsert Profile > {title}",
                ev,
                None,
                verdict,
                why,
                defaults=True,
                requests=[post("/profiles/", profile_body(jd_attrs))] + extra_req,
                flow=None if verdict == "unsupported" else "sync-identify",
                message={**ev, "type": "identify"},
                differences=diffs,
            )
        )
    for slug, title, mapping, traits in (
        (
            "list-id",
            "should add a profile to a list if list_id is provided",
            {"list_id": "abc123"},
            {**jd, "list_id": "abc123"},
        ),
        (
            "list-id-existing",
            "should add an existing profile to a list if list_id is provided",
            {"list_id": "abc123"},
            {**jd, "list_id": "abc123"},
        ),
        (
            "override-list-id",
            "should proritize using override_list_id if it is provided in event",
            {"list_id": "abc123", "override_list_id": "321bca"},
            jd,
        ),
    ):
        ev = test_event(type="track", userId="123", traits=traits)
        # ours: list_id as a trait (Segment's list_id field), override_list_id as integrations.Klaviyo.listId
        ours_traits = {**jd, "list_id": "abc123"}
        ours_msg = {**ev, "type": "identify", "traits": ours_traits}
        if "override_list_id" in mapping:
            ours_msg["integrations"] = {"Klaviyo": {"listId": mapping["override_list_id"]}}
        list_id = mapping.get("override_list_id", "abc123")
        out.append(
            case(
                f"upsertProfile/{slug}",
                f"Upsert Profile > {title}",
                ev,
                mapping,
                "differ_on_purpose",
                "one POST /api/profile-import (upsert) then POST /api/lists/{id}/relationships/profiles; the "
                "list comes from traits.list_id or integrations.Klaviyo.listId (which wins, as Segment's "
                "override_list_id)",
                requests=[
                    post("/profiles/", profile_body(jd_attrs)),
                    post(f"/lists/{list_id}/relationships/profiles/", None),
                ],
                flow="sync-identify",
                message=ours_msg,
                differences={"__list_add__": list_id},
            )
        )
    batch = [
        test_event(traits={"email": "user1@example.com"}),
        test_event(traits={"phone": "7702126011", "country_code": "US"}),
    ]
    out.append(
        case(
            "upsertProfile/batch-phone-country",
            "Upsert Profile Batch > should convert a phone number to E.164 format if country code is provided.",
            batch[0],
            {
                "email": {"@path": "$.traits.email"},
                "phone_number": {"@path": "$.traits.phone"},
                "country_code": {"@path": "$.traits.country_code"},
            },
            "unsupported",
            "batch (profile-bulk-import-jobs) path of a live destination; our bulk import is the backfill "
            "command (docs/backfill.md), fed by CSV, not by Segment batches",
            batch_events=batch,
            requests=[
                post(
                    "/profile-bulk-import-jobs/",
                    {
                        "data": {
                            "type": "profile-bulk-import-job",
                            "attributes": {
                                "profiles": {
                                    "data": [
                                        {"type": "profile", "attributes": {"email": "user1@example.com"}},
                                        {"type": "profile", "attributes": {"phone_number": "+17702126011"}},
                                    ]
                                }
                            },
                        }
                    },
                )
            ],
        )
    )
    for slug, title in (
        ("batch-no-identifier", "should discard profiles without email, phone_number, or external_id"),
        ("batch-invalid-phone", "should filter out profiles with invalid phone numbers in performBatch"),
        ("batch-with-and-without-list", "should process profiles with and without list_ids separately"),
        ("batch-list-only", "should process profiles with list_ids only"),
        ("batch-no-list-only", "should process profiles without list_ids only"),
    ):
        out.append(
            case(
                f"upsertProfile/{slug}",
                f"Upsert Profile Batch > {title}",
                test_event(),
                None,
                "unsupported",
                "Segment batch mode (profile-bulk-import-jobs); ours streams messages, bulk import is the CSV backfill",
            )
        )
    for slug, title in (
        ("hook-create-list", "create a new list with hook"),
        ("hook-existing-list", "verify the existing list"),
        ("hook-missing-list", "fail if list id does not exist"),
    ):
        out.append(
            case(
                f"upsertProfile/{slug}",
                f"retlOnMappingSave hook > {title}",
                {},
                None,
                "unsupported",
                "Reverse-ETL mapping-save hook; our lists come from config (`audiences_create_lists`)",
            )
        )
    return out


def list_cases() -> list[dict[str, Any]]:
    """addProfileToList / removeProfileFromList: Segment Engage audience events."""
    rel = {"data": [{"type": "profile", "id": "XYZABC"}]}
    enter = test_event(
        type="track",
        event="Audience Entered",
        userId="123",
        traits={"email": "demo@segment.com"},
        properties={"audience_key": "compat_audience", "compat_audience": True},
    )
    enter["context"]["personas"] = {"computation_class": "audience", "computation_key": "compat_audience"}
    cfg = {"audiences": {"compat_audience": "XYZABC"}}
    out = [
        case(
            "addProfileToList/email-only",
            "Add Profile To List > should add profile to list successfully with email only",
            enter,
            {"list_id": "XYZABC", "email": {"@path": "$.traits.email"}},
            "differ_on_purpose",
            "Segment: POST /profiles then POST /lists/{id}/relationships/profiles with the returned id; we look "
            "the profile up / upsert it and add it through the list relationship; list id from the "
            "`audiences` table instead of the mapping",
            requests=[
                post("/profiles/", profile_body({"email": "demo@segment.com"})),
                post("/lists/XYZABC/relationships/profiles/", rel),
            ],
            flow="sync-audiences",
            config=cfg,
            differences={"__list_add__": "XYZABC"},
        )
    ]
    exit_ = copy.deepcopy(enter)
    exit_.update(event="Audience Exited", traits={})
    exit_["properties"]["compat_audience"] = False
    exit_["context"]["traits"] = {"email": "test@example.com"}
    out.append(
        case(
            "removeProfileFromList/email-only",
            "Remove List from Profile > should remove profile from list successfully with email address only",
            exit_,
            None,
            "differ_on_purpose",
            "both look the profile up by email and DELETE the list relationship; list id from the "
            "`audiences` table instead of context.personas.external_audience_id",
            defaults=True,
            requests=[
                {"method": "GET", "path": '/profiles/?filter=any(email,["test@example.com"])'},
                {"method": "DELETE", "path": "/lists/XYZABC/relationships/profiles/", "body": rel},
            ],
            flow="sync-audiences",
            config=cfg,
            differences={"__list_remove__": "XYZABC"},
        )
    )
    return out


def subscription_cases(action: str) -> list[dict[str, Any]]:
    """subscribeProfile / unsubscribeProfile: no flow of ours sends these (issue 14 item 5)."""
    ts = "2024-04-01T18:37:06.558Z"
    ev = test_event(
        type="track",
        event="Marketing Event",
        timestamp=ts,
        context={"traits": {"email": "segment@email.com", "phone_number": "+17067675219"}},
        properties={"historical_import": True},
    )
    if action == "subscribeProfile":
        consent = {"consent": "SUBSCRIBED", "consented_at": ts}
        body = {
            "data": {
                "type": "profile-subscription-bulk-create-job",
                "attributes": {
                    "custom_source": "Marketing Event",
                    "historical_import": True,
                    "profiles": {
                        "data": [
                            {
                                "type": "profile",
                                "attributes": {
                                    "email": "segment@email.com",
                                    "phone_number": "+17067675219",
                                    "subscriptions": {"email": {"marketing": consent}, "sms": {"marketing": consent}},
                                },
                            }
                        ]
                    },
                },
            }
        }
        path, title = (
            "/profile-subscription-bulk-create-jobs/",
            "formats the correct request body when list id is empty and custom_source is defined",
        )
        mapping = {
            "list_id": "",
            "consented_at": {"@path": "$.timestamp"},
            "email": {"@path": "$.context.traits.email"},
            "phone_number": {"@path": "$.context.traits.phone_number"},
            "custom_source": {"@path": "$.event"},
            "historical_import": {"@path": "$.properties.historical_import"},
        }
    else:
        ev["properties"] = {}
        body = {
            "data": {
                "type": "profile-subscription-bulk-delete-job",
                "attributes": {
                    "profiles": {
                        "data": [
                            {
                                "type": "profile",
                                "attributes": {"email": "segment@email.com", "phone_number": "+17067675219"},
                            }
                        ]
                    }
                },
            }
        }
        path, title = (
            "/profile-subscription-bulk-delete-jobs/",
            "formats the correct request body when list id is empty",
        )
        mapping = {
            "list_id": "",
            "email": {"@path": "$.context.traits.email"},
            "phone_number": {"@path": "$.context.traits.phone_number"},
        }
    name = "Subscribe Profile" if action == "subscribeProfile" else "Unsubscribe Profile"
    return [
        case(
            f"{action}/basic",
            f"{name} > {title}",
            ev,
            mapping,
            "defect",
            f"issue 14 item 5: no {action} equivalent; a consent event is forwarded as a plain event",
            issue_item=5,
            requests=[post(path, body)],
            flow="forward-track",
            config={},
        )
    ]


def loop_guard_cases() -> list[dict[str, Any]]:
    """destination metadata (klaviyo/index.ts): the destination is named 'Klaviyo (Actions)'."""
    loop = case(
        "destination/loop-guard-name",
        "index.ts > destination name 'Klaviyo (Actions)'",
        {},
        None,
        "agree",
        "issue 14 item 4 (fixed): events we send to Segment set integrations.Klaviyo and "
        "integrations['Klaviyo (Actions)'] to false, so neither Klaviyo destination sends them back",
    )
    loop["ours"] = {"builder": "klaviyo_segment.builders.segment.build_track"}
    return [loop]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    groups = {
        "trackEvent": track_cases("trackEvent"),
        "orderCompleted": track_cases("orderCompleted") + order_product_cases(),
        "upsertProfile": upsert_cases(),
        "addProfileToList": list_cases()[:1],
        "removeProfileFromList": list_cases()[1:],
        "subscribeProfile": subscription_cases("subscribeProfile"),
        "unsubscribeProfile": subscription_cases("unsubscribeProfile"),
        "destination": loop_guard_cases(),
    }
    for action, cases in groups.items():
        doc = {"source": SOURCE, "action": action, "cases": cases}
        (OUT / f"{action}.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
        print(action, len(cases))


if __name__ == "__main__":
    main()
