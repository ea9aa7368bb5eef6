"""Shared test helpers: a real store on a temp SQLite file and signed Segment/Klaviyo requests."""

from __future__ import annotations

import json
from typing import Any

from klaviyo_segment.ingress.signatures import js_stringify, klaviyo_signature, segment_signature

SEGMENT_SECRET = "seg-secret"
KLAVIYO_SECRET = "kl-secret"


def segment_request(payload: Any, secret: str = SEGMENT_SECRET) -> tuple[bytes, dict[str, str]]:
    first = payload[0] if isinstance(payload, list) else payload
    return js_stringify(payload).encode(), {
        "Content-Type": "application/json",
        "X-Signature": segment_signature(secret, first),
    }


def identify(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "type": "identify",
        "messageId": f"m-{i}",
        "userId": f"u{i}",
        "traits": {"email": f"user{i}@example.com"},
        "timestamp": "2026-11-28T10:00:00Z",
        **extra,
    }


def klaviyo_request(
    records: list[dict[str, Any]], timestamp: str, meta_time: str, webhook_id: str = "WH1", secret: str = KLAVIYO_SECRET
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "data": records,
            "meta": {"klaviyo_account_id": "A1", "klaviyo_webhook_id": webhook_id, "timestamp": meta_time},
        }
    ).encode()
    return body, {
        "Content-Type": "application/json",
        "Klaviyo-Webhook-Id": webhook_id,
        "Klaviyo-Timestamp": timestamp,
        "Klaviyo-Signature": klaviyo_signature(secret, body, timestamp),
    }
