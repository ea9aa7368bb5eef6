"""What Klaviyo rejects, checked before sending (docs: shared klaviyo-api.md, Create Event / Create Profile).

Why local: a request Klaviyo answers 400 to costs a round trip, and in a bulk job it can hold back the other
events of the batch; failing the one message here dead-letters it with a reason the user can act on. Messages
never contain the rejected value (it may be personal data).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

#: Metric names must be shorter than this (Klaviyo: "must be less than 128 characters").
METRIC_NAME_MAX = 128
#: Event times Klaviyo accepts: after 1990-01-01, at most one year ahead of now.
EARLIEST_EVENT_TIME = datetime(1990, 1, 1, tzinfo=UTC)
LATEST_EVENT_AHEAD = timedelta(days=365)
#: An address Klaviyo accepts: one '@', no spaces, a dotted domain whose last label has 2+ letters (or is an IDN
#: punycode label). Segment's destination uses the same shape (``[a-zA-Z]{2,}`` top-level domain).
_EMAIL = re.compile(r"^[^@\s]+@(?:[^@\s.]+\.)+(?:[A-Za-z]{2,}|xn--[A-Za-z0-9-]+)$")


def metric_name_problem(name: Any) -> str | None:
    if not isinstance(name, str) or not name.strip():
        return "metric name is required"
    if len(name) >= METRIC_NAME_MAX:
        return f"metric name must be less than {METRIC_NAME_MAX} characters (got {len(name)})"
    return None


def _parse(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def event_time_problem(value: Any, now: datetime | None = None) -> str | None:
    """Klaviyo: event time must be after 1990 and no more than 1 year in the future."""
    when = _parse(value)
    if when is None:
        return None  # unparseable times are the mapping's concern (dropped with a warning)
    if when < EARLIEST_EVENT_TIME:
        return "event time is before 1990 (Klaviyo rejects it)"
    if when > (now or datetime.now(UTC)) + LATEST_EVENT_AHEAD:
        return "event time is more than a year in the future (Klaviyo rejects it)"
    return None


def email_problem(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _EMAIL.match(value.strip()):
        return "email is not a valid email address (Klaviyo rejects it)"
    return None
