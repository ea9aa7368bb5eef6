"""Pure builders for what we send to Segment's HTTP Tracking API, and the batch splitter.

Why pure: flows, `preview` and tests build the same messages without I/O. Every message is marked so nothing we
send to Segment comes back into Klaviyo (``integrations`` ``Klaviyo`` and ``Klaviyo (Actions)`` false stop Segment's
classic and Actions Klaviyo destinations, matched by exact name;
``context.library.name`` lets our forward-track flow recognise and skip our own messages).

Segment answers 200 and silently drops a batch over its limits, so :func:`split_batches` guarantees that no
request we send can exceed them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NamedTuple

from klaviyo_segment.constants import (
    SEGMENT_BATCH_MAX_MESSAGES,
    SEGMENT_BATCH_TARGET_BYTES,
    SEGMENT_LIBRARY_NAME,
    SEGMENT_MESSAGE_MAX_BYTES,
)
from klaviyo_segment.errors import ApiError
from klaviyo_segment.outcomes import ItemResult

#: Bytes the batch envelope may take on top of the messages: ``{"batch":[...],"sentAt":"..."}``.
ENVELOPE_BYTES = 64

try:
    _LIBRARY_VERSION = version("klaviyo-segment")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    _LIBRARY_VERSION = "0"


def encode(payload: Any) -> bytes:
    """The exact bytes we send: sizes are measured on the same encoding the client posts."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str).encode()


def message_size(message: Mapping[str, Any]) -> int:
    return len(encode(message))


def _iso(value: datetime | str | None) -> str:
    if value is None:
        value = datetime.now(UTC)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return value


def _base(
    kind: str,
    user_id: str | None,
    anonymous_id: str | None,
    timestamp: datetime | str | None,
    message_id: str | None,
    context: Mapping[str, Any] | None,
) -> dict[str, Any]:
    if not user_id and not anonymous_id:
        raise ValueError(f"a Segment {kind} needs userId or anonymousId")
    ctx = dict(context or {})
    ctx["library"] = {"name": SEGMENT_LIBRARY_NAME, "version": _LIBRARY_VERSION}
    message: dict[str, Any] = {
        "type": kind,
        "messageId": message_id or str(uuid.uuid4()),
        "timestamp": _iso(timestamp),
        "context": ctx,
        # Segment matches destination names exactly: the classic and the Actions destination are both off
        "integrations": {"Klaviyo": False, "Klaviyo (Actions)": False},
    }
    if user_id:
        message["userId"] = str(user_id)
    if anonymous_id:
        message["anonymousId"] = str(anonymous_id)
    return message


def build_track(
    event: str,
    *,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    properties: Mapping[str, Any] | None = None,
    timestamp: datetime | str | None = None,
    message_id: str | None = None,
    context: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A track message. Pass a stable ``message_id`` (e.g. the Klaviyo event id): Segment dedupes on it."""
    if not event:
        raise ValueError("a Segment track needs an event name")
    message = _base("track", user_id, anonymous_id, timestamp, message_id, context)
    message["event"] = event
    message["properties"] = dict(properties or {})
    return message


def build_identify(
    *,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    traits: Mapping[str, Any] | None = None,
    timestamp: datetime | str | None = None,
    message_id: str | None = None,
    context: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An identify message; traits update the Segment profile (a track's context.traits would not)."""
    message = _base("identify", user_id, anonymous_id, timestamp, message_id, context)
    message["traits"] = dict(traits or {})
    return message


class BatchSplit(NamedTuple):
    """``batches`` hold indices into the input (so results align with it); ``rejected`` are per-item errors."""

    batches: list[list[int]]
    rejected: list[ItemResult]


def split_batches(
    messages: Sequence[Mapping[str, Any]],
    *,
    max_request_bytes: int = SEGMENT_BATCH_TARGET_BYTES,
    max_messages: int = SEGMENT_BATCH_MAX_MESSAGES,
    max_message_bytes: int = SEGMENT_MESSAGE_MAX_BYTES,
) -> BatchSplit:
    """Greedy, order-preserving split under all three Segment limits.

    An oversized message becomes a per-item error instead of failing (or silently dropping) its whole batch.
    """
    batches: list[list[int]] = []
    rejected: list[ItemResult] = []
    current: list[int] = []
    current_bytes = ENVELOPE_BYTES
    for index, message in enumerate(messages):
        try:
            size = message_size(message)
        except ValueError as exc:  # NaN/inf cannot be sent as JSON
            rejected.append(
                ItemResult(
                    index=index,
                    ok=False,
                    error=ApiError(code="invalid_message", detail=f"message is not valid JSON: {exc}"),
                )
            )
            continue
        if size > max_message_bytes:
            rejected.append(
                ItemResult(
                    index=index,
                    ok=False,
                    error=ApiError(
                        status=400,
                        code="message_too_large",
                        detail=f"message is {size} bytes; Segment accepts at most {max_message_bytes} bytes "
                        "per message",
                    ),
                )
            )
            continue
        separator = 1 if current else 0
        if current and (len(current) >= max_messages or current_bytes + separator + size > max_request_bytes):
            batches.append(current)
            current, current_bytes, separator = [], ENVELOPE_BYTES, 0
        current.append(index)
        current_bytes += separator + size
    if current:
        batches.append(current)
    return BatchSplit(batches, rejected)
