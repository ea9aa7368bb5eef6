"""Data-privacy deletion jobs: one profile per job (by Klaviyo id, email or phone number)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prefect import task

from klaviyo_segment.builders import klaviyo as b
from klaviyo_segment.errors import KlaviyoAPIError
from klaviyo_segment.outcomes import ItemResult
from klaviyo_segment.tasks._common import (
    TASK_OPTIONS, CredentialsOrClient, client_scope, error_of, failed, gather_limited, invalid,
)


@task(name="klaviyo-request-profile-deletions", **TASK_OPTIONS)
async def request_profile_deletions(identities: Sequence[Mapping[str, str]], credentials: CredentialsOrClient, *,
                                    concurrency: int = 3) -> list[ItemResult]:
    """One deletion job per item (``{"id"}``, ``{"email"}`` or ``{"phone_number"}``); external ids must be
    resolved to profile ids first (see ``tasks.identity``). The endpoint is slow-tier (3/s, 60/min)."""
    async def one(index: int, identity: Mapping[str, str]) -> ItemResult:
        try:
            body = b.deletion_body(profile_id=identity.get("id"), email=identity.get("email"),
                                   phone_number=identity.get("phone_number"))
        except ValueError as exc:
            return invalid(index, exc)
        try:
            await client.request("request_profile_deletion", json=body)
        except KlaviyoAPIError as exc:
            return failed(index, error_of(exc))
        return ItemResult(index=index, ok=True)

    async with client_scope(credentials) as client:
        return await gather_limited([lambda i=i, x=x: one(i, x) for i, x in enumerate(identities)], concurrency)
