"""Built-in templates, written in the same template language users write (they double as examples)."""

from __future__ import annotations

import copy
from typing import Any

_STR = ["trim", "drop_if_empty"]

IDENTIFY_DEFAULT: dict[str, Any] = {
    "name": "identify-default",
    "kind": "identify",
    "description": "Segment reserved traits (camelCase or snake_case) -> Klaviyo profile fields; other traits -> "
    "properties.",
    "nulls": "ignore",
    "fields": {
        "email": {
            "coalesce": ["$.traits.email", "$.context.traits.email"],
            "transform": ["trim", "lowercase", "drop_if_empty"],
        },
        "phone_number": {
            "coalesce": ["$.traits.phone", "$.traits.phone_number", "$.traits.phoneNumber", "$.context.traits.phone"],
            "transform": [*_STR, "e164"],
        },
        "external_id": {"path": "$.userId", "transform": ["string", *_STR]},
        "country_code": {"coalesce": ["$.traits.country_code", "$.traits.countryCode"]},  # phone country only
        "first_name": {"coalesce": ["$.traits.firstName", "$.traits.first_name"], "transform": _STR},
        "last_name": {"coalesce": ["$.traits.lastName", "$.traits.last_name"], "transform": _STR},
        "organization": {"coalesce": ["$.traits.company.name", "$.traits.company"], "transform": _STR},
        "title": {"path": "$.traits.title", "transform": _STR},
        "image": {"path": "$.traits.avatar", "transform": _STR},
        "location.address1": {"coalesce": ["$.traits.address.street", "$.traits.address.address1"], "transform": _STR},
        "location.address2": {"path": "$.traits.address.address2", "transform": _STR},
        "location.city": {"path": "$.traits.address.city", "transform": _STR},
        "location.region": {"coalesce": ["$.traits.address.state", "$.traits.address.region"], "transform": _STR},
        "location.zip": {
            "coalesce": ["$.traits.address.postalCode", "$.traits.address.postal_code", "$.traits.address.zip"],
            "transform": ["string", *_STR],
        },
        "location.country": {"path": "$.traits.address.country", "transform": _STR},
        "location.timezone": {"path": "$.context.timezone", "transform": _STR},
        "location.ip": {"path": "$.context.ip", "transform": _STR},
    },
    # list_id names a list to add the profile to (sync-identify), it is not a profile property
    "properties": {"from": "$.traits", "exclude_mapped": True, "exclude": ["list_id"]},
}

#: Event fields shared by track-default and ecommerce (one definition, two templates). No ``value`` here: a
#: generic track's ``properties.value`` is Segment's abstract value (points, scores), not money.
_EVENT_FIELDS: dict[str, Any] = {
    "time": {"coalesce": ["$.timestamp", "$.originalTimestamp"], "transform": ["iso8601"]},
    "unique_id": {"path": "$.messageId", "transform": ["string", *_STR]},
    "value_currency": {"path": "$.properties.currency", "transform": ["trim", "uppercase", "drop_if_empty"]},
    "profile.external_id": {"path": "$.userId", "transform": ["string", *_STR]},
    "profile.anonymous_id": {"path": "$.anonymousId", "transform": ["string", *_STR]},
    "profile.email": {"path": "$.context.traits.email", "transform": ["trim", "lowercase", "drop_if_empty"]},
    "profile.phone_number": {"path": "$.context.traits.phone", "transform": [*_STR, "e164"]},
}

TRACK_DEFAULT: dict[str, Any] = {
    "name": "track-default",
    "kind": "track",
    "description": "Any track event -> a Klaviyo event of the same name with all its properties.",
    "nulls": "ignore",
    "fields": {
        "metric": {"path": "$.event", "transform": _STR},
        "value": {"coalesce": ["$.properties.revenue", "$.properties.total"], "transform": ["number"]},
        **_EVENT_FIELDS,
    },
    "properties": {"from": "$.properties", "exclude_mapped": False},
}

