"""Profile tasks: upsert, bulk import job, lookup by identifiers, consent state, merge (Prefect wrappers of
``services.profiles`` and ``services.imports``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prefect import task

from klaviyo_segment.outcomes import ItemResult
from klaviyo_segment.services import imports
from klaviyo_segment.services import profiles as svc
from klaviyo_segment.services.bulk import CredentialsOrClient
from klaviyo_segment.tasks._common import TASK_OPTIONS


@task(name="klaviyo-upsert-profiles", **TASK_OPTIONS)
async def upsert_profiles(
    profiles: Sequence[Mapping[str, Any]], credentials: CredentialsOrClient, *, concurrency: int = 8
) -> list[ItemResult]:
    """See :func:`klaviyo_segment.services.profiles.upsert_profiles`."""
    return await svc.upsert_profiles(profiles, credentials, concurrency=concurrency)


@task(name="klaviyo-bulk-import-profiles", **TASK_OPTIONS)
async def bulk_import_profiles(
    profiles: Sequence[Mapping[str, Any]],
    credentials: CredentialsOrClient,
    *,
    list_ids: Sequence[str] = (),
    poll_interval: float = 2.0,
    timeout: float = 900.0,
) -> list[ItemResult]:
    """See :func:`klaviyo_segment.services.imports.bulk_import_profiles`."""
    return await imports.bulk_import_profiles(
        profiles, credentials, list_ids=list_ids, poll_interval=poll_interval, timeout=timeout
    )


@task(name="klaviyo-get-profiles", **TASK_OPTIONS)
async def get_profiles_by_identifiers(
    values: Sequence[str],
    credentials: CredentialsOrClient,
    *,
    field: str = "email",
    additional_fields: Sequence[str] = (),
) -> list[ItemResult]:
    """See :func:`klaviyo_segment.services.profiles.get_profiles_by_identifiers`."""
    return await svc.get_profiles_by_identifiers(values, credentials, field=field, additional_fields=additional_fields)


@task(name="klaviyo-get-profile-consent", **TASK_OPTIONS)
async def get_profile_consent(
    values: Sequence[str], credentials: CredentialsOrClient, *, field: str = "id"
) -> list[ItemResult]:
    """See :func:`klaviyo_segment.services.profiles.get_profile_consent`."""
    return await svc.get_profile_consent(values, credentials, field=field)


@task(name="klaviyo-merge-profiles", **TASK_OPTIONS)
async def merge_profiles(
    pairs: Sequence[tuple[str, str]], credentials: CredentialsOrClient, *, concurrency: int = 4
) -> list[ItemResult]:
    """See :func:`klaviyo_segment.services.profiles.merge_profiles`."""
    return await svc.merge_profiles(pairs, credentials, concurrency=concurrency)
