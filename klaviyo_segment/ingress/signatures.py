"""Webhook signature checks for the receiver: Segment (Actions) ``X-Signature`` and Klaviyo system webhooks.

Segment signs ``JSON.stringify(event)`` — for a batched delivery, the FIRST event only — so the receiver has to
re-serialise the parsed JSON exactly the way JavaScript does (insertion order, no spaces, raw unicode, JS number
formatting). This is product code and deliberately independent of the sandbox's simulator (a test cross-checks
the two): a shared bug would otherwise be invisible.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any

#: Klaviyo deliveries whose meta.timestamp is further than this from our clock are rejected (replays).
KLAVIYO_WINDOW = timedelta(minutes=5)


class SignatureError(Exception):
    """The request is not provably from the sender (answered 401; the reason is safe to show)."""


class MalformedDelivery(SignatureError):
    """Signed correctly but not shaped like a delivery (answered 400: it can never succeed, and it is not a
    credential problem). A SignatureError subclass so callers of :func:`verify_klaviyo` still see a refusal."""


def _js_number(value: float) -> str:
    """ECMAScript Number::toString (Python's repr differs for 1.0, 1e-07, 1e+16 ...)."""
    if not math.isfinite(value):
        return "null"
    if value == 0:
        return "0"
    sign, digits, exponent = Decimal(repr(value)).as_tuple()
    text = "".join(map(str, digits)).rstrip("0") or "0"
    k, n = len(text), len(digits) + int(exponent)  # value = 0.<text> * 10**n
    if k <= n <= 21:
        out = text + "0" * (n - k)
    elif 0 < n <= 21:
        out = f"{text[:n]}.{text[n:]}"
    elif -6 < n <= 0:
        out = "0." + "0" * (-n) + text
    else:
        e = n - 1
        mantissa = text if k == 1 else f"{text[0]}.{text[1:]}"
        out = f"{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"
    return ("-" if sign else "") + out


def _js_string(value: str) -> str:
    """JSON.stringify escapes lone surrogates as \\uXXXX; json.dumps(ensure_ascii=False) would emit them raw."""
    out = json.dumps(value, ensure_ascii=False)
    if any(0xD800 <= ord(c) <= 0xDFFF for c in out):
        out = "".join(f"\\u{ord(c):04x}" if 0xD800 <= ord(c) <= 0xDFFF else c for c in out)
    return out


def js_stringify(obj: Any) -> str:
    """Serialise parsed JSON exactly like JavaScript's ``JSON.stringify(obj)``."""
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, int):
        return str(obj)
    if isinstance(obj, float):
        return _js_number(obj)
    if isinstance(obj, str):
        return _js_string(obj)
    if isinstance(obj, dict):
        return "{" + ",".join(f"{_js_string(str(k))}:{js_stringify(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(js_stringify(v) for v in obj) + "]"
    raise TypeError(f"not JSON: {type(obj).__name__}")


def _digest_matches(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), given.strip().lower().encode())  # type: ignore[union-attr]


def segment_signature(secret: str, event: Any) -> str:
    return hmac.new(secret.encode(), js_stringify(event).encode(), hashlib.sha1).hexdigest()


def verify_segment_bytes(secret: str, signed: bytes, signature: str | None) -> None:
    """Check ``X-Signature`` over the exact bytes Segment signed, before anything is parsed.

    For a single event the signed ``JSON.stringify(event)`` IS the request body; for a batch it is the first
    element's text inside the array. Checking bytes means a forger cannot make the receiver parse anything.
    """
    if not signature:
        raise SignatureError("missing X-Signature")
    if not _digest_matches(hmac.new(secret.encode(), signed, hashlib.sha1).hexdigest(), signature):
        raise SignatureError("X-Signature does not match")


def verify_segment(secret: str, payload: Any, signature: str | None) -> None:
    """Check ``X-Signature`` for a parsed delivery (one event, or a list whose first event was signed)."""
    if not signature:
        raise SignatureError("missing X-Signature")
    signed = payload[0] if isinstance(payload, list) and payload else payload
    if not _digest_matches(segment_signature(secret, signed), signature):
        raise SignatureError("X-Signature does not match")


def klaviyo_signature(secret: str, body: bytes, timestamp: str) -> str:
    return hmac.new(secret.encode(), body + timestamp.encode(), hashlib.sha256).hexdigest()


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def verify_klaviyo_signature(secret: str, body: bytes, headers: Any) -> None:
    """Signature over raw body + ``Klaviyo-Timestamp``: checked before the body is parsed."""
    signature, timestamp = headers.get("klaviyo-signature"), headers.get("klaviyo-timestamp")
    if not signature or timestamp is None:
        raise SignatureError("missing Klaviyo-Signature or Klaviyo-Timestamp")
    if not _digest_matches(klaviyo_signature(secret, body, timestamp), signature):
        raise SignatureError("Klaviyo-Signature does not match")


def verify_klaviyo(
    secret: str,
    body: bytes,
    payload: Any,
    headers: Any,
    *,
    now: datetime | None = None,
    window: timedelta = KLAVIYO_WINDOW,
) -> None:
    """The signature (:func:`verify_klaviyo_signature`), then the replay checks (:func:`verify_klaviyo_meta`)."""
    verify_klaviyo_signature(secret, body, headers)
    verify_klaviyo_meta(payload, headers, now=now, window=window)


def verify_klaviyo_meta(
    payload: Any, headers: Any, *, now: datetime | None = None, window: timedelta = KLAVIYO_WINDOW
) -> None:
    """Freshness from ``meta.timestamp`` (the header clock has been reported wrong, so the signed body's own
    timestamp decides); the webhook id must match the header. No meta object at all is malformed (400)."""
    meta = payload.get("meta") if isinstance(payload, dict) else None
    if not isinstance(meta, dict):
        raise MalformedDelivery("Klaviyo delivery has no meta object")
    sent = _parse_time(meta.get("timestamp"))
    current = now or datetime.now(UTC)
    if sent is None or abs(current - sent) > window:
        raise SignatureError("meta.timestamp outside the accepted window (replayed or stale delivery)")
    header_id = headers.get("klaviyo-webhook-id")
    if not header_id or str(meta.get("klaviyo_webhook_id")) != header_id:
        raise SignatureError("meta.klaviyo_webhook_id does not match the Klaviyo-Webhook-Id header")
