"""Event tasks: create one by one, bulk create jobs, read events back (Prefect wrappers of
``services.events``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from prefect import task

from klaviyo_segment import constants
from klaviyo_segment.outcomes import ItemResult
from klaviyo_segment.services import events as svc
from klaviyo_segment.services.bulk import CredentialsOrClient
from klaviyo_segment.tasks._common import TASK_OPTIONS


@task(name="klaviyo-create-events", **TASK_OPTIONS)
async def create_events(
    events: Sequence[Mapping[str, Any]], credentials: CredentialsOrClient, *, concurrency: int = 16
) -> list[ItemResult]:
    """See :func:`klaviyo_segment.services.events.create_events`."""
    return await svc.create_events(events, credentials, concurrency=concurrency)


@task(name="klaviyo-bulk-create-events", **TASK_OPTIONS)
async def bulk_create_events(events: Sequence[Mapping[str, Any]], credentials: CredentialsOrClient) -> list[ItemResult]:
    """See :func:`klaviyo_segment.services.events.bulk_create_events`."""
    return await svc.bulk_create_events(events, credentials)


@task(name="klaviyo-get-events", **TASK_OPTIONS)
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
    """See :func:`klaviyo_segment.services.events.get_events`."""
    return await svc.get_events(
        credentials,
        metric_id=metric_id,
        since=since,
        until=until,
        profile_id=profile_id,
        include=include,
        page_size=page_size,
        sort=sort,
    )
