"""Event operations: create one by one, bulk create jobs (with partial-failure resend), and read events back."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from klaviyo_segment import constants
from klaviyo_segment.builders import klaviyo as b
from klaviyo_segment.builders.bulk_events import plan_bulk_events, prepare_events
from klaviyo_segment.errors import ApiError
from klaviyo_segment.outcomes import ItemResult
from klaviyo_segment.services.bulk import (
    CredentialsOrClient,
    client_scope,
    failed,
    gather_limited,
    invalid,
    ordered,
    run_logger,
    send_each,
    send_with_resend,
)

#: Bulk create requests one call keeps in flight (Klaviyo allows 10/s burst, 150/min; the pacer enforces them).
BULK_REQUESTS_IN_FLIGHT = 4
_BULK_POINTER = re.compile(r"/events-bulk-create/data/(\d+)(?:/attributes/events/data/(\d+))?")


def is_duplicate_error(err: ApiError) -> bool:
    """A repeated unique_id: the first copy is (or will be) recorded, so the repeat is not a data loss."""
    text = f"{err.code or ''} {err.detail or ''}".lower()
    return "duplicate" in text or ("unique_id" in text and ("repeat" in text or "already" in text))


async def create_events(
    events: Sequence[Mapping[str, Any]], credentials: CredentialsOrClient, *, concurrency: int = 16
) -> list[ItemResult]:
    """``POST /api/events`` per event (see ``builders.klaviyo.create_event_body`` for the item shape).
    A 202 means queued, not processed."""
    return await send_each(credentials, "create_event", events, b.create_event_body, concurrency)


async def bulk_create_events(events: Sequence[Mapping[str, Any]], credentials: CredentialsOrClient) -> list[ItemResult]:
    """Bulk create jobs of <=1000 events and <=5 MB, grouped per profile.

    Items a 400 points at (``/data/attributes/events-bulk-create/data/N/...``) fail and the others are resent.
    Repeats of a unique_id (in the request, or reported by the server) succeed with ``value={"duplicate": True}``
    because the first copy is the one Klaviyo records.
    """
    each = prepare_events(events)  # each event is validated and built once, then reused below
    results = {i: invalid(i, exc) for i, exc in each.invalid.items()}
    for i, first in each.duplicates.items():
        results[i] = ItemResult(index=i, ok=True, value={"duplicate": True, "duplicate_of": first})
    prepared = dict(each.sendable)
    good = list(prepared)
    chunks, oversize = b.chunk(
        [prepared[i] for i in good], max_count=constants.BULK_EVENTS_MAX, size_of=lambda e: e.size
    )
    for pos in oversize:
        results[good[pos]] = invalid(good[pos], ValueError("event: larger than the 5 MB bulk payload limit"))

    def build(labels: list[int]) -> tuple[Any, Any]:
        plan = plan_bulk_events([(label, prepared[label]) for label in labels])

        def locate(pointer: str | None) -> list[int]:
            match = _BULK_POINTER.search(pointer or "")
            if not match or int(match.group(1)) >= len(plan.groups):
                return []
            group = plan.groups[int(match.group(1))]
            if match.group(2) is not None and int(match.group(2)) < len(group):
                return [group[int(match.group(2))]]
            return list(group)

        return plan.body, locate

    def on_error(label: int, err: ApiError) -> ItemResult:
        if is_duplicate_error(err):
            return ItemResult(index=label, ok=True, value={"duplicate": True})
        return failed(label, err)

    async with client_scope(credentials) as client:
        # Several bulk requests in flight: a run of 5,000 events is 5 requests, and sent one after another the
        # request latency, not Klaviyo's limit, set the pace. The client's pacer keeps the rate within the limit.
        sent = await gather_limited(
            [
                functools.partial(
                    send_with_resend,
                    client,
                    "bulk_create_events",
                    [good[p] for p in positions],
                    build,
                    on_error=on_error,
                )
                for positions in chunks
            ],
            BULK_REQUESTS_IN_FLIGHT,
        )
        for part in sent:
            results.update(part)
    failures = sum(1 for r in results.values() if not r.ok)
    run_logger().info("bulk create events: %d events, %d failed", len(events), failures)
    return ordered(results, len(events))


async def get_events(
    credentials: CredentialsOrClient,
    *,
    metric_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    profile_id: str | None = None,
    include: Sequence[str] = (),
    page_size: int = constants.GET_EVENTS_PAGE_MAX,
    sort: str = "datetime",
) -> dict[str, list[dict[str, Any]]]:
    """All events in a window (cursor pagination followed to the end): ``{"data": [...], "included": [...]}``.
    ``since`` is inclusive and ``until`` exclusive, so consecutive polls neither skip nor repeat."""
    params: dict[str, Any] = {
        "filter": b.events_filter(metric_id, since=since, until=until, profile_id=profile_id),
        "page[size]": page_size,
        "sort": sort,
    }
    if include:
        params["include"] = ",".join(include)
    data: list[dict[str, Any]] = []
    included: dict[tuple[str, str], dict[str, Any]] = {}
    async with client_scope(credentials) as client:
        async for page in client.paginate("get_events", params):
            data.extend(page.get("data") or [])
            for res in page.get("included") or []:
                included.setdefault((res.get("type"), res.get("id")), res)
    return {"data": data, "included": list(included.values())}
