"""Mapping outputs. Plain slotted dataclasses, not pydantic: one is built per message on the hot path, and
the builders only need attribute dicts, so validation cost would buy nothing here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Identifiers Klaviyo can resolve a profile by (profile-import cannot carry anonymous_id).
PROFILE_IDENTIFIERS = ("email", "phone_number", "external_id")
EVENT_PROFILE_IDENTIFIERS = ("email", "phone_number", "external_id", "anonymous_id")


class MappingError(ValueError):
    """A message a template matched but cannot be turned into a request at all (e.g. a track with no event
    name). Flows count it as failed (invalid data), unlike a dropped field, which is only a warning."""


@dataclass(slots=True)
class ProfileMapping:
    """Klaviyo profile attributes (profile-import ``data.attributes``) for one identify message."""

    attributes: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    @property
    def has_identifier(self) -> bool:
        """Without one of these, profile-import rejects the body: flows skip such messages up front."""
        return any(self.attributes.get(k) for k in PROFILE_IDENTIFIERS)


@dataclass(slots=True)
class EventMapping:
    """One Klaviyo event (create_event attributes, profile still unwrapped) for one track message or item."""

    metric: str
    properties: dict[str, Any]
    time: str | None = None
    value: float | None = None
    value_currency: str | None = None
    unique_id: str | None = None
    profile: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def has_identifier(self) -> bool:
        """Klaviyo needs at least one of these on the event profile."""
        return any(self.profile.get(k) for k in EVENT_PROFILE_IDENTIFIERS)


Mapping = ProfileMapping | EventMapping
