"""Reading Klaviyo consent state (``attributes.subscriptions``), shared by onboard-new-users and sync-consent.

A subscribe job removes ``UNSUBSCRIBE``, ``SPAM_REPORT`` and ``USER_SUPPRESSED`` suppressions, so subscribing
someone who opted out clears their opt-out: a legal risk. The helpers here answer "did this person opt out of
this channel?" (any time: onboarding must never subscribe them) and "did they opt out after this moment?" (a
replayed consent event must not undo a newer opt-out made in Klaviyo). Klaviyo times without an offset are read
as UTC, so a naive value can never raise while comparing (it once failed a whole batch).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any


def parse_instant(value: Any) -> datetime | None:
    """An aware datetime from a Klaviyo/Segment time (``Z``, an offset, or none = UTC); None when unreadable."""
    if isinstance(value, datetime):
        stamp = value
    elif isinstance(value, str) and value:
        try:
            stamp = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    else:
        return None
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


def _marketing(channel_state: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (channel_state or {}).get("marketing") or {}


def _suppressions(marketing: Mapping[str, Any], list_id: str | None) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for s in marketing.get("suppression") or []:
        yield "suppressed", s
    for s in marketing.get("list_suppressions") or []:
        if list_id and s.get("list_id") == list_id:
            yield "suppressed from the list", s


def opt_out_reason(channel: str, channel_state: Mapping[str, Any] | None, list_id: str | None) -> str | None:
    """Why this channel must never be subscribed (whatever the date), or None when it never opted out.

    An ``UNSUBSCRIBED`` consent, any global suppression (unsubscribe, spam report, bounce, manual) or a
    suppression from ``list_id`` counts; a suppression from another list does not concern this list.
    """
    marketing = _marketing(channel_state)
    if marketing.get("consent") == "UNSUBSCRIBED":
        return f"{channel} unsubscribed in Klaviyo"
    for what, suppression in _suppressions(marketing, list_id):
        return f"{channel} {what} in Klaviyo ({suppression.get('reason') or 'unknown reason'})"
    return None


def opted_out_after(channel_state: Mapping[str, Any] | None, moment: datetime, list_id: str | None) -> bool:
    """Unsubscribed or suppressed (globally or from ``list_id``) strictly after ``moment`` (naive = UTC)."""
    moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)

    def later(value: Any) -> bool:
        stamp = parse_instant(value)
        return stamp is not None and stamp > moment

    marketing = _marketing(channel_state)
    if marketing.get("consent") == "UNSUBSCRIBED" and (
        later(marketing.get("consent_timestamp")) or later(marketing.get("last_updated"))
    ):
        return True
    return any(later(s.get("timestamp")) for _, s in _suppressions(marketing, list_id))
