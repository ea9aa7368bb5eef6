"""Profile operations: upsert one by one, lookup by identifiers (batched ``any()`` filters), consent state,
merge. Bulk import jobs live in :mod:`klaviyo_segment.services.imports`."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from klaviyo_segment import constants
from klaviyo_segment.builders import klaviyo as b
from klaviyo_segment.clients.klaviyo import KlaviyoClient
from klaviyo_segment.errors import ApiError, KlaviyoAPIError
from klaviyo_segment.outcomes import ItemResult
from klaviyo_segment.services.bulk import (
    CredentialsOrClient,
    client_scope,
    error_of,
    failed,
    gather_limited,
    invalid,
)

#: Values per ``any()`` filter: one page (100) answers the whole chunk, and the URL stays well under 8 KB.
LOOKUP_CHUNK = 100
#: Lookup requests one call keeps in flight (get_profiles is L tier: 75/s burst, 700/min planned).
LOOKUPS_IN_FLIGHT = 4
LOOKUP_URL_BUDGET = 6000


async def _upsert_one(client: KlaviyoClient, index: int, item: Mapping[str, Any]) -> ItemResult:
    attrs = {k: v for k, v in item.items() if k not in ("id", "meta")}
    try:
        body = b.profile_import_body(attrs, profile_id=item.get("id"), meta=item.get("meta"))
    except (ValueError, TypeError) as exc:
        return invalid(index, exc)
    if b.json_size(body) > constants.PROFILE_PAYLOAD_MAX_BYTES:
        return invalid(index, ValueError("profile: payload exceeds Klaviyo's 100 KB limit"))
    try:
        response = await client.request("create_or_update_profile", json=body)
    except KlaviyoAPIError as exc:
        err = error_of(exc)
        dup = err.meta.get("duplicate_profile_id") if err.code == "duplicate_profile" else None
        return ItemResult(index=index, ok=False, error=err, value={"duplicate_profile_id": dup} if dup else None)
    data = response.json().get("data") or {}
    return ItemResult(index=index, ok=True, value={"id": data.get("id"), "created": response.status_code == 201})


async def upsert_profiles(
    profiles: Sequence[Mapping[str, Any]], credentials: CredentialsOrClient, *, concurrency: int = 8
) -> list[ItemResult]:
    """``profile-import`` per profile (items: attributes plus optional ``id``/``meta``).

    ok -> ``value={"id", "created"}``. A 409 ``duplicate_profile`` (identifiers owned by different profiles) is
    a failure whose ``value`` carries ``duplicate_profile_id`` for the identity policy to act on.
    """
    async with client_scope(credentials) as client:
        return await gather_limited(
            [functools.partial(_upsert_one, client, i, p) for i, p in enumerate(profiles)], concurrency
        )


def lookup_chunks(values: Sequence[str]) -> list[list[str]]:
    """Unique values split so each ``any()`` filter fits one page and a sane URL length."""
    unique = list(dict.fromkeys(v for v in values if v))
    chunks, _ = b.chunk(
        unique,
        max_count=LOOKUP_CHUNK,
        max_bytes=LOOKUP_URL_BUDGET,
        envelope_bytes=0,
        size_of=lambda v: len(b.quote_filter_value(v)) * 3,
    )
    return [[unique[i] for i in c] for c in chunks]


def match_key(field: str, value: Any) -> Any:
    """How lookups key a value: emails compare case- and space-insensitively, like Klaviyo does."""
    return value.strip().lower() if field == "email" and isinstance(value, str) else value


async def find_profiles(
    client: KlaviyoClient, field: str, values: Sequence[str], *, additional_fields: Sequence[str] = ()
) -> dict[Any, dict[str, Any]]:
    """Profiles keyed by the (normalised) identifier value, in few calls; unknown values are simply absent.
    Several chunks are looked up at once (:data:`LOOKUPS_IN_FLIGHT`): one after another, the request latency, not
    Klaviyo's limit, set the pace of sync-identify's identity check; the client's pacer keeps the limit."""

    async def pages(part: list[str]) -> list[dict[str, Any]]:
        params = b.get_profiles_params(field, part, additional_fields=additional_fields)
        return [page async for page in client.paginate("get_profiles", params)]

    chunks = lookup_chunks(values)
    results = await gather_limited([functools.partial(pages, part) for part in chunks], LOOKUPS_IN_FLIGHT)
    found: dict[Any, dict[str, Any]] = {}
    for chunk_pages in results:  # chunk order: the first profile seen for a value wins, as before
        for page in chunk_pages:
            for profile in page.get("data") or []:
                value = profile.get("id") if field == "id" else (profile.get("attributes") or {}).get(field)
                if value is not None:
                    found.setdefault(match_key(field, value), profile)
    return found


async def get_profiles_by_identifiers(
    values: Sequence[str],
    credentials: CredentialsOrClient,
    *,
    field: str = "email",
    additional_fields: Sequence[str] = (),
) -> list[ItemResult]:
    """Batched ``any(field,[...])`` lookups (email, phone_number, external_id or id), every page followed.
    ok -> ``value`` is the profile resource, or None when Klaviyo has no such profile."""
    async with client_scope(credentials) as client:
        try:
            found = await find_profiles(client, field, values, additional_fields=additional_fields)
        except (KlaviyoAPIError, ValueError) as exc:
            err = error_of(exc) if isinstance(exc, KlaviyoAPIError) else ApiError(code="invalid_input", detail=str(exc))
            return [failed(i, err) for i in range(len(values))]
    return [ItemResult(index=i, ok=True, value=found.get(match_key(field, v))) for i, v in enumerate(values)]


async def get_profile_consent(
    values: Sequence[str], credentials: CredentialsOrClient, *, field: str = "id"
) -> list[ItemResult]:
    """Consent state (``attributes.subscriptions``); read it before subscribing, since subscribe clears
    suppressions. ok -> ``value`` is the subscriptions object, or None for an unknown profile."""
    results = await get_profiles_by_identifiers(values, credentials, field=field, additional_fields=("subscriptions",))
    for r in results:
        if r.ok and r.value is not None:
            r.value = (r.value.get("attributes") or {}).get("subscriptions")
    return results


async def merge_profiles(
    pairs: Sequence[tuple[str, str]], credentials: CredentialsOrClient, *, concurrency: int = 4
) -> list[ItemResult]:
    """Merge each ``(destination_id, source_id)``; the source is deleted asynchronously by Klaviyo."""

    async def one(client: KlaviyoClient, index: int, destination: str, source: str) -> ItemResult:
        try:
            body = b.merge_body(destination, source)
        except ValueError as exc:
            return invalid(index, exc)
        try:
            await client.request("merge_profiles", json=body)
        except KlaviyoAPIError as exc:
            return failed(index, error_of(exc))
        return ItemResult(index=index, ok=True, value={"id": destination, "merged": source})

    async with client_scope(credentials) as client:
        return await gather_limited(
            [functools.partial(one, client, i, p[0], p[1]) for i, p in enumerate(pairs)], concurrency
        )
