"""The webhook receiver (Starlette): verifies senders, commits deliveries durably, then answers.

Status codes are chosen for the senders' retry rules: Segment does not retry 4xx (except 408/423/429), so 4xx is
only for requests that can never succeed (bad signature, invalid JSON, abuse-sized bodies); anything that may
succeed later (store down, overload) is 503/429 so the delivery comes back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from klaviyo_segment import redact
from klaviyo_segment.constants import ENV_INSECURE_DEV
from klaviyo_segment.ingress.groupcommit import CommitFailed, Entry, GroupCommitter, Overloaded
from klaviyo_segment.ingress.signatures import SignatureError, verify_klaviyo, verify_segment
from klaviyo_segment.segment_spec import message_key

log = logging.getLogger("klaviyo_segment.ingress.receiver")
redact.install(log)

#: Far above Segment's largest delivery (batches of at most a few MB); only abuse hits it.
MAX_BODY_BYTES = 16 * 1024 * 1024
ENGAGEMENT_FLOW = "engagement-to-segment"
KLAVIYO_KEY_PREFIX = "klaviyo:"


@dataclass
class ReceiverSettings:
    segment_secret: str | None = None
    klaviyo_secret: str | None = None
    insecure_dev: bool = False
    max_body_bytes: int = MAX_BODY_BYTES

    @classmethod
    def from_env(cls, segment_secret: str | None = None, klaviyo_secret: str | None = None) -> ReceiverSettings:
        """Explicit secrets (flags) win over $SEGMENT_SHARED_SECRET / $KLAVIYO_WEBHOOK_SECRET."""
        from klaviyo_segment.settings import env_settings

        env = env_settings()
        return cls(segment_secret=segment_secret or _plain(env.segment_shared_secret),
                   klaviyo_secret=klaviyo_secret or _plain(env.klaviyo_webhook_secret),
                   insecure_dev=env.insecure_dev)


def _plain(secret: Any) -> str | None:
    return secret.get_secret_value() or None if secret is not None else None


class Rejected(Exception):
    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}


def _error(exc: Rejected) -> JSONResponse:
    return JSONResponse({"error": exc.reason}, status_code=exc.status, headers=exc.headers)


async def _read(request: Request, limit: int) -> tuple[bytes, Any]:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Rejected(413, f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Rejected(413, f"body larger than {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    try:
        return body, json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Rejected(400, f"invalid JSON: {exc}") from None


def _secret(configured: str | None, insecure: bool, name: str) -> str | None:
    """The secret to verify with; None = insecure dev mode. No secret and no dev flag = refuse everything."""
    if configured:
        return configured
    if insecure:
        return None
    raise Rejected(401, f"{name} is not configured on this receiver (set it, or {ENV_INSECURE_DEV}=1 for dev)")


def segment_entries(payload: Any, route: Callable[[dict[str, Any]], list[str]]) -> list[Entry]:
    messages = payload if isinstance(payload, list) else [payload]
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise Rejected(400, f"message {i} is not a JSON object")
    return [(message_key(m), route(m), m) for m in messages]


def klaviyo_entries(payload: Any) -> list[Entry]:
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        raise Rejected(400, "Klaviyo delivery has no data array")
    meta = payload.get("meta") if isinstance(payload.get("meta"), dict) else {}
    entries: list[Entry] = []
    for i, record in enumerate(data):
        if not isinstance(record, dict):
            raise Rejected(400, f"data[{i}] is not a JSON object")
        ext = record.get("external_id")
        body = dict(record)
        if meta.get("klaviyo_account_id"):
            body.setdefault("klaviyo_account_id", meta["klaviyo_account_id"])
        entries.append((f"{KLAVIYO_KEY_PREFIX}{ext}" if ext not in (None, "") else None, [ENGAGEMENT_FLOW], body))
    return entries


def create_app(committer: GroupCommitter, route: Callable[[dict[str, Any]], list[str]],
               settings: ReceiverSettings) -> Starlette:
    """``route`` is ``lambda m: routing.flows_for(m, config)``; the committer must be started by the caller."""

    async def commit(entries: list[Entry], source: str) -> JSONResponse:
        try:
            await committer.submit(entries)
        except Overloaded as exc:
            raise Rejected(429, "overloaded", {"Retry-After": str(exc.retry_after)}) from None
        except CommitFailed as exc:
            log.warning("%s delivery not committed (%s): answering 503", source, exc)
            raise Rejected(503, "not stored, retry", {"Retry-After": "1"}) from None
        return JSONResponse({"accepted": len(entries)})

    async def segment(request: Request) -> JSONResponse:
        try:
            secret = _secret(settings.segment_secret, settings.insecure_dev, "SEGMENT_SHARED_SECRET")
            _, payload = await _read(request, settings.max_body_bytes)
            if secret is not None:
                try:
                    verify_segment(secret, payload, request.headers.get("x-signature"))
                except SignatureError as exc:
                    raise Rejected(401, str(exc)) from None
            return await commit(segment_entries(payload, route), "segment")
        except Rejected as exc:
            log.info("segment delivery rejected: %s %s", exc.status, exc.reason)
            return _error(exc)

    async def klaviyo(request: Request) -> JSONResponse:
        try:
            secret = _secret(settings.klaviyo_secret, settings.insecure_dev, "KLAVIYO_WEBHOOK_SECRET")
            body, payload = await _read(request, settings.max_body_bytes)
            if secret is not None:
                try:
                    verify_klaviyo(secret, body, payload, request.headers)
                except SignatureError as exc:
                    raise Rejected(401, str(exc)) from None
            return await commit(klaviyo_entries(payload), "klaviyo")
        except Rejected as exc:
            log.info("klaviyo delivery rejected: %s %s", exc.status, exc.reason)
            return _error(exc)

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/segment", segment, methods=["POST"]),
                             Route("/klaviyo", klaviyo, methods=["POST"]),
                             Route("/healthz", healthz, methods=["GET"])])
