"""Per-(person, state) changes shared by the membership-shaped flows (sync-audiences, churn-winback,
onboard-new-users).

Segment redelivers and reorders, so each message becomes one or more ``Change`` objects keyed by a version
key; the steps below (order, resolve profiles, apply list membership, record versions, settle outcomes) move
changes through the same states in every flow, which keeps "newest change wins" and the outcome wording
identical. Layer: like ``flowkit``, this module may import services, run tasks (``env.call``), use the store and
runtime, never a flow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from klaviyo_segment import flowkit
from klaviyo_segment.errors import ApiError
from klaviyo_segment.flowkit import alias_identity, resolve_aliases
from klaviyo_segment.jsondict import obj
from klaviyo_segment.mapping import ProfileMapping
from klaviyo_segment.outcomes import ItemResult, Outcome, Status
from klaviyo_segment.runtime import FlowEnv, Item, outcome
from klaviyo_segment.segment_spec import SegmentMessage
from klaviyo_segment.tasks.identity import resolve_identities
from klaviyo_segment.tasks.klaviyo_lists import add_profiles_to_list, remove_profiles_from_list

SUPERSEDED = "superseded by a newer change"
OLDER = "older than the applied change"


@dataclass
class Change:
    """One state change a message asks for; a message may carry several (identify with several audiences)."""

    item: Item
    version_key: str
    at: datetime
    identity: dict[str, Any]
    enter: bool = True
    audience: str = ""
    list_id: str | None = None
    profile_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    skip: str | None = None
    fail: str | None = None
    error: ApiError | None = None
    done: bool = False
    #: Skipped, yet the stated state already holds (an exit for someone Klaviyo does not know): keep its version
    #: so an older enter redelivered later cannot win.
    holds: bool = False

    @property
    def open(self) -> bool:
        return self.skip is None and self.fail is None and not self.done

    def failed(self, reason: str, error: ApiError | None = None) -> None:
        self.fail, self.error = reason, error


def identity_of(msg: SegmentMessage) -> dict[str, Any]:
    """Lookup identifiers of the message's person (Engage puts email in traits, context.traits or properties)."""
    traits = msg.all_traits()
    out: dict[str, Any] = {}
    for name in ("email", "phone"):
        value = traits.get(name) or msg.properties.get(name)
        if isinstance(value, str) and value.strip():
            out[name] = value.strip()
    if msg.user_id:
        out["user_id"] = msg.user_id
    return out


def person_of(msg: SegmentMessage, identity: Mapping[str, Any]) -> str:
    """The stable per-person part of state keys: userId, else email, else the anonymousId."""
    if msg.user_id:
        return msg.user_id
    if identity.get("email"):
        return str(identity["email"]).lower()
    return f"anon:{msg.anonymous_id}"


async def with_aliases(env: FlowEnv, changes: Sequence[Change]) -> None:
    """Anonymous-only changes borrow what alias/identify calls taught the store about that anonymousId."""
    blind = [c for c in changes if c.open and not c.identity and c.item.msg and c.item.msg.anonymous_id]
    known = await resolve_aliases(env, [c.item.msg.anonymous_id or "" for c in blind if c.item.msg])
    for change in blind:
        assert change.item.msg is not None
        change.identity = alias_identity(known.get(change.item.msg.anonymous_id or ""))


async def order_changes(env: FlowEnv, changes: Sequence[Change]) -> None:
    """Newest change per key wins inside the batch; a winner not newer than the stored version is skipped."""
    newest: dict[str, Change] = {}
    for change in (c for c in changes if c.open):
        best = newest.get(change.version_key)
        if best is None or (change.at, change.item.index) >= (best.at, best.item.index):
            if best is not None:
                best.skip = SUPERSEDED
            newest[change.version_key] = change
        else:
            change.skip = SUPERSEDED
    stored = await env.store.get_versions(list(newest)) if newest else {}
    for key, change in newest.items():
        if key in stored and stored[key] >= change.at:
            change.skip = OLDER


async def record_versions(env: FlowEnv, changes: Sequence[Change]) -> None:
    """Only applied changes store their version, so a failed apply is retried when Segment redelivers."""
    done = {c.version_key: c.at for c in changes if c.done or c.holds}
    if done:
        await env.store.apply_versions(done)


async def resolve_profiles(
    env: FlowEnv, changes: Sequence[Change], create: Callable[[Change], bool] = lambda c: c.enter
) -> None:
    """Set ``profile_id`` on open changes with one batched lookup; missing profiles are created (profile-import
    or a bulk job) when ``create(change)`` (adds), else the change is skipped "no Klaviyo profile"."""
    todo = [c for c in changes if c.open and not c.profile_id]
    missing = await _lookup(env, todo, create)
    if not missing:
        return
    created = await flowkit.upsert_profiles(env, [_new_profile(env, group[0], dict(k)) for k, group in missing.items()])
    again: list[Change] = []
    for group, result in zip(missing.values(), created, strict=False):
        for change in group:
            if not result.ok:
                change.failed(f"profile create failed: {flowkit.describe(result.error)}", result.error)
            elif (result.value or {}).get("id"):
                change.profile_id = result.value["id"]
            else:
                again.append(change)  # a bulk import job does not return ids: look the new profiles up
    await _lookup(env, again, lambda c: False)
    for change in again:
        if change.skip == "no Klaviyo profile":
            change.skip, change.holds = None, False
            change.failed("profile create failed: the imported profile was not found afterwards")


