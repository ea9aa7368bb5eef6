"""Helpers several flows share, so identity, profile upserts and event timing behave the same in every flow.

- ``StoreIdentityCache``: the state store's identity cache behind the ``IdentityCache`` protocol of
  ``services.identity`` (profile ids survive runs, and ``purge_person`` finds them).
- ``resolve_aliases``: what the store learnt about anonymous ids (identify/alias calls), so a message carrying
  only ``anonymousId`` can still reach the right Klaviyo profile.
- ``upsert_profiles``: profile-import for small batches, a bulk import job for large ones; caches profile ids.
- ``is_backfill``: old events and replays are sent with ``backfill: true`` so Klaviyo does not fire flows.
- ``api_failure``: one wording for failed outcomes caused by an API error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from klaviyo_segment.errors import ApiError
from klaviyo_segment.mapping import MappingError, ProfileMapping
from klaviyo_segment.outcomes import ItemResult, Outcome, Status
from klaviyo_segment.runtime import FlowEnv, Item, is_old, outcome

#: From this many profiles (after collapsing) a bulk import job is cheaper than one profile-import each.
BULK_PROFILE_THRESHOLD = 100
#: Alias-map fields that identify a person (``traits`` is what we remember, not who they are).
ALIAS_IDENTITY_FIELDS = ("user_id", "email", "phone")
#: identity-cache key prefix used by ``services.identity`` -> the store's documented prefix.
_TO_STORE = {"phone_number": "phone"}
_FROM_STORE = {v: k for k, v in _TO_STORE.items()}


T = TypeVar("T")


def _rekey(key: str, table: Mapping[str, str]) -> str:
    kind, _, value = key.partition(":")
    return f"{table.get(kind, kind)}:{value}"


class StoreIdentityCache:
    """Adapter: ``services.identity`` speaks ``phone_number:+1...``, the store documents ``phone:+1...``."""

    def __init__(self, store: Any) -> None:
        self.store = store

    async def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        found = await self.store.get_profile_ids([_rekey(k, _TO_STORE) for k in keys])
        return {_rekey(k, _FROM_STORE): v for k, v in found.items()}

    async def put_many(self, mapping: Mapping[str, str]) -> None:
        if mapping:
            await self.store.put_profile_ids({_rekey(k, _TO_STORE): v for k, v in mapping.items()})

    async def forget_many(self, keys: Sequence[str]) -> None:
        if keys:
            await self.store.forget_profile_ids([_rekey(k, _TO_STORE) for k in keys])


def identity_cache_keys(attributes: Mapping[str, Any]) -> list[str]:
    """Store cache keys for the identifiers of a profile (values as the mapping normalised them)."""
    keys = []
    for field, kind in (("external_id", "external_id"), ("email", "email"), ("phone_number", "phone")):
        value = attributes.get(field)
        if isinstance(value, str) and value:
            keys.append(f"{kind}:{value.strip().lower() if field == 'email' else value}")
    return keys


async def resolve_aliases(env: FlowEnv, anonymous_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """anonymousId -> alias data (``user_id``/``email``/``phone``/``traits``) for the ids the store knows."""
    wanted = sorted({a for a in anonymous_ids if a})
    return await env.store.get_aliases(wanted) if wanted else {}


def alias_identity(alias: Mapping[str, Any] | None) -> dict[str, str]:
    """Only the identifying fields of an alias entry (empty when it only remembers traits)."""
    return {f: str(alias[f]) for f in ALIAS_IDENTITY_FIELDS if alias and alias.get(f)}


def with_alias_identity(raw: Mapping[str, Any], alias: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a Segment message whose missing userId/email/phone are filled from an alias entry, so the
    unchanged mapping templates pick them up (userId -> external_id, context.traits.email -> email)."""
    message = dict(raw)
    ids = alias_identity(alias)
    if ids.get("user_id") and not message.get("userId"):
        message["userId"] = ids["user_id"]
    context = dict(message.get("context") or {})
    traits = dict(context.get("traits") or {})
    for field in ("email", "phone"):
        if ids.get(field) and not traits.get(field):
            traits[field] = ids[field]
    if traits:
        context["traits"] = traits
        message["context"] = context
    return message


def is_backfill(env: FlowEnv, item: Item) -> bool:
    """Replays and events older than ``max_event_age_hours`` must not trigger Klaviyo flows as if new."""
    assert item.msg is not None
    return (
        bool(getattr(env, "replay", False))
        or bool(item.msg.context.get("replay"))
        or is_old(item.msg, env.now, env.config.max_event_age_hours)
    )


def map_message(chain: Any, message: Mapping[str, Any], kind: type[T]) -> list[T] | str | None:
    """A template chain's mappings of ``kind`` for one message; None when no template handles it, or the reason
    the message is unusable (invalid data is a failed outcome, never an exception that sinks the batch)."""
    try:
        mapped = chain.map(message)
    except MappingError as exc:
        return f"invalid data: {exc}"
    if not mapped:
        return None
    return [m for m in mapped if isinstance(m, kind)]


