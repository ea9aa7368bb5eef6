"""Batch splitting at each Segment limit, and the loop-guard markers on every message we build."""

from __future__ import annotations

import math

import pytest

from klaviyo_segment.builders.segment import (
    ENVELOPE_BYTES,
    build_identify,
    build_track,
    encode,
    message_size,
    split_batches,
)
from klaviyo_segment.constants import (
    SEGMENT_BATCH_MAX_MESSAGES,
    SEGMENT_BATCH_TARGET_BYTES,
    SEGMENT_LIBRARY_NAME,
    SEGMENT_MESSAGE_MAX_BYTES,
    SEGMENT_REQUEST_MAX_BYTES,
)
from klaviyo_segment.segment_spec import SegmentMessage, parse_message, sent_by_us


def _own(raw: dict) -> bool:
    """The loop guard forward-track applies, on the parsed message as it does."""
    parsed = parse_message(raw)
    assert isinstance(parsed, SegmentMessage), parsed
    return sent_by_us(parsed)


def _track(i: int, pad: int = 0) -> dict:
    return build_track("Opened Email", user_id=f"u{i}", message_id=f"m{i}", properties={"pad": "x" * pad})


def test_messages_carry_loop_guards() -> None:
    track = build_track("Order Completed", user_id="u1", properties={"total": 3.5}, context={"ip": "1.2.3.4"})
    identify = build_identify(anonymous_id="a1", traits={"email": "ü@example.com"})
    for message in (track, identify):
        assert message["integrations"] == {"Klaviyo": False, "Klaviyo (Actions)": False}
        assert message["context"]["library"]["name"] == SEGMENT_LIBRARY_NAME
        assert _own(message)
        assert message["timestamp"].endswith("Z") and message["messageId"]
    assert track["context"]["ip"] == "1.2.3.4" and track["event"] == "Order Completed"
    assert identify["anonymousId"] == "a1" and "userId" not in identify
    assert not _own(
        {
            "type": "track",
            "event": "e",
            "userId": "u1",
            "messageId": "m1",
            "context": {"library": {"name": "analytics.js"}},
        }
    )


def test_builders_reject_unusable_messages() -> None:
    with pytest.raises(ValueError, match="userId or anonymousId"):
        build_identify(traits={"a": 1})
    with pytest.raises(ValueError, match="event name"):
        build_track("", user_id="u")


def test_count_limit_splits_at_2500() -> None:
    # Small messages: 2,500 of them stay far below the byte target, so the count limit is what splits.
    messages = [{"type": "track", "event": "e", "userId": str(i)} for i in range(SEGMENT_BATCH_MAX_MESSAGES * 2 + 1)]
    assert sum(map(message_size, messages[:2500])) < SEGMENT_BATCH_TARGET_BYTES / 2
    split = split_batches(messages)
    assert [len(b) for b in split.batches] == [2500, 2500, 1]
    assert [i for b in split.batches for i in b] == list(range(len(messages)))
    assert split.rejected == []


def test_byte_limit_keeps_every_request_under_target() -> None:
    messages = [_track(i, pad=20_000) for i in range(60)]
    size = message_size(messages[0])
    split = split_batches(messages)
    per_batch = (SEGMENT_BATCH_TARGET_BYTES - ENVELOPE_BYTES) // (size + 1)
    assert len(split.batches) == math.ceil(60 / per_batch) > 1
    for batch in split.batches:
        body = encode({"batch": [messages[i] for i in batch], "sentAt": "2026-01-01T00:00:00.000Z"})
        assert len(body) <= SEGMENT_BATCH_TARGET_BYTES < SEGMENT_REQUEST_MAX_BYTES
    # Greedy: a batch is only closed when the next message would not fit.
    first = split.batches[0]
    assert len(encode({"batch": [messages[i] for i in first + [first[-1] + 1]]})) > SEGMENT_BATCH_TARGET_BYTES - 64


def test_oversized_message_is_a_per_item_error() -> None:
    big = _track(1, pad=SEGMENT_MESSAGE_MAX_BYTES)
    just_fits = _track(2, pad=0)
    just_fits["properties"]["pad"] = "y" * (SEGMENT_MESSAGE_MAX_BYTES - message_size(just_fits))
    assert message_size(just_fits) == SEGMENT_MESSAGE_MAX_BYTES
    split = split_batches([_track(0), big, just_fits])
    assert split.batches == [[0, 2]]
    assert [(r.index, r.ok, r.error.code) for r in split.rejected] == [(1, False, "message_too_large")]


def test_multibyte_characters_count_as_bytes() -> None:
    message = _track(0)
    message["properties"]["name"] = "é" * 20_000  # 40,000 bytes in UTF-8 although only 20,000 characters
    assert split_batches([message]).rejected[0].index == 0


def test_unencodable_message_is_rejected_alone() -> None:
    bad = _track(1)
    bad["properties"]["value"] = float("nan")
    split = split_batches([_track(0), bad])
    assert split.batches == [[0]] and split.rejected[0].error.code == "invalid_message"


def test_empty_input() -> None:
    assert split_batches([]) == ([], [])