#: Segment V2 e-commerce names -> Klaviyo's conventional metric names.
ECOMMERCE_METRICS = {
    "Product Viewed": "Viewed Product",
    "Product Added": "Added to Cart",
    "Checkout Started": "Started Checkout",
    "Order Completed": "Placed Order",
    "Order Refunded": "Refunded Order",
    "Order Cancelled": "Cancelled Order",
}
#: Segment V1 e-commerce names (older sources still send them) -> Klaviyo's names.
ECOMMERCE_V1_METRICS = {
    "Viewed Product": "Viewed Product",
    "Added Product": "Added to Cart",
    "Completed Order": "Placed Order",
}
#: Events that complete an order (V2 and V1 names): one Placed Order per order id, one Ordered Product per line.
ORDER_COMPLETED_EVENTS = ["Order Completed", "Completed Order"]
#: ``track.event_names`` values: Klaviyo's conventional names, or Segment's names kept as sent.
EVENT_NAMING = ("klaviyo", "segment")

ECOMMERCE: dict[str, Any] = {
    "name": "ecommerce",
    "kind": "track",
    "description": "Segment e-commerce events (V2 and V1 names) -> Klaviyo e-commerce metrics; Order Completed is "
    "de-duplicated by order id and yields one Ordered Product per line item.",
    "nulls": "ignore",
    "match": {"events": [*ECOMMERCE_METRICS, *ECOMMERCE_V1_METRICS]},
    "fields": {
        "metric": {"path": "$.event", "transform": [{"map": {**ECOMMERCE_METRICS, **ECOMMERCE_V1_METRICS}}]},
        # order total incl. shipping first; product events carry value or price
        "value": {
            "coalesce": ["$.properties.total", "$.properties.revenue", "$.properties.value", "$.properties.price"],
            "transform": ["number"],
        },
        **_EVENT_FIELDS,
    },
    "properties": {"from": "$.properties", "exclude_mapped": False},
    # One order sent twice (two messageIds) must count its revenue once: Klaviyo keeps the first event per
    # (profile, metric, unique_id). Not for refunds/cancellations: several partial refunds share an order id.
    "overrides": [
        {
            "when": {"events": ORDER_COMPLETED_EVENTS},
            "fields": {"unique_id": {"path": "$.properties.order_id", "transform": ["string", *_STR]}},
        }
    ],
    "expand": [
        {
            "when": {"events": ORDER_COMPLETED_EVENTS},
            "each": "$.properties.products[*]",
            "fields": {
                "metric": {"literal": "Ordered Product"},
                # order id (else the message id) + line position: two sizes of one product stay two events, and a
                # retry of the same order yields the same ids, so Klaviyo never duplicates them
                "unique_id": {"template": "{$.properties.order_id|$.messageId}:{@index}"},
                "value": {"multiply": ["@.price", "@.quantity"]},  # a missing quantity counts as 1
                "value_currency": {
                    "path": "$.properties.currency",
                    "transform": ["trim", "uppercase", "drop_if_empty"],
                },
            },
            # order-level properties (currency, coupon, affiliation, order_id, ...) under the line item's own
            "properties": {"from": ["$.properties", "@"], "exclude": ["products"]},
        }
    ],
}

_BUILTINS = {t["name"]: t for t in (IDENTIFY_DEFAULT, TRACK_DEFAULT, ECOMMERCE)}
BUILTIN_TEMPLATES: tuple[str, ...] = tuple(_BUILTINS)


def builtin_spec(name: str, *, event_names: str = "klaviyo") -> dict[str, Any] | None:
    """A copy of a built-in spec (callers may tweak it into a custom template without touching ours).

    ``event_names="segment"`` keeps Segment's event names as metric names (for users coming from Segment's
    Klaviyo destination, whose flows and segments are built on "Order Completed", "Product Viewed", ...)."""
    if event_names not in EVENT_NAMING:
        raise ValueError(f"event_names must be one of {', '.join(EVENT_NAMING)}, got {event_names!r}")
    spec = _BUILTINS.get(name)
    if spec is None:
        return None
    spec = copy.deepcopy(spec)
    if event_names == "segment" and name == "ecommerce":
        spec["fields"]["metric"] = {"path": "$.event", "transform": _STR}
    return spec
