"""Outgoing Klaviyo system webhooks: the signed engagement deliveries the project's receiver must verify.

Built from the fact sheet (B5), independently of the receiver's verification code: body
``{"data":[{external_id, payload, topic}], "meta":{...}}``, ``Klaviyo-Timestamp`` as an HTTP-date and
``Klaviyo-Signature = hex(HMAC_SHA256(secret, raw_body + timestamp))``, body first, no separator.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import httpx
from pydantic import SecretStr

from klaviyo_segment.constants import KLAVIYO_REVISION

log = logging.getLogger("klaviyo_segment.devkit.sandbox.webhooks")

#: Metric name -> system-webhook topic id.
TOPICS: dict[str, str] = {
    "Received Email": "event:klaviyo.received_email",
    "Opened Email": "event:klaviyo.opened_email",
    "Clicked Email": "event:klaviyo.clicked_email",
    "Bounced Email": "event:klaviyo.bounced_email",
    "Unsubscribed": "event:klaviyo.unsubscribed",
    "Marked Email as Spam": "event:klaviyo.marked_email_as_spam",
}


def record_for_event(event: Mapping[str, Any], metric_name: str) -> dict[str, Any]:
    """One ``data[]`` entry for a stored event in Get-Event shape (``{"type":"event","id",...}``)."""
    if metric_name not in TOPICS:
        raise ValueError(f"no webhook topic for metric {metric_name!r}; known: {', '.join(TOPICS)}")
    return {"external_id": str(event["id"]), "payload": dict(event), "topic": TOPICS[metric_name]}


def _secret_bytes(secret: str | SecretStr) -> bytes:
    return (secret.get_secret_value() if isinstance(secret, SecretStr) else secret).encode()


def sign(secret: str | SecretStr, body: bytes, timestamp: str) -> str:
    """Klaviyo's signature: hex HMAC-SHA256 over the raw body immediately followed by the timestamp header."""
    return hmac.new(_secret_bytes(secret), body + timestamp.encode(), hashlib.sha256).hexdigest()


def build_delivery(
    records: Sequence[Mapping[str, Any]],
    *,
    secret: str | SecretStr,
    webhook_id: str,
    account_id: str,
    now: datetime | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Raw body and headers of one delivery; ``records`` are ``{external_id, payload, topic}`` mappings."""
    moment = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    data = [{"external_id": str(r["external_id"]), "payload": r["payload"], "topic": str(r["topic"])} for r in records]
    meta = {
        "klaviyo_account_id": account_id,
        "klaviyo_webhook_id": webhook_id,
        "timestamp": moment.isoformat(),
        "version": KLAVIYO_REVISION,
    }
    body = json.dumps({"data": data, "meta": meta}, separators=(",", ":")).encode()
    timestamp = format_datetime(moment, usegmt=True)
    headers = {
        "Content-Type": "application/json",
        "Klaviyo-Webhook-Id": webhook_id,
        "Klaviyo-Timestamp": timestamp,
        "Klaviyo-Signature": sign(secret, body, timestamp),
    }
    return body, headers


async def emit_webhook(
    url: str,
    secret: str | SecretStr,
    webhook_id: str,
    account_id: str,
    records: Sequence[Mapping[str, Any]],
    *,
    attempts: int = 4,
    backoff: float = 0.2,
    timeout: float = 10.0,
) -> int:
    """POST one delivery, retrying 5xx and connection errors with exponential backoff (bounded).

    Returns the final HTTP status, or 0 when every attempt failed at the connection level. Each retry is
    re-signed with a fresh timestamp, as a real sender would.
    """
    status = 0
    async with httpx.AsyncClient(timeout=timeout) as client:
        for attempt in range(max(1, attempts)):
            body, headers = build_delivery(records, secret=secret, webhook_id=webhook_id, account_id=account_id)
            try:
                response = await client.post(url, content=body, headers=headers)
                status = response.status_code
            except httpx.TransportError as exc:
                status = 0
                log.warning("webhook delivery %s attempt %d failed: %s", webhook_id, attempt + 1, type(exc).__name__)
            if status and status < 500:
                return status
            if attempt + 1 < attempts:
                await asyncio.sleep(backoff * (2**attempt))
    return status
