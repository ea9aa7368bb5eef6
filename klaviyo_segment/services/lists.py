"""List operations: membership add/remove, list lookup and get-or-create (creation is capped at 150/day)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
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
    invalid,
    ordered,
    pointer_index,
    prevalidate,
    send_with_resend,
)

#: name -> list id per account, for the life of the process: list creation is too scarce to repeat lookups.
_LIST_CACHE: dict[str, dict[str, str]] = {}
_CACHE_LOCK = threading.Lock()


async def _membership(
    operation_id: str, list_id: str, profile_ids: Sequence[str], credentials: CredentialsOrClient
) -> list[ItemResult]:
    good, results = prevalidate(profile_ids, lambda i: b.list_relationships_body([i]))

    def build(labels: list[int]) -> tuple[Any, Any]:
        def locate(pointer: str | None) -> list[int]:
            idx = pointer_index(pointer, r"^/data/(\d+)")
            return [labels[idx]] if idx is not None and idx < len(labels) else []

        return b.list_relationships_body([profile_ids[i] for i in labels]), locate

    async with client_scope(credentials) as client:
        for start in range(0, len(good), constants.LIST_MEMBERSHIP_MAX):
            results.update(
                await send_with_resend(
                    client,
                    operation_id,
                    good[start : start + constants.LIST_MEMBERSHIP_MAX],
                    build,
                    path_params={"id": list_id},
                )
            )
    return ordered(results, len(profile_ids))


async def add_profiles_to_list(
    list_id: str, profile_ids: Sequence[str], credentials: CredentialsOrClient
) -> list[ItemResult]:
    """Add profile ids to a list, <=1000 per call. This does not grant consent: use subscribe for that."""
    return await _membership("add_profiles_to_list", list_id, profile_ids, credentials)


async def remove_profiles_from_list(
    list_id: str, profile_ids: Sequence[str], credentials: CredentialsOrClient
) -> list[ItemResult]:
    """Remove profile ids from a list, <=1000 per call. This does not unsubscribe them."""
    return await _membership("remove_profiles_from_list", list_id, profile_ids, credentials)


async def _fetch_lists(client: KlaviyoClient, names: Sequence[str] = ()) -> list[dict[str, Any]]:
    lists: list[dict[str, Any]] = []
    if not names:
        async for page in client.paginate("get_lists", {"page[size]": constants.GET_LISTS_PAGE_MAX}):
            lists.extend(page.get("data") or [])
        return lists
    unique = list(dict.fromkeys(names))
    for start in range(0, len(unique), 50):
        params = {
            "filter": b.filter_any("name", unique[start : start + 50]),
            "page[size]": constants.GET_LISTS_PAGE_MAX,
        }
        async for page in client.paginate("get_lists", params):
            lists.extend(page.get("data") or [])
    return lists


async def get_lists(credentials: CredentialsOrClient, *, names: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Every list (or only those with the given names), following pagination (10 per page)."""
    async with client_scope(credentials) as client:
        return await _fetch_lists(client, names)


def clear_list_cache() -> None:
    with _CACHE_LOCK:
        _LIST_CACHE.clear()


async def get_or_create_lists(
    names: Sequence[str],
    credentials: CredentialsOrClient,
    *,
    create: bool = True,
    opt_in_process: str | None = None,
    max_creates: int = 10,
) -> list[ItemResult]:
    """Resolve list names to ids (``value={"id", "created"}``), creating each missing name at most once.

    Creation is capped by Klaviyo at 150/day, so results are cached per account for the process, a failed
    create is never retried in a loop, and one call creates at most ``max_creates`` lists.
    """
    async with client_scope(credentials) as client:
        account = client.credentials.account_key
        with _CACHE_LOCK:
            cache = _LIST_CACHE.setdefault(account, {})
            missing = [n for n in dict.fromkeys(names) if n and n not in cache]
        if missing:
            try:
                found = await _fetch_lists(client, missing)
            except KlaviyoAPIError as exc:
                return [failed(i, error_of(exc)) for i in range(len(names))]
            with _CACHE_LOCK:
                for item in found:
                    name = (item.get("attributes") or {}).get("name")
                    if name in missing:
                        cache.setdefault(name, item["id"])
        created: dict[str, str] = {}
        errors: dict[str, ItemResult] = {}
        for name in [n for n in missing if n not in cache] if create else []:
            if len(created) >= max_creates:
                errors[name] = failed(
                    0,
                    ApiError(code="max_creates_reached", detail=f"not creating more than {max_creates} lists per call"),
                )
                continue
            try:
                response = await client.request(
                    "create_list", json=b.create_list_body(name, opt_in_process=opt_in_process)
                )
            except KlaviyoAPIError as exc:
                errors[name] = failed(0, error_of(exc))
                continue
            except ValueError as exc:
                errors[name] = invalid(0, exc)
                continue
            created[name] = response.json()["data"]["id"]
            with _CACHE_LOCK:
                cache[name] = created[name]
    out: list[ItemResult] = []
    for i, name in enumerate(names):
        if name in errors:
            out.append(errors[name].model_copy(update={"index": i}))
        elif name in cache:
            out.append(ItemResult(index=i, ok=True, value={"id": cache[name], "created": name in created}))
        else:
            out.append(ItemResult(index=i, ok=True, value=None))
    return out
