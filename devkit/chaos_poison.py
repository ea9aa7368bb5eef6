"""Poison for the chaos run (issue 17): hostile messages mixed into the stream, and what must become of each.

Three ways in, three expectations:

* batch elements the receiver's door refuses (a lone surrogate or a NUL in an id, no ``type``, an unknown
  ``type``): the rest of the batch is accepted; each refused element is a dead letter (flow ``receiver``) with a
  reason. Lone surrogates elsewhere (a property, an event name) are repaired to U+FFFD at the door: those messages
  are valid and must arrive exactly once, in their repaired form;
* single-event requests that are invalid (the above, ``{}``, JSON nested far deeper than the door allows): 400
  with a reason (Segment does not retry a 4xx, so the reason is what an operator sees);
* "legacy" batches written straight to the store, as batches accepted before the door existed were: a lone
  surrogate in a property makes the flow's request fail to encode; that message alone must become a dead letter
  of its flow (per-message isolation), the valid messages stored with it must be delivered.
"""

from __future__ import annotations

import asyncio
from typing import Any

#: Door-refused kinds inside batches, cycled through.
REFUSED_KINDS = ("surrogate_user_id", "nul_user_id", "typeless", "unknown_type")
#: Kinds the door repairs (U+FFFD): valid messages, expected in Klaviyo in repaired form.
REPAIRED_KINDS = ("surrogate_property", "surrogate_event")


def _refused(kind: str, i: int) -> dict[str, Any]:
    mid = f"poison-{kind}-{i}"
    base: dict[str, Any] = {
        "type": "track",
        "messageId": mid,
        "userId": f"poison-user-{i}",
        "event": "Poisoned",
        "properties": {"n": i},
    }
    if kind == "surrogate_user_id":
        return base | {"userId": f"user-\ud800-{i}"}
    if kind == "nul_user_id":
        return base | {"type": "identify", "userId": f"user-\x00-{i}", "traits": {"name": "nul"}}
    if kind == "typeless":
        return {k: v for k, v in base.items() if k != "type"}
    return base | {"type": "purchase"}


def _repaired(message: dict[str, Any], kind: str) -> dict[str, Any]:
    if kind == "surrogate_event":
        return message | {"event": f"{message['event']} \ud83d"}  # an emoji cut in half
    return message | {"properties": {**(message.get("properties") or {}), "note": "half an emoji: \udc00!"}}


def with_poison(stream: list[dict[str, Any]], every: int) -> tuple[list[dict[str, Any]], set[str], set[str]]:
    """Every ``every``-th message: insert a door-refused element before it, or (alternating) repair-poison it
    when it is a track. Returns (stream, refused messageIds, repaired messageIds)."""
    out: list[dict[str, Any]] = []
    refused: set[str] = set()
    repaired: set[str] = set()
    for i, message in enumerate(stream):
        if i % every == every // 2:
            if (i // every) % 2 == 0:
                bad = _refused(REFUSED_KINDS[(i // every // 2) % len(REFUSED_KINDS)], i)
                refused.add(bad["messageId"])
                out.append(bad)
            elif message.get("type") == "track" and message.get("event"):
                message = _repaired(message, REPAIRED_KINDS[(i // every // 2) % len(REPAIRED_KINDS)])
                repaired.add(str(message["messageId"]))
        out.append(message)
    return out, refused, repaired


def as_stored(stream: list[dict[str, Any]], refused: set[str], repaired: set[str]) -> list[dict[str, Any]]:
    """The stream as the door stores it (repairs applied, refused elements gone): what the expectation folds."""
    from klaviyo_segment.ingress.door import check_message

    return [
        check_message(m) if m.get("messageId") in repaired else m for m in stream if m.get("messageId") not in refused
    ]


def single_requests() -> list[dict[str, Any]]:
    """Invalid single events, each posted on its own: every one must get a 4xx with a reason."""
    deep: Any = {"leaf": 1}
    for _ in range(200):
        deep = {"n": deep}
    return [_refused(kind, 900_000 + n) for n, kind in enumerate(REFUSED_KINDS)] + [
        {},
        {"type": "track", "messageId": "poison-deep", "userId": "u", "event": "Deep", "properties": deep},
    ]


async def post_singles(url: str, secret: str) -> dict[str, Any]:
    """Post each invalid single event (signed) and report the answers: status and whether a reason came back."""
    import httpx

    from klaviyo_segment.ingress.signatures import js_stringify, segment_signature

    answers: list[tuple[int, str]] = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for message in single_requests():
            body = js_stringify(message).encode()
            headers = {"Content-Type": "application/json", "X-Signature": segment_signature(secret, message)}
            for _attempt in range(20):  # 503 under load is a retry, like Segment's
                response = await client.post("/segment", content=body, headers=headers)
                if response.status_code != 503:
                    break
                await asyncio.sleep(0.2)
            answers.append((response.status_code, response.text))
    return {
        "requests": len(answers),
        "answered_4xx_with_reason": sum(1 for status, text in answers if 400 <= status < 500 and len(text.strip()) > 2),
        "statuses": sorted({status for status, _ in answers}),
    }


def legacy_batch(count: int, users: list[str], timestamp: str) -> tuple[list[dict[str, Any]], set[str]]:
    """Messages stored without the door (pre-door batches): valid tracks of ``users`` (people the stream keeps)
    with lone-surrogate poison among them. Returns (messages, the poison messageIds: dead letters of
    forward-track)."""
    messages: list[dict[str, Any]] = []
    poison: set[str] = set()
    for i in range(count):
        mid = f"legacy-{i}"
        message = {
            "type": "track",
            "messageId": mid,
            "userId": users[i % len(users)],
            "event": "Legacy Ping",
            "properties": {"n": i},
            "timestamp": timestamp,
        }
        if i % 4 == 1:
            message["properties"] = {"n": i, "name": "cut \ud800 emoji"}
            poison.add(mid)
        messages.append(message)
    return messages, poison
