"""Data-privacy deletion jobs (Prefect wrapper of ``services.privacy``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prefect import task

from klaviyo_segment.outcomes import ItemResult
from klaviyo_segment.services import privacy as svc
from klaviyo_segment.services.bulk import CredentialsOrClient
from klaviyo_segment.tasks._common import TASK_OPTIONS


@task(name="klaviyo-request-profile-deletions", **TASK_OPTIONS)
async def request_profile_deletions(
    identities: Sequence[Mapping[str, str]], credentials: CredentialsOrClient, *, concurrency: int = 3
) -> list[ItemResult]:
    """See :func:`klaviyo_segment.services.privacy.request_profile_deletions`."""
    return await svc.request_profile_deletions(identities, credentials, concurrency=concurrency)
