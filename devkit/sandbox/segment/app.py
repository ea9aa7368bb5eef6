"""Segment HTTP Tracking API emulator (``POST /v1/{identify,track,page,screen,group,alias,batch}``).

It answers the way real Segment does, including the traps a client must avoid: a wrong write key still gets
200 (the data is silently lost), a batch over 2,500 messages gets 200 and is dropped, and only invalid JSON or
oversized payloads get 400. ``Content-Encoding: gzip`` bodies (what ``segment-analytics-python`` sends with
``gzip=True``) are inflated first, a corrupt one is a 400, and the size limits apply to the inflated JSON.
Every silent loss is counted in ``/__sandbox/stats`` so tests can assert it never
happens. Messages are de-duplicated on ``messageId`` like Segment does.

Inspection (no auth): ``GET /__sandbox/messages?type=&event=&userId=``, ``GET /__sandbox/invalid``,
``GET /__sandbox/stats``, ``POST /__sandbox/reset``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from klaviyo_segment.constants import (
    SEGMENT_BATCH_MAX_MESSAGES,
    SEGMENT_MESSAGE_MAX_BYTES,
    SEGMENT_REQUEST_MAX_BYTES,
)
from klaviyo_segment.devkit.sandbox import strictjson

MESSAGE_TYPES = ("identify", "track", "page", "screen", "group", "alias")


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge batch-level context/integrations into an item: the item's own values win, nested dicts merge."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _semantic_error(message: dict[str, Any]) -> str | None:
    """What Segment's Debugger would flag: such messages get 200 but never reach destinations."""
    kind = message.get("type")
    if kind not in MESSAGE_TYPES:
        return f"unknown type {kind!r}"
    if not message.get("userId") and not message.get("anonymousId"):
        return "userId or anonymousId is required"
    if kind == "track" and not isinstance(message.get("event"), str):
        return "track requires event"
    if kind == "group" and not message.get("groupId"):
        return "group requires groupId"
    if kind == "alias" and not message.get("previousId"):
        return "alias requires previousId"
    return None


@dataclass
class SegmentState:
    """Everything the emulator received; shared by the HTTP inspection API and in-process callers."""

    write_key: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    invalid: list[dict[str, Any]] = field(default_factory=list)
    seen_ids: set[str] = field(default_factory=set)
    stats: Counter[str] = field(default_factory=Counter)

    def reset(self) -> None:
        self.messages.clear()
        self.invalid.clear()
        self.seen_ids.clear()
        self.stats.clear()

    def query(
        self, type_: str | None = None, event: str | None = None, user_id: str | None = None
    ) -> list[dict[str, Any]]:
        return [
            m
            for m in self.messages
            if (type_ is None or m.get("type") == type_)
            and (event is None or m.get("event") == event)
            and (user_id is None or m.get("userId") == user_id)
        ]

    def snapshot(self) -> dict[str, Any]:
        base = {
            k: 0
            for k in (
                "requests",
                "stored",
                "unauthorized",
                "unauthorized_messages",
                "bad_request",
                "dropped_over_limit",
                "deduplicated",
                "invalid",
            )
        }
        return {**base, **self.stats}

    def store(self, message: dict[str, Any], received_at: str) -> None:
        message_id = message.get("messageId")
        if not isinstance(message_id, str) or not message_id:
            message_id = message["messageId"] = f"sandbox-{uuid.uuid4()}"
        if message_id in self.seen_ids:
            self.stats["deduplicated"] += 1
            return
        message["receivedAt"] = received_at
        message.setdefault("timestamp", received_at)
        problem = _semantic_error(message)
        if problem:
            self.stats["invalid"] += 1
            self.invalid.append({"reason": problem, "message": message})
            return
        self.seen_ids.add(message_id)
        self.messages.append(message)
        self.stats["stored"] += 1
        self.stats[f"type:{message['type']}"] += 1


def _bad_request(state: SegmentState, reason: str) -> JSONResponse:
    state.stats["bad_request"] += 1
    state.stats[f"bad_request:{reason}"] += 1
    return JSONResponse({"success": False, "code": reason, "message": reason.replace("_", " ")}, status_code=400)


def _basic_user(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0]


def _authorized(state: SegmentState, request: Request, body: dict[str, Any]) -> bool:
    candidates = [_basic_user(request), body.get("writeKey")]
    expected = state.write_key.encode()
    return any(isinstance(c, str) and hmac.compare_digest(c.encode(), expected) for c in candidates)


