"""Track filters: globs, deny over allow, property predicates, config mistakes."""

from __future__ import annotations

import pytest

from klaviyo_segment.errors import ConfigError
from klaviyo_segment.mapping import TrackFilter


def _msg(event: str, **props: object) -> dict[str, object]:
    return {"type": "track", "event": event, "properties": props}


def test_allow_deny_globs() -> None:
    f = TrackFilter(allow=["Order *", "Product Viewed"], deny=["Order Refunded"])
    assert f.check(_msg("Order Completed")) is None
    assert f.check(_msg("Product Viewed")) is None
    assert f.check(_msg("Order Refunded")) == "filtered: event in deny list"
    assert f.check(_msg("Signed Up")) == "filtered: event not in allow list"
    assert f.check(_msg("order completed")) == "filtered: event not in allow list"  # case-sensitive, like Segment
    assert f.check({"type": "track"}) == "filtered: no event name"
    assert TrackFilter().check(_msg("Anything")) is None
    assert TrackFilter(allow=[]).check(_msg("Anything")) == "filtered: event not in allow list"


@pytest.mark.parametrize(
    ("predicate", "passing", "failing"),
    [
        ({"property": "plan", "equals": "pro"}, {"plan": "pro"}, {"plan": "free"}),
        ({"property": "plan", "not_equals": "free"}, {"plan": "pro"}, {"plan": "free"}),
        ({"property": "plan", "in": ["pro", "team"]}, {"plan": "team"}, {"plan": "free"}),
        ({"property": "plan", "not_in": ["free"]}, {"plan": "pro"}, {"plan": "free"}),
        ({"property": "coupon", "exists": True}, {"coupon": "X"}, {"coupon": None}),
        ({"property": "coupon", "exists": False}, {}, {"coupon": "X"}),
        ({"path": "$.properties.total", "gt": 10}, {"total": 10.5}, {"total": 10}),
        ({"property": "total", "gte": 10}, {"total": "10"}, {"total": "abc"}),
        ({"property": "total", "lt": 0}, {"total": -1}, {"total": True}),
        ({"property": "total", "lte": 0}, {"total": 0}, {}),
    ],
)
def test_where_predicates(predicate: dict[str, object], passing: dict[str, object], failing: dict[str, object]) -> None:
    f = TrackFilter(where=[predicate])
    assert f.check(_msg("E", **passing)) is None
    reason = f.check(_msg("E", **failing))
    assert reason is not None and reason.startswith("filtered: where ")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"where": [{"property": "x", "gt": 1, "lt": 5}]}, "track.where[0]: a predicate needs exactly one operator"),
        ({"where": [{"property": "x", "matches": "a"}]}, "exactly one operator"),
        ({"where": [{"equals": 1}]}, "needs exactly one of 'path'"),
        ({"where": [{"property": "x", "in": "abc"}]}, "'in' needs a list"),
        ({"where": [{"path": "properties.x", "equals": 1}]}, "must start with '$'"),
        ({"allow": "Order *"}, "track.allow: expected a list of event-name globs"),
    ],
)
def test_filter_config_errors(kwargs: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        TrackFilter(**kwargs)  # type: ignore[arg-type]
    assert expected in str(info.value)
