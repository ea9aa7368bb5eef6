"""Consent operations: subscribe (<=1000 per job) and unsubscribe (<=100 per job)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from klaviyo_segment import constants
from klaviyo_segment.builders import klaviyo as b
from klaviyo_segment.outcomes import ItemResult
from klaviyo_segment.services.bulk import (
    Builder,
    CredentialsOrClient,
    client_scope,
    ordered,
    pointer_index,
    prevalidate,
    send_with_resend,
)

_POINTER = r"/profiles/data/(\d+)"


async def _jobs(
    operation_id: str,
    profiles: Sequence[Mapping[str, Any]],
    max_per_job: int,
    make_body: Any,
    credentials: CredentialsOrClient,
) -> list[ItemResult]:
    good, results = prevalidate(profiles, lambda p: make_body([p]))

    def build(labels: list[int]) -> tuple[Any, Any]:
        def locate(pointer: str | None) -> list[int]:
            idx = pointer_index(pointer, _POINTER)
            return [labels[idx]] if idx is not None and idx < len(labels) else []

        return make_body([profiles[i] for i in labels]), locate

    builder: Builder = build
    async with client_scope(credentials) as client:
        for start in range(0, len(good), max_per_job):
            results.update(await send_with_resend(client, operation_id, good[start : start + max_per_job], builder))
    return ordered(results, len(profiles))


async def subscribe_profiles(
    profiles: Sequence[Mapping[str, Any]],
    credentials: CredentialsOrClient,
    *,
    list_id: str | None = None,
    custom_source: str | None = None,
    historical_import: bool = False,
    sms: bool = False,
) -> list[ItemResult]:
    """Subscribe jobs (items: email, phone_number, id, consented_at). Subscribing clears suppressions: callers
    must check consent state first and never subscribe on replays of old events."""
    return await _jobs(
        "bulk_subscribe_profiles",
        profiles,
        constants.SUBSCRIBE_MAX,
        lambda ps: b.subscribe_body(
            ps, list_id=list_id, custom_source=custom_source, historical_import=historical_import, sms=sms
        ),
        credentials,
    )


async def unsubscribe_profiles(
    profiles: Sequence[Mapping[str, Any]],
    credentials: CredentialsOrClient,
    *,
    list_id: str | None = None,
    sms: bool = False,
) -> list[ItemResult]:
    """Unsubscribe jobs (items: email, phone_number). Without ``list_id`` the unsubscribe is global."""
    return await _jobs(
        "bulk_unsubscribe_profiles",
        profiles,
        constants.UNSUBSCRIBE_MAX,
        lambda ps: b.unsubscribe_body(ps, list_id=list_id, sms=sms),
        credentials,
    )