def _too_big(message: Any) -> bool:
    return len(json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()) > SEGMENT_MESSAGE_MAX_BYTES


def _gunzip(raw: bytes, limit: int) -> bytes | None:
    """Inflate a gzip body, at most ``limit + 1`` bytes (enough to say "too large" without inflating a bomb).

    ``None`` for anything that is not one complete gzip stream (bad header, bad CRC, truncated, trailing junk).
    """
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(raw, limit + 1)
        if len(out) > limit:
            return out
        out += inflater.flush()
    except zlib.error:
        return None
    if not inflater.eof or inflater.unused_data:
        return None
    return out


async def _tracking(request: Request) -> JSONResponse:
    state: SegmentState = request.app.state.segment
    kind = request.path_params["kind"]
    if kind not in MESSAGE_TYPES and kind != "batch":
        return JSONResponse({"success": False, "message": "not found"}, status_code=404)
    state.stats["requests"] += 1
    limit = SEGMENT_REQUEST_MAX_BYTES if kind == "batch" else SEGMENT_MESSAGE_MAX_BYTES
    raw = await request.body()
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding == "gzip":
        state.stats["gzip"] += 1
        inflated = _gunzip(raw, limit)
        if inflated is None:
            return _bad_request(state, "invalid_gzip")
        raw = inflated
    elif encoding not in ("", "identity"):
        return _bad_request(state, "unsupported_content_encoding")
    if len(raw) > limit:
        return _bad_request(state, "request_too_large" if kind == "batch" else "message_too_large")
    try:
        body = strictjson.loads(raw)  # no NaN/Infinity: the tracking API's parser rejects them
    except (ValueError, UnicodeDecodeError):
        return _bad_request(state, "invalid_json")
    if not isinstance(body, dict):
        return _bad_request(state, "invalid_json")
    if kind == "batch":
        items = body.get("batch")
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            return _bad_request(state, "invalid_batch")
        if any(_too_big(i) for i in items):
            return _bad_request(state, "message_too_large")
    else:
        items = [{**body, "type": kind}]
    if not _authorized(state, request, body):
        state.stats["unauthorized"] += 1
        state.stats["unauthorized_messages"] += len(items)
        return JSONResponse({"success": True})
    if len(items) > SEGMENT_BATCH_MAX_MESSAGES:
        state.stats["dropped_over_limit"] += len(items)
        return JSONResponse({"success": True})
    received_at = _now_iso()
    envelope = (
        {k: body[k] for k in ("context", "integrations") if isinstance(body.get(k), dict)} if kind == "batch" else {}
    )
    for item in items:
        message = {k: v for k, v in item.items() if k != "writeKey"}
        for key, value in envelope.items():
            own = message.get(key)
            message[key] = _deep_merge(value, own) if isinstance(own, dict) else dict(value)
        if kind == "batch" and "sentAt" in body:
            message.setdefault("sentAt", body["sentAt"])
        state.store(message, received_at)
    return JSONResponse({"success": True})


async def _messages(request: Request) -> JSONResponse:
    state: SegmentState = request.app.state.segment
    params = request.query_params
    return JSONResponse(state.query(params.get("type"), params.get("event"), params.get("userId")))


async def _invalid(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.segment.invalid)


async def _stats(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.segment.snapshot())


async def _reset(request: Request) -> JSONResponse:
    request.app.state.segment.reset()
    return JSONResponse({"reset": True})


def create_app(write_key: str) -> Starlette:
    """Build the emulator; its state is ``app.state.segment`` (a :class:`SegmentState`)."""
    app = Starlette(
        routes=[
            Route("/v1/{kind:str}", _tracking, methods=["POST"]),
            Route("/__sandbox/messages", _messages, methods=["GET"]),
            Route("/__sandbox/invalid", _invalid, methods=["GET"]),
            Route("/__sandbox/stats", _stats, methods=["GET"]),
            Route("/__sandbox/reset", _reset, methods=["POST"]),
        ]
    )
    app.state.segment = SegmentState(write_key=write_key)
    return app


def get_state(app: Starlette) -> SegmentState:
    """In-process access to what the emulator stored (the same data the inspection API serves)."""
    state: SegmentState = app.state.segment
    return state