def describe(error: ApiError | None) -> str:
    if error is None:
        return "unknown error"
    text = error.detail or error.title or "error"
    return f"{error.code}: {text}" if error.code else text


def api_failure(item: Item, error: ApiError | None, what: str, warnings: Sequence[str] = ()) -> Outcome:
    """A failed outcome for ``what`` (e.g. "profile upsert") rejected or lost by the API."""
    return outcome(item, Status.FAILED, f"{what} failed: {describe(error)}", error, warnings)


def conflict_failure(item: Item, error: ApiError | None, warnings: Sequence[str] = ()) -> Outcome:
    """The identity policy of ``services.identity``: never create a third profile, report both ids instead."""
    ids = (error.meta.get("duplicate_profile_id") or error.meta.get("profile_ids")) if error else None
    return outcome(
        item,
        Status.FAILED,
        f"identifier conflict: identifiers belong to different Klaviyo profiles{f' ({ids})' if ids else ''}",
        error,
        warnings,
    )


def is_conflict(error: ApiError | None) -> bool:
    return error is not None and error.code in ("duplicate_profile", "identity_conflict")


async def upsert_profiles(env: FlowEnv, profiles: Sequence[Mapping[str, Any]]) -> list[ItemResult]:
    """Upsert profile attributes, one result per profile (aligned). Small batches use profile-import (ids come
    back and are cached); from ``BULK_PROFILE_THRESHOLD`` on, one bulk import job (polled, per-profile errors)."""
    from klaviyo_segment.tasks import klaviyo_profiles as tp

    if not profiles:
        return []
    if len(profiles) >= BULK_PROFILE_THRESHOLD:
        return await env.call(tp.bulk_import_profiles, list(profiles), env.klaviyo, poll_interval=1.0)
    results = await env.call(tp.upsert_profiles, list(profiles), env.klaviyo)
    cache: dict[str, str] = {}
    for profile, result in zip(profiles, results, strict=True):
        if result.ok and result.value and result.value.get("id"):
            cache.update({key: result.value["id"] for key in identity_cache_keys(profile)})
    if cache:
        await env.store.put_profile_ids(cache)
    return results


#: Profile attributes that address the profile: always sent, never version-filtered.
_IDENTIFIER_FIELDS = ("external_id", "email", "phone_number", "anonymous_id")
Members = list[tuple[Item, Any]]  # (message, ProfileMapping) of one person, timestamp order


def trait_fields(attributes: Mapping[str, Any]) -> list[str]:
    """Version granularity: top-level attributes, and one level into objects (``properties.plan``)."""
    out: list[str] = []
    for key, value in attributes.items():
        if key in _IDENTIFIER_FIELDS:
            continue
        out += [f"{key}.{sub}" for sub in value] if isinstance(value, dict) and value else [key]
    return out


