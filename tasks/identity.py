"""Identity resolution task (Prefect wrapper of ``services.identity``, which documents the conflict policy)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prefect import task

from klaviyo_segment.outcomes import ItemResult
from klaviyo_segment.services import identity as svc
from klaviyo_segment.services.bulk import CredentialsOrClient
from klaviyo_segment.tasks._common import TASK_OPTIONS


@task(name="klaviyo-resolve-identities", **TASK_OPTIONS)
async def resolve_identities(
    identities: Sequence[Mapping[str, Any]],
    credentials: CredentialsOrClient,
    *,
    default_region: str = "US",
    cache: svc.IdentityCache | None = None,
    merge: bool = False,
    verify_cached: bool = False,
) -> list[ItemResult]:
    """See :func:`klaviyo_segment.services.identity.resolve_identities`."""
    return await svc.resolve_identities(
        identities, credentials, default_region=default_region, cache=cache, merge=merge, verify_cached=verify_cached
    )
