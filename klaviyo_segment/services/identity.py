"""Resolve Segment identities (email, phone, userId) to Klaviyo profile ids in few calls.

Policy when identifiers disagree: if email/phone and external_id (Segment userId) point at two different
profiles, we report an ``identity_conflict`` failure naming both ids. We never create a third profile, and we
merge only when asked (``merge=True``): the profile found by external_id is kept (userId is the stable key)
and the other one is merged into it, only if it carries no other userId (never merge two people).
``anonymous_id`` cannot be looked up (Klaviyo only knows it on event profiles), so an identity with nothing else
resolves to ``status="anonymous_only"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import phonenumbers

from klaviyo_segment.builders.klaviyo import merge_body
from klaviyo_segment.errors import ApiError, KlaviyoAPIError
from klaviyo_segment.outcomes import ItemResult
from klaviyo_segment.placeholders import is_placeholder
from klaviyo_segment.services.bulk import (
    CredentialsOrClient,
    client_scope,
    error_of,
    failed,
)
from klaviyo_segment.services.profiles import find_profiles

#: Lookup order matters for the conflict policy: external_id wins as merge destination.
FIELDS = ("external_id", "email", "phone_number")


class IdentityCache(Protocol):
    """Identifier key (``"email:a@b.com"``) -> profile id; the state store implements it later."""

    async def get_many(self, keys: Sequence[str]) -> dict[str, str]: ...

    async def put_many(self, mapping: Mapping[str, str]) -> None: ...

    async def forget_many(self, keys: Sequence[str]) -> None:
        """Drop stale entries (the profile was merged or deleted in Klaviyo)."""


class MemoryIdentityCache:
    """Per-run cache: enough to avoid repeated lookups inside one flow run."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    async def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        return {k: self.data[k] for k in keys if k in self.data}

    async def put_many(self, mapping: Mapping[str, str]) -> None:
        self.data.update(mapping)

    async def forget_many(self, keys: Sequence[str]) -> None:
        for key in keys:
            self.data.pop(key, None)