def _without(attributes: Mapping[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in attributes.items()}
    for field in fields:
        key, _, sub = field.partition(".")
        if sub and isinstance(out.get(key), dict):
            out[key].pop(sub, None)
            if not out[key]:
                out.pop(key)
        else:
            out.pop(key, None)
    return out


def _person(members: Members) -> str | None:
    """Version key of a person: their userId when any message carries one, else their email, else phone."""
    from klaviyo_segment.store.people import person_keys

    keys = [k for _, mapped in members for k in person_keys(mapped.attributes)]
    return next((k for k in keys if k.startswith("external_id:")), keys[0] if keys else None)


async def newer_only(
    env: FlowEnv, people: Sequence[Members], outcomes: dict[str, Outcome], warnings: dict[str, list[str]]
) -> list[Members]:
    """Newest wins across runs: drop each message's traits that an already applied, newer message set (a retry
    or replay of an older identify must not set ``plan`` back). A message left with nothing to say is skipped."""
    from klaviyo_segment.store.people import version_key

    persons = [_person(m) for m in people]
    wanted = {
        version_key(p, f)
        for p, members in zip(persons, people, strict=False)
        if p
        for _, mapped in members
        for f in trait_fields(mapped.attributes)
    }
    stored = await env.store.get_versions(sorted(wanted)) if wanted else {}
    out: list[Members] = []
    for person, members in zip(persons, people, strict=True):
        kept: Members = []
        for item, mapped in members:
            when = item.msg.timestamp if item.msg is not None else None
            fields = trait_fields(mapped.attributes)
            older = [
                f for f in fields if person and when is not None and (stored.get(version_key(person, f)) or when) > when
            ]
            if not older:
                kept.append((item, mapped))
            elif len(older) == len(fields):
                outcomes[item.key] = outcome(
                    item, Status.SKIPPED, "skipped: older than the applied version", warnings=mapped.warnings
                )
            else:
                kept.append((item, ProfileMapping(_without(mapped.attributes, older), mapped.warnings)))
                warnings.setdefault(item.key, []).append(
                    f"older than the applied version, left out: {', '.join(older)}"
                )
        if kept:
            out.append(kept)
    return out


async def record_versions(env: FlowEnv, applied: Sequence[Members]) -> None:
    """After a successful upsert: each trait's version is the newest message that set it (compare-and-set, so
    a concurrent newer write is never overwritten by this older one)."""
    from klaviyo_segment.store.people import version_key

    versions: dict[str, datetime] = {}
    for members in applied:
        person = _person(members)
        if person is None:
            continue
        for item, mapped in members:
            stamp = item.msg.timestamp if item.msg is not None else None
            if stamp is None:
                continue
            for field in trait_fields(mapped.attributes):
                key = version_key(person, field)
                versions[key] = max(versions.get(key, stamp), stamp)
    if versions:
        await env.store.apply_versions(versions)


# -- one request per person (sync-identify) -----------------------------------------------------------------
_EPOCH = datetime.min.replace(tzinfo=UTC)


def when(item: Item) -> tuple[datetime, int]:
    """Timestamp order (input position breaks ties); messages without a timestamp come first."""
    assert item.msg is not None
    return item.msg.timestamp or _EPOCH, item.index


def _deep_merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Later identify wins per field; nested objects (location, properties) merge field by field."""
    merged = dict(old)
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


OTHER_PERSON = "{field} left off: it already belongs to another person's profile"


class Group:
    """One person of the batch: their messages (timestamp order) and the identifiers they claimed."""

    def __init__(self, user_id: str | None) -> None:
        self.user_id = user_id
        self.members: list[tuple[Item, Any]] = []


class People:
    """Collapse a batch into people. Different userIds are different people, never merged (Klaviyo allows one
    profile per email and per phone, so merging them sent only the last one's update). A message without userId
    joins the person who owns its email or phone ('email only' + 'userId + email' is one request). A phone
    already claimed by another userId is left off with a warning; an email claimed by another userId fails the
    later message as ``identity_conflict`` (the email decides which profile Klaviyo updates)."""

    def __init__(self) -> None:
        self.owner: dict[str, Group] = {}
        self.groups: list[Group] = []
        self.warnings: dict[str, list[str]] = {}

    def add(self, item: Item, mapped: ProfileMapping) -> str | None:
        """Add one mapped identify (timestamp order); returns a conflict reason instead when it cannot join."""
        attrs = mapped.attributes
        user = attrs.get("external_id") if isinstance(attrs.get("external_id"), str) else None
        group = self.owner.get(f"external_id:{user}") if user else None
        email_key = f"email:{attrs['email'].strip().lower()}" if isinstance(attrs.get("email"), str) else None
        email_owner = self.owner.get(email_key) if email_key else None
        if email_owner is not None and user and email_owner.user_id not in (None, user):
            return (
                f"identity_conflict: email already belongs to another person (userId {email_owner.user_id!r}); "
                f"userId {user!r} cannot claim it"
            )
        if email_owner is not None and email_owner is not group:
            group = self._fold(group, email_owner)
        phone = attrs.get("phone_number")
        phone_owner = self.owner.get(f"phone:{phone}") if isinstance(phone, str) and phone else None
        if phone_owner is not None and phone_owner is not group:
            if phone_owner.user_id is None or (group is None and not user and not email_key):
                group = self._fold(group, phone_owner)
            else:
                attrs = {k: v for k, v in attrs.items() if k != "phone_number"}
                mapped = ProfileMapping(attrs, mapped.warnings)
                self.warnings.setdefault(item.key, []).append(OTHER_PERSON.format(field="phone_number"))
        if group is None:
            group = Group(user)
            self.groups.append(group)
        if user and group.user_id is None:
            group.user_id = user
        group.members.append((item, mapped))
        self.owner.update({k: group for k in identity_cache_keys(attrs)})
        return None

    def _fold(self, group: Group | None, other: Group) -> Group:
        """``other`` (no userId, or the same one) is this message's person: join it, or merge it into ``group``."""
        if group is None:
            return other
        group.members += other.members
        other.members = []
        self.owner.update({k: group for k, g in self.owner.items() if g is other})
        return group

    def members(self) -> list[list[tuple[Item, Any]]]:
        """Each person's messages in timestamp order; people in first-seen order so previews list requests
        stably."""
        out = []
        for group in self.groups:
            if group.members:
                out.append(sorted(group.members, key=lambda pair: when(pair[0])))
        return out


def merged_attributes(members: list[tuple[Item, Any]]) -> dict[str, Any]:
    """One request per person: their messages' attributes merged in timestamp order (later wins per field)."""
    attributes: dict[str, Any] = {}
    for _, mapped in members:
        attributes = _deep_merge(attributes, mapped.attributes)
    return attributes
