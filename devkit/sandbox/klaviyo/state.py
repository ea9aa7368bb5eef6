"""In-memory Klaviyo account: the semantics the tasks rely on, kept deliberately strict where Klaviyo is.

One instance lives per sandbox and is touched only from the server's event loop, so plain dicts suffice.
Every rule that can fail a request raises :class:`KlaviyoError` with the status and code Klaviyo answers.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from klaviyo_segment.constants import LIST_CREATE_DAILY_MAX
from klaviyo_segment.devkit.sandbox.klaviyo.validation import KlaviyoError

IDENTIFIERS = ("email", "phone_number", "external_id")
SCALARS = (
    "email",
    "phone_number",
    "external_id",
    "first_name",
    "last_name",
    "organization",
    "locale",
    "title",
    "image",
)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
_PHONE = re.compile(r"^\+[1-9]\d{6,14}$")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SUPPRESSIONS_CLEARED_BY_SUBSCRIBE = ("UNSUBSCRIBE", "SPAM_REPORT", "USER_SUPPRESSED")


def now() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime) -> str:
    return value.astimezone(UTC).replace(microsecond=0).isoformat()


def identifier_error(attrs: dict[str, Any], base: str) -> KlaviyoError | None:
    """Klaviyo rejects malformed emails and non-E.164 phone numbers instead of storing them."""
    email, phone = attrs.get("email"), attrs.get("phone_number")
    if email is not None and not _EMAIL.match(email):
        return KlaviyoError(400, "invalid", f"Invalid email address: '{email}'.", pointer=f"{base}/email")
    if phone is not None and not _PHONE.match(phone):
        return KlaviyoError(
            400,
            "invalid",
            "Invalid phone number format (Example of a valid phone number format: +12345678901)",
            pointer=f"{base}/phone_number",
        )
    return None


def _default_subscriptions() -> dict[str, Any]:
    return {
        "email": {
            "marketing": {
                "consent": "NEVER_SUBSCRIBED",
                "consent_timestamp": None,
                "last_updated": None,
                "method": None,
                "method_detail": None,
                "custom_method_detail": None,
                "double_optin": None,
                "suppression": [],
                "list_suppressions": [],
            }
        },
        "sms": {
            "marketing": {
                "consent": "NEVER_SUBSCRIBED",
                "consent_timestamp": None,
                "last_updated": None,
                "method": None,
                "method_detail": None,
            }
        },
    }


@dataclass
class Profile:
    id: str
    attrs: dict[str, Any]
    created: str
    updated: str
    anonymous_ids: set[str] = field(default_factory=set)
    subscriptions: dict[str, Any] = field(default_factory=_default_subscriptions)


@dataclass
class Metric:
    id: str
    name: str
    created: str
    integration: str = "API"


@dataclass
class Event:
    id: str
    uuid: str
    metric_id: str
    profile_id: str
    timestamp: int
    properties: dict[str, Any]


#: id -> name of the lists ``--example-lists`` creates (examples/config.yaml uses these ids).
EXAMPLE_LISTS = {
    "VIPLST": "VIP customers",
    "LAPSED": "Lapsed buyers",
    "ONBOAR": "Onboarding",
    "WINBAK": "Churn win-back",
}


@dataclass
class KList:
    id: str
    name: str
    created: str
    updated: str
    opt_in_process: str
    members: dict[str, str] = field(default_factory=dict)


@dataclass
class ImportJob:
    id: str
    profiles: list[dict[str, Any]]
    list_ids: list[str]
    created_at: str
    status: str = "queued"
    started_at: str | None = None
    completed_at: str | None = None
    completed_count: int = 0
    failed_count: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)


class AccountState:
    """Everything one Klaviyo account holds. ``strict_bulk`` fails bulk events repeating stored unique_ids."""

    def __init__(self, seed: int = 0, strict_bulk: bool = False) -> None:
        self.seed, self.strict_bulk = seed, strict_bulk
        self.reset()

    def reset(self) -> None:
        self.rng = random.Random(self.seed)
        self.profiles: dict[str, Profile] = {}
        #: (identifier, value) -> profile id, kept on every write; a lookup verifies it (an identifier may have
        #: changed since), so finding a profile costs O(1) instead of a scan of every profile.
        self._owners: dict[tuple[str, Any], str] = {}
        self.metrics: dict[str, Metric] = {}
        self.events: dict[str, Event] = {}
        self.event_keys: set[tuple[str, str, str]] = set()
        self.lists: dict[str, KList] = {}
        self.list_creations: list[datetime] = []
        self.jobs: dict[str, ImportJob] = {}
        self.pending_confirmations: list[dict[str, str]] = []
        self.global_unsubscribes = 0
        self.deleted_profiles = 0

    # ids -------------------------------------------------------------------------------------------------
    def ulid(self) -> str:
        stamp, chars = int(now().timestamp() * 1000), []
        for _ in range(10):
            chars.append(_CROCKFORD[stamp % 32])
            stamp //= 32
        return "".join(reversed(chars)) + "".join(self.rng.choice(_CROCKFORD) for _ in range(16))

    def short_id(self, length: int) -> str:
        return "".join(self.rng.choice(_BASE62) for _ in range(length))

    # profiles --------------------------------------------------------------------------------------------
    def owner(self, name: str, value: Any) -> Profile | None:
        if value is None:
            return None
        if name == "id":
            return self.profiles.get(value)
        try:
            pid = self._owners.get((name, value))
        except TypeError:  # an unhashable value cannot be an identifier anyone holds
            return self._scan(name, value)
        if pid is None:
            return None
        profile = self.profiles.get(pid)
        if profile is not None and self._holds(profile, name, value):
            return profile
        found = self._scan(name, value)  # stale entry (identifier changed, profile merged or deleted): rare
        if found is None:
            self._owners.pop((name, value), None)
        else:
            self._owners[(name, value)] = found.id
        return found

    @staticmethod
    def _holds(profile: Profile, name: str, value: Any) -> bool:
        return value in profile.anonymous_ids if name == "anonymous_id" else profile.attrs.get(name) == value

    def _scan(self, name: str, value: Any) -> Profile | None:
        return next((p for p in self.profiles.values() if self._holds(p, name, value)), None)

    def _index(self, profile: Profile) -> None:
        """Register the profile's current identifiers (called after every change to them)."""
        for name in IDENTIFIERS:
            value = profile.attrs.get(name)
            if isinstance(value, str) and value:
                self._owners[(name, value)] = profile.id
        for anonymous_id in profile.anonymous_ids:
            if isinstance(anonymous_id, str):
                self._owners[("anonymous_id", anonymous_id)] = profile.id

    def _matches(self, profile_id: str | None, attrs: dict[str, Any]) -> list[Profile]:
        found: list[Profile] = []
        candidates = [self.owner("id", profile_id)] + [self.owner(n, attrs.get(n)) for n in IDENTIFIERS]
        for profile in candidates:
            if profile is not None and profile not in found:
                found.append(profile)
        return found

    def _new_profile(self) -> Profile:
        stamp = iso(now())
        profile = Profile(
            self.ulid(), {name: None for name in SCALARS} | {"location": {}, "properties": {}}, stamp, stamp
        )
        self.profiles[profile.id] = profile
        return profile

    def _apply(self, profile: Profile, attrs: dict[str, Any], meta: dict[str, Any] | None) -> None:
        """Omitted fields stay, ``null`` clears, properties and location merge key by key."""
        for name, value in attrs.items():
            if name in ("properties", "location"):
                if value is None:
                    profile.attrs[name] = {}
                else:
                    merged = profile.attrs[name] | value
                    profile.attrs[name] = {k: v for k, v in merged.items() if v is not None}
            elif name in SCALARS:
                profile.attrs[name] = value
        patch = (meta or {}).get("patch_properties") or {}
        props = profile.attrs["properties"]
        for key, value in (patch.get("append") or {}).items():
            current = props.get(key)
            props[key] = (current if isinstance(current, list) else ([] if current is None else [current])) + (
                value if isinstance(value, list) else [value]
            )
        for key, value in (patch.get("unappend") or {}).items():
            if isinstance(props.get(key), list):
                props[key] = [v for v in props[key] if v != value]
        unset = patch.get("unset") or []
        for key in [unset] if isinstance(unset, str) else unset:
            props.pop(key, None)
        profile.updated = iso(now())
        self._index(profile)

    def _check_unique(self, profile: Profile | None, attrs: dict[str, Any]) -> None:
        for name in IDENTIFIERS:
            other = self.owner(name, attrs.get(name))
            if other is not None and other is not profile:
                raise _duplicate(other.id)

    def upsert_profile(self, resource: dict[str, Any]) -> tuple[Profile, bool]:
        """Create or Update Profile: 201 when created, 200 when updated, 409 when identifiers disagree."""
        attrs, pid = resource.get("attributes") or {}, resource.get("id")
        error = identifier_error(attrs, "/data/attributes")
        if error:
            raise error
        if pid is None and not any(attrs.get(n) for n in IDENTIFIERS):
            raise KlaviyoError(
                400, "invalid", "One of email, phone_number, or external_id is required.", pointer="/data/attributes"
            )
        if pid is not None and pid not in self.profiles:
            raise KlaviyoError(404, "not_found", f"A profile with id {pid} does not exist.", pointer="/data/id")
        found = self._matches(pid, attrs)
        if len(found) > 1:
            raise _duplicate(found[1].id)
        created = not found
        profile = found[0] if found else self._new_profile()
        self._apply(profile, attrs, resource.get("meta"))
        return profile, created

    def create_profile(self, resource: dict[str, Any]) -> Profile:
        attrs = resource.get("attributes") or {}
        error = identifier_error(attrs, "/data/attributes")
        if error:
            raise error
        if not any(attrs.get(n) for n in IDENTIFIERS):
            raise KlaviyoError(
                400, "invalid", "One of email, phone_number, or external_id is required.", pointer="/data/attributes"
            )
        self._check_unique(None, attrs)
        profile = self._new_profile()
        self._apply(profile, attrs, None)
        return profile

    def update_profile(self, profile_id: str, resource: dict[str, Any]) -> Profile:
        if resource.get("id") != profile_id:
            raise KlaviyoError(
                409, "conflict", "The id in the body does not match the id in the URL.", pointer="/data/id"
            )
        profile = self.get_profile(profile_id)
        attrs = resource.get("attributes") or {}
        error = identifier_error(attrs, "/data/attributes")
        if error:
            raise error
        self._check_unique(profile, attrs)
        self._apply(profile, attrs, resource.get("meta"))
        return profile

    def get_profile(self, profile_id: str) -> Profile:
        profile = self.profiles.get(profile_id)
        if profile is None:
            raise KlaviyoError(404, "not_found", f"A profile with id {profile_id} does not exist.")
        return profile

    def merge(self, destination_id: str, source_ids: list[str]) -> Profile:
        if len(source_ids) != 1:
            raise KlaviyoError(
                400,
                "invalid",
                "Exactly one source profile can be merged per request.",
                pointer="/data/relationships/profiles/data",
            )
        destination, source = self.get_profile(destination_id), self.get_profile(source_ids[0])
        if destination is source:
            raise KlaviyoError(400, "invalid", "A profile cannot be merged into itself.", pointer="/data/id")
        del self.profiles[source.id]
        for name, value in source.attrs.items():
            if name in ("properties", "location"):
                destination.attrs[name] = value | destination.attrs[name]
            elif destination.attrs.get(name) is None:
                destination.attrs[name] = value
        destination.anonymous_ids |= source.anonymous_ids
        self._index(destination)
        for event in self.events.values():
            if event.profile_id == source.id:
                event.profile_id = destination.id
        self.event_keys = {(destination.id if p == source.id else p, m, u) for p, m, u in self.event_keys}
        for klist in self.lists.values():
            if source.id in klist.members:
                klist.members.setdefault(destination.id, klist.members.pop(source.id))
        destination.updated = iso(now())
        return destination

    def delete_profile(self, profile_id: str | None, attrs: dict[str, Any]) -> bool:
        """Data-privacy deletion: the profile, its events and its list memberships disappear."""
        matches = self._matches(profile_id, attrs)
        for profile in matches:
            self.profiles.pop(profile.id, None)
            self.events = {k: e for k, e in self.events.items() if e.profile_id != profile.id}
            self.event_keys = {key for key in self.event_keys if key[0] != profile.id}
            for klist in self.lists.values():
                klist.members.pop(profile.id, None)
            self.deleted_profiles += 1
        return bool(matches)

    def resolve_event_profile(self, resource: dict[str, Any], create: bool = True) -> Profile | None:
        """Find (or create) the profile an event names; anonymous_id alone is enough."""
        attrs, pid = resource.get("attributes") or {}, resource.get("id")
        for name, value in (("id", pid), *((n, attrs.get(n)) for n in (*IDENTIFIERS, "anonymous_id"))):
            profile = self.owner(name, value)
            if profile is not None:
                break
        else:
            if not create:
                return None
            profile = self._new_profile()
        safe = {k: v for k, v in attrs.items() if k not in IDENTIFIERS or self.owner(k, v) in (None, profile)}
        self._apply(profile, safe, attrs.get("meta"))
        if attrs.get("anonymous_id"):
            profile.anonymous_ids.add(attrs["anonymous_id"])
            self._index(profile)
        return profile

    # metrics and events ----------------------------------------------------------------------------------
    def metric(self, name: str, integration: str = "API") -> Metric:
        for metric in self.metrics.values():
            if metric.name == name:
                return metric
        metric = Metric(self.short_id(6), name, iso(now()), integration)
        self.metrics[metric.id] = metric
        return metric

    def event_key(self, profile_key: str, metric_name: str, attrs: dict[str, Any]) -> tuple[str, str, str]:
        """Without unique_id Klaviyo de-duplicates on the event time truncated to the second."""
        stamp = int(event_time(attrs).timestamp())
        return profile_key, metric_name, str(attrs.get("unique_id") or stamp)

    def stored_key(self, profile: Profile, metric_name: str, attrs: dict[str, Any]) -> tuple[str, str, str]:
        return self.event_key(profile.id, metric_name, attrs)

    def add_event(
        self, profile: Profile, metric_name: str, attrs: dict[str, Any], integration: str = "API"
    ) -> Event | None:
        """Store one event unless the same profile+metric+unique_id exists (first one wins)."""
        key = self.stored_key(profile, metric_name, attrs)
        if key in self.event_keys:
            return None
        self.event_keys.add(key)
        metric = self.metric(metric_name, integration)
        properties = dict(attrs.get("properties") or {})
        if attrs.get("value") is not None:
            properties["$value"] = attrs["value"]
        if attrs.get("unique_id"):
            properties["$event_id"] = attrs["unique_id"]
        event = Event(
            self.short_id(11),
            f"{self.rng.getrandbits(128):032x}",
            metric.id,
            profile.id,
            int(event_time(attrs).timestamp()),
            properties,
        )
        self.events[event.id] = event
        return event

    # lists -----------------------------------------------------------------------------------------------
    def create_list(self, name: str, opt_in_process: str | None) -> KList:
        today = now() - timedelta(days=1)
        self.list_creations = [t for t in self.list_creations if t > today]
        if len(self.list_creations) >= LIST_CREATE_DAILY_MAX:
            wait = int((self.list_creations[0] - today).total_seconds()) + 1
            raise KlaviyoError(
                429,
                "throttled",
                f"Request was throttled. Expected available in {wait} seconds.",
                pointer="/data/",
                headers={"Retry-After": str(wait)},
            )
        self.list_creations.append(now())
        stamp = iso(now())
        klist = KList(self.short_id(6), name, stamp, stamp, opt_in_process or "single_opt_in")
        self.lists[klist.id] = klist
        return klist

    def add_example_lists(self) -> None:
        """Lists with fixed ids that examples/config.yaml and the README refer to (not counted in the daily
        creation cap: they stand for lists an account already has)."""
        stamp = iso(now())
        for list_id, name in EXAMPLE_LISTS.items():
            self.lists.setdefault(list_id, KList(list_id, name, stamp, stamp, "single_opt_in"))

    def get_list(self, list_id: str) -> KList:
        klist = self.lists.get(list_id)
        if klist is None:
            raise KlaviyoError(404, "not_found", f"A list with id {list_id} does not exist.")
        return klist

    def change_members(self, list_id: str, refs: list[dict[str, Any]], add: bool) -> None:
        klist = self.get_list(list_id)
        ids = [ref.get("id") for ref in refs]
        missing = [i for i, pid in enumerate(ids) if pid not in self.profiles]
        if missing:
            raise KlaviyoError(
                400,
                "invalid",
                f"Profile(s) not found: {', '.join(str(ids[i]) for i in missing)}.",
                pointer=f"/data/{missing[0]}/id",
            )
        for pid in ids:
            if add:
                klist.members.setdefault(str(pid), iso(now()))
            else:
                klist.members.pop(str(pid), None)

    # consent ---------------------------------------------------------------------------------------------
    def subscribe(self, profile: Profile, channels: dict[str, Any], klist: KList | None, historical: bool) -> None:
        """Subscribe sets consent and clears UNSUBSCRIBE/SPAM_REPORT/USER_SUPPRESSED suppressions."""
        if klist is not None and klist.opt_in_process == "double_opt_in" and not historical:
            self.pending_confirmations.append({"profile_id": profile.id, "list_id": klist.id})
            return
        stamp = iso(now())
        for channel in ("email", "sms"):
            marketing = (channels.get(channel) or {}).get("marketing")
            if not marketing:
                continue
            state = profile.subscriptions[channel]["marketing"]
            state.update(
                consent="SUBSCRIBED",
                consent_timestamp=marketing.get("consented_at") or stamp,
                last_updated=stamp,
                method="API",
                method_detail="API",
            )
            if channel == "email":
                state["suppression"] = [
                    s for s in state["suppression"] if s["reason"] not in SUPPRESSIONS_CLEARED_BY_SUBSCRIBE
                ]
                state["list_suppressions"] = [
                    s for s in state["list_suppressions"] if klist is None or s["list_id"] != klist.id
                ]
        if klist is not None:
            klist.members.setdefault(profile.id, stamp)

    def unsubscribe(self, profile: Profile, channels: dict[str, Any], klist: KList | None) -> bool:
        """Returns True when the unsubscribe was global (no list, or the profile was not in the list)."""
        stamp = iso(now())
        in_list = klist is not None and profile.id in klist.members
        for channel in ("email", "sms"):
            if not (channels.get(channel) or {}).get("marketing"):
                continue
            state = profile.subscriptions[channel]["marketing"]
            if in_list and channel == "email":
                assert klist is not None
                state["list_suppressions"].append(
                    {"list_id": klist.id, "reason": "USER_SUPPRESSED", "timestamp": stamp}
                )
                continue
            state.update(consent="UNSUBSCRIBED", consent_timestamp=stamp, last_updated=stamp, method="API")
            if channel == "email":
                state["suppression"].append({"reason": "UNSUBSCRIBE", "timestamp": stamp})
        if in_list:
            assert klist is not None
            klist.members.pop(profile.id, None)
            return False
        self.global_unsubscribes += 1
        return True

    def suppress(self, profile: Profile, reason: str) -> None:
        state = profile.subscriptions["email"]["marketing"]
        state["suppression"].append({"reason": reason, "timestamp": iso(now())})
        if reason == "UNSUBSCRIBE":
            state.update(consent="UNSUBSCRIBED", last_updated=iso(now()))

    def summary(self) -> dict[str, Any]:
        by_metric: dict[str, int] = {}
        for event in self.events.values():
            name = self.metrics[event.metric_id].name
            by_metric[name] = by_metric.get(name, 0) + 1
        subscribed = {
            ch: sum(1 for p in self.profiles.values() if p.subscriptions[ch]["marketing"]["consent"] == "SUBSCRIBED")
            for ch in ("email", "sms")
        }
        return {
            "profiles": len(self.profiles),
            "events": len(self.events),
            "events_by_metric": by_metric,
            "lists": {k.name: len(k.members) for k in self.lists.values()},
            "subscribed": subscribed,
            "global_unsubscribes": self.global_unsubscribes,
            "deleted_profiles": self.deleted_profiles,
            "import_jobs": {j.id: j.status for j in self.jobs.values()},
            "pending_confirmations": len(self.pending_confirmations),
        }


def event_time(attrs: dict[str, Any]) -> datetime:
    raw = attrs.get("time")
    if not raw:
        return now().replace(microsecond=0)
    value = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def check_event_time(attrs: dict[str, Any], pointer: str) -> None:
    """Klaviyo only accepts event times after 1990 and at most one year ahead."""
    try:
        when = event_time(attrs)
    except ValueError:
        raise KlaviyoError(400, "invalid", f"'{attrs.get('time')}' is not a valid datetime.", pointer=pointer) from None
    if when.year < 1990 or when > now() + timedelta(days=365):
        raise KlaviyoError(
            400, "invalid", "Event time must be after 1990 and at most one year in the future.", pointer=pointer
        )


def _duplicate(profile_id: str) -> KlaviyoError:
    return KlaviyoError(
        409,
        "duplicate_profile",
        "A profile already exists with one of these identifiers.",
        pointer="/data/attributes",
        meta={"duplicate_profile_id": profile_id},
    )