def normalize_phone(raw: str | None, default_region: str = "US") -> str | None:
    """E.164 or None; Klaviyo rejects phone numbers that are not valid E.164."""
    if not raw:
        return None
    try:
        parsed = phonenumbers.parse(str(raw), None if str(raw).strip().startswith("+") else default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def identifiers(identity: Mapping[str, Any], default_region: str = "US") -> tuple[dict[str, str], list[str]]:
    """Normalised lookup identifiers of one Segment identity (keys: email, phone/phone_number, user_id/userId,
    external_id) plus warnings for values that had to be dropped."""
    out: dict[str, str] = {}
    warnings: list[str] = []
    email = identity.get("email")
    if isinstance(email, str) and email.strip():
        out["email"] = email.strip().lower()
    raw_phone = identity.get("phone_number") or identity.get("phone")
    if raw_phone:
        phone = normalize_phone(str(raw_phone), default_region)
        if phone:
            out["phone_number"] = phone
        else:
            warnings.append("phone_unparseable")
    user_id = identity.get("external_id") or identity.get("user_id") or identity.get("userId")
    if user_id not in (None, ""):
        out["external_id"] = str(user_id)
    return out, warnings


def cache_key(field: str, value: str) -> str:
    return f"{field}:{value}"


async def _lookup(
    client: Any, parsed: list[tuple[dict[str, str], list[str]]], known: dict[str, str], cache: IdentityCache
) -> None:
    """Batched lookups of every identifier not in ``known``; what is found is cached."""
    for field in FIELDS:
        values = [v for ids, _ in parsed for f, v in ids.items() if f == field and cache_key(f, v) not in known]
        if values:
            found = await find_profiles(client, field, values)
            fresh = {cache_key(field, v): p["id"] for v, p in found.items()}
            known.update(fresh)
            await cache.put_many(fresh)


async def _forget(cache: IdentityCache, known: dict[str, str], keys: set[str]) -> None:
    for key in keys:
        known.pop(key, None)
    forget = getattr(cache, "forget_many", None)
    if forget is not None and keys:
        await forget(sorted(keys))


async def _drop_dead(client: Any, known: dict[str, str], cache: IdentityCache) -> None:
    """One ``any(id, [...])`` lookup: cached ids Klaviyo no longer has (merged away, deleted) are forgotten."""
    ids = sorted(set(known.values()))
    alive = await find_profiles(client, "id", [i for i in ids if not is_placeholder(i)])
    await _forget(cache, known, {k for k, v in known.items() if v not in alive and not is_placeholder(v)})


def _stale_conflicts(
    parsed: list[tuple[dict[str, str], list[str]]], known: dict[str, str], cached: set[str]
) -> set[str]:
    """Cached keys involved in a conflict: a merge in Klaviyo leaves the cache pointing at the source profile,
    which then looks like a second person. Those are looked up once more before a conflict is reported."""
    stale: set[str] = set()
    for ids, _ in parsed:
        keys = [cache_key(f, v) for f, v in ids.items() if cache_key(f, v) in known]
        if len({known[k] for k in keys}) > 1:
            stale.update(k for k in keys if k in cached)
    return stale


async def resolve_identities(
    identities: Sequence[Mapping[str, Any]],
    credentials: CredentialsOrClient,
    *,
    default_region: str = "US",
    cache: IdentityCache | None = None,
    merge: bool = False,
    verify_cached: bool = False,
) -> list[ItemResult]:
    """ok -> ``value={"profile_id": id|None, "status": "found"|"not_found"|"anonymous_only"|"merged",
    "identifiers": {...}, "warnings": [...]}``; a conflict is a failure with code ``identity_conflict``.

    Cached ids can be stale (a merge or deletion done in Klaviyo): a conflict involving cached ids is looked up
    again once before it is reported, and ``verify_cached`` (deletions: the id must be the live one) checks every
    cached id with one extra call."""
    cache = cache if cache is not None else MemoryIdentityCache()
    parsed = [identifiers(x, default_region) for x in identities]
    wanted = {cache_key(f, v) for ids, _ in parsed for f, v in ids.items()}
    known = await cache.get_many(sorted(wanted))
    cached = set(known)
    results: list[ItemResult] = []
    async with client_scope(credentials) as client:
        try:
            if verify_cached and known:
                await _drop_dead(client, known, cache)
            await _lookup(client, parsed, known, cache)
            stale = _stale_conflicts(parsed, known, cached)
            if stale:
                await _forget(cache, known, stale)
                await _lookup(client, parsed, known, cache)
        except KlaviyoAPIError as exc:
            return [failed(i, error_of(exc)) for i in range(len(identities))]
        for i, (ids, warnings) in enumerate(parsed):
            results.append(await _decide(client, i, ids, warnings, known, merge, cache))
    return results


async def refresh_identities(
    identities: Sequence[Mapping[str, Any]],
    credentials: CredentialsOrClient,
    *,
    cache: IdentityCache,
    default_region: str = "US",
) -> list[ItemResult]:
    """For a caller whose request to a cached profile id got 404 (or a conflict): forget these identities'
    cache entries and look them up once more."""
    keys = {cache_key(f, v) for x in identities for f, v in identifiers(x, default_region)[0].items()}
    await _forget(cache, {}, keys)
    return await resolve_identities(identities, credentials, default_region=default_region, cache=cache)


async def _decide(
    client: Any,
    index: int,
    ids: dict[str, str],
    warnings: list[str],
    known: dict[str, str],
    merge: bool,
    cache: IdentityCache,
) -> ItemResult:
    """Apply the documented policy to one identity."""
    base = {"identifiers": ids, "warnings": warnings}
    if not ids:
        return ItemResult(index=index, ok=True, value={**base, "profile_id": None, "status": "anonymous_only"})
    by_field = {f: known[cache_key(f, v)] for f, v in ids.items() if cache_key(f, v) in known}
    distinct = list(dict.fromkeys(by_field[f] for f in FIELDS if f in by_field))
    if len(distinct) > 1 and all(is_placeholder(d) for d in distinct):
        distinct = distinct[:1]  # preview: one person's placeholders per field are not a conflict
    if not distinct:
        return ItemResult(index=index, ok=True, value={**base, "profile_id": None, "status": "not_found"})
    if len(distinct) == 1:
        return ItemResult(index=index, ok=True, value={**base, "profile_id": distinct[0], "status": "found"})
    if not merge:
        return ItemResult(
            index=index,
            ok=False,
            value={**base, "profile_ids": by_field},
            error=ApiError(
                code="identity_conflict",
                meta={"profile_ids": by_field},
                detail="identifiers belong to different Klaviyo profiles",
            ),
        )
    destination = distinct[0]
    try:  # never merge another person: a source carrying a different userId is a conflict, not a merge
        alive = await find_profiles(client, "id", distinct)
    except KlaviyoAPIError as exc:
        return failed(index, error_of(exc))
    owners = {d: ((alive.get(d) or {}).get("attributes") or {}).get("external_id") for d in distinct[1:]}
    if any(o not in (None, ids.get("external_id")) for o in owners.values()):
        return ItemResult(
            index=index,
            ok=False,
            value={**base, "profile_ids": by_field},
            error=ApiError(
                code="identity_conflict",
                meta={"profile_ids": by_field},
                detail="identifiers belong to another person's Klaviyo profile",
            ),
        )
    for source in distinct[1:]:
        try:
            await client.request("merge_profiles", json=merge_body(destination, source))
        except KlaviyoAPIError as exc:
            return failed(index, error_of(exc))
    remapped = {cache_key(f, v): destination for f, v in ids.items()}
    known.update(remapped)
    await cache.put_many(remapped)
    return ItemResult(
        index=index, ok=True, value={**base, "profile_id": destination, "status": "merged", "merged": distinct[1:]}
    )
