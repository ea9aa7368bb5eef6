"""List membership requested on identify calls (sync-identify), as Segment's Upsert Profile action does it.

Users coming from Segment's Klaviyo destinations send the list either as ``integrations.Klaviyo.listId`` (the
classic destination's per-message override, which Segment's Actions destination keeps as ``override_list_id``)
or as a ``list_id`` trait/property (the action's ``list_id`` field). The override wins, as in Segment's code.
The profile is upserted first, then added to the list by id (list relationships take ids, not emails).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from klaviyo_segment import flowkit
from klaviyo_segment.outcomes import ItemResult
from klaviyo_segment.runtime import FlowEnv

#: The trait/property that names a list on identify; never copied into profile properties.
LIST_ID_TRAIT = "list_id"


def list_id_of(message: Mapping[str, Any]) -> str | None:
    """``integrations.Klaviyo.listId`` (or under "Klaviyo (Actions)"), else ``traits.list_id``, else
    ``properties.list_id``."""
    integrations = message.get("integrations")
    if isinstance(integrations, Mapping):
        for name in ("Klaviyo", "Klaviyo (Actions)"):
            options = integrations.get(name)
            if isinstance(options, Mapping) and options.get("listId"):
                return str(options["listId"])
    for section in ("traits", "properties"):
        values = message.get(section)
        if (
            isinstance(values, Mapping)
            and isinstance(values.get(LIST_ID_TRAIT), (str, int))
            and str(values[LIST_ID_TRAIT]).strip()
        ):
            return str(values[LIST_ID_TRAIT]).strip()
    return None


async def add_to_lists(env: FlowEnv, wanted: Sequence[tuple[str, Mapping[str, Any], ItemResult]]) -> dict[int, str]:
    """``wanted`` = (list id, upserted attributes, upsert result) per request. Returns request position ->
    failure reason for the ones whose list add failed (the others were added)."""
    from klaviyo_segment.tasks.identity import resolve_identities
    from klaviyo_segment.tasks.klaviyo_lists import add_profiles_to_list

    failures: dict[int, str] = {}
    ids: dict[int, str] = {}
    lookup: list[int] = []
    for pos, (_, _attrs, result) in enumerate(wanted):
        pid = (result.value or {}).get("id") if result.value else None
        if pid:
            ids[pos] = pid
        else:
            lookup.append(pos)  # a bulk import job returns no ids: look the profiles up
    if lookup:
        people = [
            {
                "email": wanted[p][1].get("email"),
                "phone": wanted[p][1].get("phone_number"),
                "user_id": wanted[p][1].get("external_id"),
            }
            for p in lookup
        ]
        found = await env.call(
            resolve_identities,
            [{k: v for k, v in x.items() if v} for x in people],
            env.klaviyo,
            default_region=env.config.phone_default_country,
            cache=flowkit.StoreIdentityCache(env.store),
        )
        for pos, result in zip(lookup, found, strict=True):
            pid = (result.value or {}).get("profile_id") if result.ok else None
            if pid:
                ids[pos] = pid
            else:
                failures[pos] = f"list add failed: profile not found after upsert ({flowkit.describe(result.error)})"
    by_list: dict[str, list[int]] = {}
    for pos in ids:
        by_list.setdefault(wanted[pos][0], []).append(pos)
    for list_id, positions in by_list.items():
        profile_ids = list(dict.fromkeys(ids[p] for p in positions))
        results = await env.call(add_profiles_to_list, list_id, profile_ids, env.klaviyo)
        by_id = dict(zip(profile_ids, results, strict=True))
        for pos in positions:
            result = by_id[ids[pos]]
            if not result.ok:
                failures[pos] = f"list add failed: {flowkit.describe(result.error)}"
    return failures
