"""List tasks: membership add/remove, list lookup and get-or-create (Prefect wrappers of ``services.lists``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import task

from klaviyo_segment.outcomes import ItemResult
from klaviyo_segment.services import lists as svc
from klaviyo_segment.services.bulk import CredentialsOrClient
from klaviyo_segment.tasks._common import TASK_OPTIONS


@task(name="klaviyo-add-profiles-to-list", **TASK_OPTIONS)
async def add_profiles_to_list(
    list_id: str, profile_ids: Sequence[str], credentials: CredentialsOrClient
) -> list[ItemResult]:
    """See :func:`klaviyo_segment.services.lists.add_profiles_to_list`."""
    return await svc.add_profiles_to_list(list_id, profile_ids, credentials)


@task(name="klaviyo-remove-profiles-from-list", **TASK_OPTIONS)
async def remove_profiles_from_list(
    list_id: str, profile_ids: Sequence[str], credentials: CredentialsOrClient
) -> list[ItemResult]:
    """See :func:`klaviyo_segment.services.lists.remove_profiles_from_list`."""
    return await svc.remove_profiles_from_list(list_id, profile_ids, credentials)


@task(name="klaviyo-get-lists", **TASK_OPTIONS)
async def get_lists(credentials: CredentialsOrClient, *, names: Sequence[str] = ()) -> list[dict[str, Any]]:
    """See :func:`klaviyo_segment.services.lists.get_lists`."""
    return await svc.get_lists(credentials, names=names)


@task(name="klaviyo-get-or-create-lists", **TASK_OPTIONS)
async def get_or_create_lists(
    names: Sequence[str],
    credentials: CredentialsOrClient,
    *,
    create: bool = True,
    opt_in_process: str | None = None,
    max_creates: int = 10,
) -> list[ItemResult]:
    """See :func:`klaviyo_segment.services.lists.get_or_create_lists`."""
    return await svc.get_or_create_lists(
        names, credentials, create=create, opt_in_process=opt_in_process, max_creates=max_creates
    )