def _new_profile(env: FlowEnv, change: Change, identifiers: dict[str, Any]) -> dict[str, Any]:
    """Attributes of a profile created for a membership change: the message's ``context.traits`` (names,
    location, other traits as properties) through the identify templates, under the looked-up identifiers, so a
    person first seen through an audience is not created as a bare email."""
    raw = change.item.raw if isinstance(change.item.raw, dict) else {}
    context = obj(raw, "context")
    traits = context.get("traits")
    if not isinstance(traits, dict) or not traits:
        return identifiers
    message = {
        "type": "identify",
        "userId": raw.get("userId"),
        "anonymousId": raw.get("anonymousId"),
        "traits": traits,
        "context": {k: context[k] for k in ("timezone", "ip") if k in context},
    }
    mapped = flowkit.map_message(env.config.compiled().identify, message, ProfileMapping)
    if not isinstance(mapped, list) or not mapped:  # unusable traits: the identifiers still make the profile
        return identifiers
    return {**mapped[0].attributes, **identifiers}


async def _lookup(
    env: FlowEnv, todo: Sequence[Change], create: Callable[[Change], bool]
) -> dict[tuple[tuple[str, str], ...], list[Change]]:
    """One batched identity lookup; returns the changes to create, grouped by their (normalised) identifiers."""
    if not todo:
        return {}
    results = await env.call(
        resolve_identities,
        [c.identity for c in todo],
        env.klaviyo,
        default_region=env.config.phone_default_country,
        cache=flowkit.StoreIdentityCache(env.store),
    )
    missing: dict[tuple[tuple[str, str], ...], list[Change]] = {}
    for change, result in zip(todo, results, strict=False):
        if not result.ok:
            if flowkit.is_conflict(result.error):
                change.failed(flowkit.conflict_failure(change.item, result.error).reason or "", result.error)
            else:
                change.failed(f"profile lookup failed: {flowkit.describe(result.error)}", result.error)
        elif result.value["profile_id"]:
            change.profile_id = result.value["profile_id"]
        elif result.value["status"] == "anonymous_only":
            change.skip = "no Klaviyo identifier"
        elif not create(change):
            change.skip, change.holds = "no Klaviyo profile", True
        else:
            missing.setdefault(tuple(sorted(result.value["identifiers"].items())), []).append(change)
    return missing


async def apply_membership(env: FlowEnv, changes: Sequence[Change]) -> None:
    """One list call per (list, direction), each profile once; marks the changes done or failed."""
    groups: dict[tuple[str, bool], list[Change]] = {}
    for change in changes:
        if change.open and change.profile_id and change.list_id:
            groups.setdefault((change.list_id, change.enter), []).append(change)
    for (list_id, enter), group in groups.items():
        ids = list(dict.fromkeys(c.profile_id for c in group if c.profile_id))
        task = add_profiles_to_list if enter else remove_profiles_from_list
        results: list[ItemResult] = await env.call(task, list_id, ids, env.klaviyo)
        by_id = dict(zip(ids, results, strict=False))
        stale = [c for c in group if _profile_gone(by_id[c.profile_id or ""])]
        if stale:
            by_id.update(await _retry_with_fresh_ids(env, task, list_id, stale))
        for change in group:
            result = by_id[change.profile_id or ""]
            if result.ok:
                change.done = True
            else:
                what = "list add" if enter else "list remove"
                change.failed(f"{what} failed: {flowkit.describe(result.error)}", result.error)


def _profile_gone(result: ItemResult) -> bool:
    """Klaviyo does not know this profile id any more (merged or deleted there since we cached it)."""
    error = result.error
    if result.ok or error is None:
        return False
    return error.status == 404 or "not found" in f"{error.title or ''} {error.detail or ''}".lower()


async def _retry_with_fresh_ids(
    env: FlowEnv, task: Any, list_id: str, stale: Sequence[Change]
) -> dict[str, ItemResult]:
    """Issue the list call once more for changes whose cached profile id went stale: forget the cache entries, look
    the people up again (``services.identity.refresh_identities``) and retry with the ids Klaviyo has now. Returns
    the new results keyed by the new profile ids (changes are re-pointed at them)."""
    from klaviyo_segment.services.identity import refresh_identities

    found = await refresh_identities(
        [c.identity for c in stale],
        env.klaviyo,
        cache=flowkit.StoreIdentityCache(env.store),
        default_region=env.config.phone_default_country,
    )
    moved = []
    for change, result in zip(stale, found, strict=True):
        fresh = (result.value or {}).get("profile_id") if result.ok else None
        if fresh and fresh != change.profile_id:
            change.profile_id = fresh
            moved.append(change)
    ids = list(dict.fromkeys(c.profile_id for c in moved if c.profile_id))
    if not ids:
        return {}
    results: list[ItemResult] = await env.call(task, list_id, ids, env.klaviyo)
    return dict(zip(ids, results, strict=True))


def settle(items: Sequence[Item], changes: Sequence[Change], outcomes: dict[str, Outcome]) -> None:
    """One outcome per message: failed if any change failed, sent if any was applied, else skipped."""
    by_item: dict[str, list[Change]] = {}
    for change in changes:
        by_item.setdefault(change.item.key, []).append(change)
    for item in items:
        if item.key in outcomes:
            continue
        mine = by_item.get(item.key, [])
        bad = next((c for c in mine if c.fail), None)
        if bad is not None:
            outcomes[item.key] = outcome(item, Status.FAILED, bad.fail, bad.error)
        elif mine and any(c.done for c in mine):
            outcomes[item.key] = outcome(item, Status.SENT)
        else:
            reason = next((c.skip for c in mine if c.skip), None) or "nothing to apply"
            outcomes[item.key] = outcome(item, Status.SKIPPED, reason)
