"""Consent tasks: subscribe and unsubscribe jobs (Prefect wrappers of ``services.subscriptions``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prefect import task

from klaviyo_segment.outcomes import ItemResult
from klaviyo_segment.services import subscriptions as svc
from klaviyo_segment.services.bulk import CredentialsOrClient
from klaviyo_segment.tasks._common import TASK_OPTIONS


@task(name="klaviyo-subscribe-profiles", **TASK_OPTIONS)
async def subscribe_profiles(
    profiles: Sequence[Mapping[str, Any]],
    credentials: CredentialsOrClient,
    *,
    list_id: str | None = None,
    custom_source: str | None = None,
    historical_import: bool = False,
    sms: bool = False,
) -> list[ItemResult]:
    """See :func:`klaviyo_segment.services.subscriptions.subscribe_profiles`."""
    return await svc.subscribe_profiles(
        profiles,
        credentials,
        list_id=list_id,
        custom_source=custom_source,
        historical_import=historical_import,
        sms=sms,
    )


@task(name="klaviyo-unsubscribe-profiles", **TASK_OPTIONS)
async def unsubscribe_profiles(
    profiles: Sequence[Mapping[str, Any]],
    credentials: CredentialsOrClient,
    *,
    list_id: str | None = None,
    sms: bool = False,
) -> list[ItemResult]:
    """See :func:`klaviyo_segment.services.subscriptions.unsubscribe_profiles`."""
    return await svc.unsubscribe_profiles(profiles, credentials, list_id=list_id, sms=sms)
