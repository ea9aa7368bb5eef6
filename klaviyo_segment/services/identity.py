"""Resolve Segment identities (email, phone, userId) to Klaviyo profile ids in few calls.

Policy when identifiers disagree: if email/phone and external_id (Segment userId) point at two different
profiles, we report an ``identity_conflict`` failure naming both ids. We never create a third profile, and we
merge only when asked (``merge=True``): the profile found by external_id is kept (userId is the stable key)
and the other one is merged into it. ``anonymous_id`` cannot be looked up (Klaviyo only knows it on event
profiles), so an identity with nothing else resolves to ``status="anonymous_only"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import phonenumbers

from klaviyo_segment.builders.klaviyo import merge_body
from klaviyo_segment.errors import ApiError, KlaviyoAPIError
from klaviyo_segment.outcomes import ItemResult
from klaviyo_segment.preview import is_placeholder
from klaviyo_segment.services.bulk import CredentialsOrClient, client_scope, error_of, failed
from klaviyo_segment.services.profiles import find_profiles

#: Lookup order matters for the conflict policy: external_id wins as merge destination.
FIELDS = ("external_id", "email", "phone_number")


class IdentityCache(Protocol):
    """Identifier key (``"email:a@b.com"``) -> profile id; the state store implements it later."""

    async def get_many(self, keys: Sequence[str]) -> dict[str, str]: ...

    async def put_many(self, mapping: Mapping[str, str]) -> None: ...


class MemoryIdentityCache:
    """Per-run cache: enough to avoid repeated lookups inside one flow run."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    async def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        return {k: self.data[k] for k in keys if k in self.data}

    async def put_many(self, mapping: Mapping[str, str]) -> None:
        self.data.update(mapping)


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


async def resolve_identities(identities: Sequence[Mapping[str, Any]], credentials: CredentialsOrClient, *,
                             default_region: str = "US", cache: IdentityCache | None = None,
                             merge: bool = False) -> list[ItemResult]:
    """ok -> ``value={"profile_id": id|None, "status": "found"|"not_found"|"anonymous_only"|"merged",
    "identifiers": {...}, "warnings": [...]}``; a conflict is a failure with code ``identity_conflict``."""
    cache = cache if cache is not None else MemoryIdentityCache()
    parsed = [identifiers(x, default_region) for x in identities]
    wanted = {cache_key(f, v) for ids, _ in parsed for f, v in ids.items()}
    known = await cache.get_many(sorted(wanted))
    results: list[ItemResult] = []
    async with client_scope(credentials) as client:
        try:
            for field in FIELDS:
                values = [v for ids, _ in parsed for f, v in ids.items()
                          if f == field and cache_key(f, v) not in known]
                if values:
                    found = await find_profiles(client, field, values)
                    fresh = {cache_key(field, v): p["id"] for v, p in found.items()}
                    known.update(fresh)
                    await cache.put_many(fresh)
        except KlaviyoAPIError as exc:
            return [failed(i, error_of(exc)) for i in range(len(identities))]
        for i, (ids, warnings) in enumerate(parsed):
            results.append(await _decide(client, i, ids, warnings, known, merge, cache))
    return results


async def _decide(client: Any, index: int, ids: dict[str, str], warnings: list[str], known: dict[str, str],
                  merge: bool, cache: IdentityCache) -> ItemResult:
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
        return ItemResult(index=index, ok=False, value={**base, "profile_ids": by_field},
                          error=ApiError(code="identity_conflict", meta={"profile_ids": by_field},
                                         detail="identifiers belong to different Klaviyo profiles"))
    destination = distinct[0]
    for source in distinct[1:]:
        try:
            await client.request("merge_profiles", json=merge_body(destination, source))
        except KlaviyoAPIError as exc:
            return failed(index, error_of(exc))
    remapped = {cache_key(f, v): destination for f, v in ids.items()}
    known.update(remapped)
    await cache.put_many(remapped)
    return ItemResult(index=index, ok=True, value={**base, "profile_id": destination, "status": "merged",
                                                   "merged": distinct[1:]})
