"""Data-privacy deletion jobs: one profile per job (by Klaviyo id, email or phone number)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from klaviyo_segment.builders import klaviyo as b
from klaviyo_segment.outcomes import ItemResult
from klaviyo_segment.services.bulk import CredentialsOrClient, send_each


async def request_profile_deletions(
    identities: Sequence[Mapping[str, str]], credentials: CredentialsOrClient, *, concurrency: int = 3
) -> list[ItemResult]:
    """One deletion job per item (``{"id"}``, ``{"email"}`` or ``{"phone_number"}``); external ids must be
    resolved to profile ids first (see ``services.identity``). The endpoint is slow-tier (3/s, 60/min)."""

    def body(identity: Mapping[str, str]) -> dict[str, Any]:
        return b.deletion_body(
            profile_id=identity.get("id"), email=identity.get("email"), phone_number=identity.get("phone_number")
        )

    return await send_each(credentials, "request_profile_deletion", identities, body, concurrency)
