"""What the receiver lets through its door: bounded JSON parsing and per-message validation and normalisation.

Why here, before the group commit: one commit carries the messages of many requests, so a single message the
store cannot hold (a NUL character, a lone UTF-16 surrogate: neither SQLite's UTF-8 encoder nor PostgreSQL text
accepts them) used to fail the transaction for every request in it (503 for the valid ones too). Each message is
therefore checked on its own here; a bad single event is answered 400 with the reason, a bad element of a batch
becomes a dead letter (flow ``receiver``) and the rest of the batch is accepted.

Rules (docs/reliability.md):
- the body is JSON nested at most :data:`MAX_DEPTH` levels, integers have at most :data:`MAX_INT_DIGITS` digits,
  and NaN/Infinity or numbers beyond a double are refused (JavaScript could not have produced them);
- a message is a non-empty JSON object with a known ``type``;
- a NUL character anywhere (keys or values) is refused: PostgreSQL text cannot hold it and stripping it could
  merge two ids;
- a lone surrogate in an identifier (messageId, userId, anonymousId, previousId, groupId) is refused, because
  replacing it could make two different ids equal (and the second be dropped as a duplicate); anywhere else it is
  replaced with U+FFFD (a truncated emoji in a product name should not cost the event).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

#: Dead letters refused at the door carry this flow name: inspect and purge them; they cannot be replayed.
DOOR_FLOW = "receiver"
MAX_DEPTH = 64
MAX_INT_DIGITS = 40
KNOWN_TYPES = ("identify", "track", "page", "screen", "group", "alias", "delete")
ID_FIELDS = ("messageId", "userId", "anonymousId", "previousId", "groupId")
_SURROGATE = re.compile("[\ud800-\udfff]")
_WHITESPACE = " \t\n\r"


class Invalid(ValueError):
    """The input cannot be accepted; ``reason`` is safe to send back and to store."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _int(text: str) -> int:
    # checked before int(): Python's own limit (4300 digits) raises a bare ValueError, and big ints cost CPU
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise Invalid(f"number too large: integers are limited to {MAX_INT_DIGITS} digits")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise Invalid(f"number out of range: {text[:20]}")
    return value


def _constant(name: str) -> Any:
    raise Invalid(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_int=_int, parse_float=_float, parse_constant=_constant)


def _text(body: bytes | str) -> str:
    if isinstance(body, str):
        return body
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("invalid JSON: the body is not UTF-8") from None


def _depth_check(value: Any) -> None:
    """Iterative, so a deep value cannot exhaust the stack here either."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > MAX_DEPTH:
            raise Invalid(f"JSON nested deeper than {MAX_DEPTH} levels")
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def _decode(text: str, start: int | None = None) -> tuple[Any, int]:
    try:
        if start is None:
            return _DECODER.decode(text), len(text)
        return _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        raise Invalid(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise Invalid(f"JSON nested deeper than {MAX_DEPTH} levels") from None


def loads(body: bytes | str) -> Any:
    """Parse a whole body within the bounds above (every failure is :class:`Invalid`, never a 500)."""
    value, _ = _decode(_text(body))
    _depth_check(value)
    return value


def is_array(body: bytes) -> bool:
    """A batch delivery (JSON array) as opposed to a single event, judged without parsing."""
    return body.lstrip(_WHITESPACE.encode())[:1] == b"["


def first_element(body: bytes) -> tuple[Any, bytes] | None:
    """Parse only the first element of a JSON array body: (value, its exact bytes), or None for ``[]``.

    Segment signs only the first event of a batch, so this is all that is needed to authenticate one; the rest
    of the body is parsed only once the signature matched.
    """
    text = _text(body)
    start = text.index("[") + 1
    while start < len(text) and text[start] in _WHITESPACE:
        start += 1
    if text.startswith("]", start):
        return None
    value, end = _decode(text, start)
    _depth_check(value)
    return value, text[start:end].encode()


def _clean(value: str) -> str:
    return _SURROGATE.sub("\ufffd", value.replace("\x00", "\ufffd"))


def sanitized(value: Any) -> Any:
    """A copy any store can hold (NUL and lone surrogates -> U+FFFD): what a dead letter keeps of a bad message."""
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, dict):
        return {_clean(str(k)): sanitized(v) for k, v in value.items()}
    if isinstance(value, list):
        return [sanitized(v) for v in value]
    return value


def _normalise(value: Any, path: str) -> Any:
    """Raise Invalid for a NUL anywhere; replace lone surrogates (identifiers are checked by the caller)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise Invalid(f"{path} contains a NUL character (U+0000), which the store cannot hold")
        return _SURROGATE.sub("\ufffd", value) if _SURROGATE.search(value) else value
    if isinstance(value, dict):
        out = {}
        for key, child in value.items():
            where = f"{path}.{_clean(key)[:40]}"
            if "\x00" in key:
                raise Invalid(f"{where} (a key) contains a NUL character (U+0000), which the store cannot hold")
            out[_SURROGATE.sub("\ufffd", key)] = _normalise(child, where)
        return out
    if isinstance(value, list):
        return [_normalise(child, f"{path}[{i}]") for i, child in enumerate(value)]
    return value


def check_message(message: Any, *, scan_strings: bool = True) -> dict[str, Any]:
    """The message as it may be stored, or :class:`Invalid` with the reason.

    ``scan_strings=False`` skips the string walk: the receiver passes it when the raw body holds no ``\\u``
    escape, since NUL and lone surrogates can only arrive escaped (raw control characters are invalid JSON).
    """
    if not isinstance(message, dict):
        raise Invalid(f"message is not a JSON object (got {type(message).__name__})")
    if not message:
        raise Invalid("empty message ({}): nothing to deliver")
    kind = message.get("type")
    if kind is None:
        raise Invalid("message has no type")
    if kind not in KNOWN_TYPES:
        shown = _clean(kind)[:40] if isinstance(kind, str) else type(kind).__name__
        raise Invalid(f"unknown type {shown!r} (expected one of {', '.join(KNOWN_TYPES)})")
    if not scan_strings:
        return message
    for field in ID_FIELDS:
        value = message.get(field)
        if isinstance(value, str) and _SURROGATE.search(value):
            raise Invalid(
                f"{field} contains a lone UTF-16 surrogate (an id cannot be repaired without risking "
                "a collision with another id)"
            )
    return _normalise(message, "$")  # type: ignore[no-any-return]


def storable_text(message: Any) -> Any:
    """The text rules of :func:`check_message` without its Segment type checks (inputs of any flow, e.g. a file
    for ``run --input``): a NUL anywhere or a lone surrogate in an identifier raises :class:`Invalid`, other lone
    surrogates become U+FFFD."""
    if isinstance(message, dict):
        for field in ID_FIELDS:
            value = message.get(field)
            if isinstance(value, str) and _SURROGATE.search(value):
                raise Invalid(
                    f"{field} contains a lone UTF-16 surrogate (an id cannot be repaired without "
                    "risking a collision with another id)"
                )
    return _normalise(message, "$")


def message_id_of(message: Any) -> str | None:
    """The (sanitised) messageId of a refused message, for its dead letter."""
    mid = message.get("messageId") if isinstance(message, dict) else None
    return _clean(str(mid))[:200] if isinstance(mid, (str, int)) and str(mid) else None
