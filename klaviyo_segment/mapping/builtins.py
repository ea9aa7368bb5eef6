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
        "email": {"coalesce": ["$.traits.email", "$.context.traits.email"], "transform": ["trim", "lowercase",
                                                                                          "drop_if_empty"]},
        "phone_number": {"coalesce": ["$.traits.phone", "$.traits.phone_number", "$.traits.phoneNumber",
                                      "$.context.traits.phone"], "transform": [*_STR, "e164"]},
        "external_id": {"path": "$.userId", "transform": ["string", *_STR]},
        "country_code": {"coalesce": ["$.traits.country_code", "$.traits.countryCode"]},  # phone country only
        "first_name": {"coalesce": ["$.traits.firstName", "$.traits.first_name"], "transform": _STR},
        "last_name": {"coalesce": ["$.traits.lastName", "$.traits.last_name"], "transform": _STR},
        "organization": {"coalesce": ["$.traits.company.name", "$.traits.company"], "transform": _STR},
        "title": {"path": "$.traits.title", "transform": _STR},
        "image": {"path": "$.traits.avatar", "transform": _STR},
        "location.address1": {"coalesce": ["$.traits.address.street", "$.traits.address.address1"],
                              "transform": _STR},
        "location.address2": {"path": "$.traits.address.address2", "transform": _STR},
        "location.city": {"path": "$.traits.address.city", "transform": _STR},
        "location.region": {"coalesce": ["$.traits.address.state", "$.traits.address.region"], "transform": _STR},
        "location.zip": {"coalesce": ["$.traits.address.postalCode", "$.traits.address.postal_code",
                                      "$.traits.address.zip"], "transform": ["string", *_STR]},
        "location.country": {"path": "$.traits.address.country", "transform": _STR},
        "location.timezone": {"path": "$.context.timezone", "transform": _STR},
        "location.ip": {"path": "$.context.ip", "transform": _STR},
    },
    "properties": {"from": "$.traits", "exclude_mapped": True},
}

#: Event fields shared by track-default and ecommerce (one definition, two templates).
_EVENT_FIELDS: dict[str, Any] = {
    "time": {"coalesce": ["$.timestamp", "$.originalTimestamp"], "transform": ["iso8601"]},
    "unique_id": {"path": "$.messageId", "transform": ["string", *_STR]},
    "value": {"coalesce": ["$.properties.revenue", "$.properties.total", "$.properties.value"],
              "transform": ["number"]},
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
    "fields": {"metric": {"path": "$.event", "transform": _STR}, **_EVENT_FIELDS},
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

ECOMMERCE: dict[str, Any] = {
    "name": "ecommerce",
    "kind": "track",
    "description": "Segment V2 e-commerce events -> Klaviyo e-commerce metrics; Order Completed also yields one "
                   "Ordered Product per item with a deterministic unique_id.",
    "nulls": "ignore",
    "match": {"events": list(ECOMMERCE_METRICS)},
    "fields": {"metric": {"path": "$.event", "transform": [{"map": ECOMMERCE_METRICS}]}, **_EVENT_FIELDS},
    "properties": {"from": "$.properties", "exclude_mapped": False},
    "expand": [{
        "when": {"events": ["Order Completed"]},
        "each": "$.properties.products[*]",
        "fields": {
            "metric": {"literal": "Ordered Product"},
            # order id (else the message id) + product id (else sku, else position): a retry never duplicates
            "unique_id": {"template": "{$.properties.order_id|$.messageId}:{@.product_id|@.sku|@index}"},
            "value": {"coalesce": ["@.price", "@.value"], "transform": ["number"]},
            "value_currency": {"path": "$.properties.currency", "transform": ["trim", "uppercase", "drop_if_empty"]},
            "properties.order_id": {"path": "$.properties.order_id"},
        },
        "properties": {"from": "@", "exclude_mapped": False},
    }],
}

_BUILTINS = {t["name"]: t for t in (IDENTIFY_DEFAULT, TRACK_DEFAULT, ECOMMERCE)}
BUILTIN_TEMPLATES: tuple[str, ...] = tuple(_BUILTINS)


def builtin_spec(name: str) -> dict[str, Any] | None:
    """A copy of a built-in spec (callers may tweak it into a custom template without touching ours)."""
    spec = _BUILTINS.get(name)
    return copy.deepcopy(spec) if spec is not None else None
