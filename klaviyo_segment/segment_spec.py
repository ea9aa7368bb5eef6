"""Pydantic models of the Segment Spec messages we accept, and the common rules every flow applies.

Why models: a malformed message must become one failed outcome with a precise reason, never an exception
that sinks the batch. Unknown fields are kept (``extra="allow"``) because Segment adds fields over time.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from klaviyo_segment.constants import SEGMENT_LIBRARY_NAME

MessageType = Literal["identify", "track", "page", "screen", "group", "alias", "delete"]


class SegmentMessage(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    type: MessageType
    message_id: str | None = Field(default=None, alias="messageId", max_length=400)
    user_id: str | None = Field(default=None, alias="userId")
    anonymous_id: str | None = Field(default=None, alias="anonymousId")
    timestamp: datetime | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    integrations: dict[str, Any] = Field(default_factory=dict)
    traits: dict[str, Any] = Field(default_factory=dict)
    properties: dict[str, Any] = Field(default_factory=dict)
    event: str | None = None
    name: str | None = None
    previous_id: str | None = Field(default=None, alias="previousId")
    group_id: str | None = Field(default=None, alias="groupId")

    @field_validator("user_id", "anonymous_id", "previous_id", "group_id", mode="before")
    @classmethod
    def _ids_are_strings(cls, value: Any) -> Any:
        # Segment accepts numeric ids and stringifies them; so do we.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("timestamp")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @field_validator("context", "integrations", "traits", "properties", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @model_validator(mode="after")
    def _required_by_type(self) -> SegmentMessage:
        if self.type == "delete":
            if not self.user_id and not self.anonymous_id:
                raise ValueError("a delete needs userId or anonymousId")
        elif not self.user_id and not self.anonymous_id:
            raise ValueError("userId or anonymousId is required")
        if self.type == "track" and not (self.event and self.event.strip()):
            raise ValueError("a track call needs a non-empty 'event'")
        if self.type == "alias" and not self.previous_id:
            raise ValueError("an alias call needs 'previousId'")
        return self

    @property
    def context_traits(self) -> dict[str, Any]:
        traits = self.context.get("traits")
        return traits if isinstance(traits, dict) else {}

    def all_traits(self) -> dict[str, Any]:
        """Traits from ``traits`` (identify) overlaid on ``context.traits`` (track carries them there)."""
        return {**self.context_traits, **self.traits}


def message_key(raw: Any, index: int | None = None) -> str:
    """The id a message is known by: its messageId, else a content hash (stable across redeliveries)."""
    if isinstance(raw, dict):
        mid = raw.get("messageId")
        if isinstance(mid, (str, int)) and str(mid):
            return str(mid)
    # surrogatepass: a lone surrogate (input that bypassed the door) must not make the key itself raise
    blob = json.dumps(raw, sort_keys=True, default=str, ensure_ascii=False).encode(errors="surrogatepass")
    return "sha1:" + hashlib.sha1(blob).hexdigest()[:20]


def parse_message(raw: Any) -> SegmentMessage | str:
    """Return the model, or a one-line reason why the message is unusable."""
    if not isinstance(raw, dict):
        return f"invalid message: expected a JSON object, got {type(raw).__name__}"
    try:
        return SegmentMessage.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "message"
        return f"invalid message: {where}: {first.get('msg', 'invalid')}"


#: Destination names under which messages reach this integration (Segment's Klaviyo destination, or the
#: Webhooks destination that delivers to our receiver — Engage sends ``{"All": false, "Webhooks (Actions)": true}``).
DELIVERY_NAMES = ("Klaviyo", "Klaviyo (Actions)", "Webhooks", "Webhooks (Actions)", "Webhook")


def klaviyo_opted_out(msg: SegmentMessage) -> bool:
    """Segment's ``integrations`` switch: ``Klaviyo: false`` always opts out; ``All: false`` opts out unless
    one of our delivery names is enabled explicitly (names are case-sensitive, as in Segment)."""
    integrations = msg.integrations or {}
    if any(integrations.get(name) is False for name in ("Klaviyo", "Klaviyo (Actions)")):
        return True
    if any(integrations.get(name) not in (None, False) for name in DELIVERY_NAMES):
        return False
    return integrations.get("All") is False


def sent_by_us(msg: SegmentMessage) -> bool:
    """Messages this project sent to Segment (engagement) must never come back into Klaviyo as events."""
    library = msg.context.get("library") if isinstance(msg.context, dict) else None
    return isinstance(library, dict) and library.get("name") == SEGMENT_LIBRARY_NAME
