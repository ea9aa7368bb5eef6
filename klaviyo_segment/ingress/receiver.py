"""The webhook receiver (Starlette): verifies senders, commits deliveries durably, then answers.

Status codes are chosen for the senders' retry rules: Segment does not retry 4xx (except 408/423/429), so 4xx is
only for requests that can never succeed (bad signature or token, invalid JSON or message, abuse-sized bodies);
anything that may succeed later (store down, overload, a slow upload) is 503/429/408 so the delivery comes back.

Order of checks, cheapest first, so an unauthenticated request costs almost nothing: the bearer token (a header),
the body size (Content-Length, then a streaming limit and a deadline), the signature over the raw bytes (for a
batch: over its first element, the only one Segment signs, parsed on its own), and only then the whole body
(bounded parse) and each message (:mod:`door`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from klaviyo_segment import redact
from klaviyo_segment.constants import ENV_INSECURE_DEV
from klaviyo_segment.ingress import door
from klaviyo_segment.ingress.groupcommit import (
    CommitFailed,
    Entry,
    GroupCommitter,
    Overloaded,
)
from klaviyo_segment.ingress.signatures import (
    MalformedDelivery,
    SignatureError,
    verify_klaviyo_meta,
    verify_klaviyo_signature,
    verify_segment,
    verify_segment_bytes,
)
from klaviyo_segment.segment_spec import message_key
from klaviyo_segment.store.models import DeadLetterIn

log = logging.getLogger("klaviyo_segment.ingress.receiver")
redact.install(log)

#: Segment's Webhooks (Actions) batches hold at most 4,000 events (default 1,000); 10 MiB leaves ~2.5 KiB per
#: event at the maximum. Larger bodies are refused (413) from Content-Length, or as soon as the stream passes it.
MAX_BODY_BYTES = 10 * 1024 * 1024
ENGAGEMENT_FLOW = "engagement-to-segment"
KLAVIYO_KEY_PREFIX = "klaviyo:"
HEALTH_PROBE_KEY = "receiver:healthz"
PARTIAL_AUTH_WARNING = (
    "SEGMENT_WEBHOOK_TOKEN is not set: Segment signs only the first event of a batched delivery (X-Signature), "
    "so anyone holding one captured signed batch can append events, deletes included, after that first event. "
    "Set SEGMENT_WEBHOOK_TOKEN (config segment.webhook_token) and the same value as a Bearer Authorization header "
    "in the Webhooks (Actions) destination to authenticate whole requests."
)


@dataclass
class ReceiverSettings:
    segment_secret: str | None = None
    klaviyo_secret: str | None = None
    insecure_dev: bool = False
    max_body_bytes: int = MAX_BODY_BYTES
    #: When set, every POST /segment needs ``Authorization: Bearer <token>`` (covers the whole request); several
    #: comma-separated tokens are all accepted (rotation).
    segment_token: str | None = None
    #: Seconds a client may take to send its request headers / its body (slow clients are cut off).
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    #: How long a /healthz store probe result is reused (probes are writes; keep them rare).
    health_cache_seconds: float = 5.0

    @classmethod
    def from_env(
        cls, segment_secret: str | None = None, klaviyo_secret: str | None = None, *, config_token: str | None = None
    ) -> ReceiverSettings:
        """Explicit secrets (flags) win over $SEGMENT_SHARED_SECRET / $KLAVIYO_WEBHOOK_SECRET; ``config_token`` is
        ``segment.webhook_token`` from the config file and $SEGMENT_WEBHOOK_TOKEN wins over it (contracts.md)."""
        from klaviyo_segment.settings import env_settings

        env = env_settings()
        return cls(
            segment_secret=segment_secret or _plain(env.segment_shared_secret),
            klaviyo_secret=klaviyo_secret or _plain(env.klaviyo_webhook_secret),
            insecure_dev=env.insecure_dev,
            segment_token=_plain(env.segment_webhook_token) or config_token or None,
        )

    def startup_warnings(self) -> list[str]:
        return [] if self.segment_token else [PARTIAL_AUTH_WARNING]


def _plain(secret: Any) -> str | None:
    return secret.get_secret_value() or None if secret is not None else None


@dataclass
class ReceiverStats:
    """Counters shown in /healthz: what was refused and what deserves an operator's eye (deletes)."""

    rejected: int = 0
    dead_letters: int = 0
    deletes: int = 0
    #: deletes not covered by Segment's signature (not the first event of a batch) and no token configured
    unsigned_deletes: int = 0


class Rejected(Exception):
    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}


def _error(exc: Rejected) -> JSONResponse:
    return JSONResponse({"error": exc.reason}, status_code=exc.status, headers=exc.headers)


async def _read(request: Request, limit: int, deadline: float) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Rejected(413, f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(deadline):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise Rejected(413, f"body larger than {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise Rejected(408, f"body not received within {deadline:g}s") from None
    return b"".join(chunks)


def _parse(body: bytes) -> Any:
    try:
        return door.loads(body)
    except door.Invalid as exc:
        raise Rejected(400, exc.reason) from None


def _secret(configured: str | None, insecure: bool, name: str) -> str | None:
    """The secret to verify with; None = insecure dev mode. No secret and no dev flag = refuse everything."""
    if configured:
        return configured
    if insecure:
        return None
    raise Rejected(401, f"{name} is not configured on this receiver (set it, or {ENV_INSECURE_DEV}=1 for dev)")


def _check_token(expected: str | None, header: str | None) -> None:
    """``expected`` may list several tokens separated by commas (rotation: old and new accepted for a while);
    each is compared in constant time, and all of them are compared, so timing does not tell which matched."""
    if not expected:
        return
    scheme, _, given = (header or "").partition(" ")
    tokens = [t.strip().encode() for t in expected.split(",") if t.strip()]
    matches = [hmac.compare_digest(given.strip().encode(), token) for token in tokens]
    if scheme.lower() != "bearer" or not any(matches):
        raise Rejected(401, "missing or wrong Authorization: Bearer token (SEGMENT_WEBHOOK_TOKEN)")


def _verify_segment_raw(secret: str, body: bytes, signature: str | None) -> None:
    """Before parsing: a single event is signed as its exact body; a batch by its first element alone."""
    try:
        if not door.is_array(body):
            verify_segment_bytes(secret, body, signature)
            return
        try:
            first = door.first_element(body)
        except door.Invalid as exc:
            raise Rejected(400, exc.reason) from None
        if first is None:
            raise SignatureError("empty batch: nothing was signed")
        value, raw = first
        try:
            verify_segment_bytes(secret, raw, signature)
        except SignatureError:  # the sender may format differently from JS; JSON.stringify is what it signed
            verify_segment(secret, value, signature)
    except SignatureError as exc:
        raise Rejected(401, str(exc)) from None


def segment_entries(
    payload: Any, route: Callable[[dict[str, Any]], list[str]], *, scan_strings: bool = True
) -> tuple[list[Entry], list[DeadLetterIn]]:
    """(messages to commit, dead letters). A single invalid event is Rejected (400); inside a batch each invalid
    element becomes a dead letter with its reason and the others go on."""
    if not isinstance(payload, list):
        try:
            message = door.check_message(payload, scan_strings=scan_strings)
        except door.Invalid as exc:
            raise Rejected(400, exc.reason) from None
        return [(message_key(message), route(message), message)], []
    if not payload:
        raise Rejected(400, "empty batch: nothing to deliver")
    entries: list[Entry] = []
    dead: list[DeadLetterIn] = []
    for i, raw in enumerate(payload):
        try:
            message = door.check_message(raw, scan_strings=scan_strings)
        except door.Invalid as exc:
            stored = door.sanitized(raw)
            dead.append(
                DeadLetterIn(
                    flow=door.DOOR_FLOW,
                    message=stored if isinstance(stored, dict) else {"value": stored},
                    message_id=door.message_id_of(raw),
                    reason=f"refused at the receiver: {exc.reason} (element {i} of the batch)",
                )
            )
            continue
        entries.append((message_key(message), route(message), message))
    return entries, dead


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


def _pseudonym(value: Any) -> str:
    """A stable, non-reversible handle for a person in logs (their id itself is personal data)."""
    return hashlib.sha256(str(value).encode()).hexdigest()[:12] if value not in (None, "") else "-"


class StoreHealth:
    """/healthz's store check: a tiny write, at most once per ``ttl`` seconds, bounded by a timeout."""

    def __init__(self, store: Any, ttl: float, timeout: float = 2.0) -> None:
        self.store, self.ttl, self.timeout = store, ttl, timeout
        self._checked = float("-inf")
        self._problem: str | None = None
        self._lock = asyncio.Lock()

    async def problem(self) -> str | None:
        async with self._lock:
            if time.monotonic() - self._checked >= self.ttl:
                self._problem = await self._probe()
                self._checked = time.monotonic()
            return self._problem

    async def _probe(self) -> str | None:
        try:
            await asyncio.wait_for(self.store.put_values({HEALTH_PROBE_KEY: time.time()}), self.timeout)
        except Exception as exc:  # noqa: BLE001 - any failure means deliveries would not be stored
            log.warning("store write probe failed: %s", type(exc).__name__)
            return f"store cannot write ({type(exc).__name__})"
        return None


def create_app(
    committer: GroupCommitter, route: Callable[[dict[str, Any]], list[str]], settings: ReceiverSettings
) -> Starlette:
    """``route`` is ``lambda m: routing.flows_for(m, config)``; the committer must be started by the caller."""
    stats = ReceiverStats()
    health = StoreHealth(committer.store, settings.health_cache_seconds)

    async def commit(entries: list[Entry], dead: list[DeadLetterIn], source: str) -> JSONResponse:
        try:
            await committer.submit(entries, dead)
        except Overloaded as exc:
            raise Rejected(429, "overloaded", {"Retry-After": str(exc.retry_after)}) from None
        except CommitFailed as exc:
            log.warning("%s delivery not committed (%s): answering 503", source, exc)
            raise Rejected(503, "not stored, retry", {"Retry-After": "1"}) from None
        stats.dead_letters += len(dead)
        answer: dict[str, int] = {"accepted": len(entries)}
        if dead:
            answer["dead_letters"] = len(dead)
        return JSONResponse(answer)

    def note_deletes(entries: list[Entry], batched: bool) -> None:
        for position, (_, _, message) in enumerate(entries):
            if message.get("type") != "delete":
                continue
            covered = bool(settings.segment_token) or (
                settings.segment_secret is not None and not (batched and position > 0)
            )
            stats.deletes += 1
            stats.unsigned_deletes += 0 if covered else 1
            log.warning(
                "delete accepted: messageId=%s user=%s (%s)",
                _pseudonym(message.get("messageId")),
                _pseudonym(message.get("userId") or message.get("anonymousId")),
                "authenticated" if covered else "NOT covered by the signature; set SEGMENT_WEBHOOK_TOKEN",
            )

    async def segment(request: Request) -> JSONResponse:
        try:
            _check_token(settings.segment_token, request.headers.get("authorization"))
            secret = _secret(settings.segment_secret, settings.insecure_dev, "SEGMENT_SHARED_SECRET")
            body = await _read(request, settings.max_body_bytes, settings.body_timeout)
            if secret is not None:
                _verify_segment_raw(secret, body, request.headers.get("x-signature"))
            payload = _parse(body)
            entries, dead = segment_entries(payload, route, scan_strings=b"\\u" in body)
            for letter in dead:
                log.info("batch element refused: %s", letter.reason)
            note_deletes(entries, isinstance(payload, list))
            return await commit(entries, dead, "segment")
        except Rejected as exc:
            stats.rejected += 1
            log.info("segment delivery rejected: %s %s", exc.status, exc.reason)
            return _error(exc)

    async def klaviyo(request: Request) -> JSONResponse:
        try:
            secret = _secret(settings.klaviyo_secret, settings.insecure_dev, "KLAVIYO_WEBHOOK_SECRET")
            body = await _read(request, settings.max_body_bytes, settings.body_timeout)
            if secret is not None:
                try:
                    verify_klaviyo_signature(secret, body, request.headers)  # raw bytes, before parsing
                except SignatureError as exc:
                    raise Rejected(401, str(exc)) from None
            payload = _parse(body)
            if secret is not None:
                try:
                    verify_klaviyo_meta(payload, request.headers)
                except MalformedDelivery as exc:
                    raise Rejected(400, str(exc)) from None
                except SignatureError as exc:
                    raise Rejected(401, str(exc)) from None
            return await commit(klaviyo_entries(payload), [], "klaviyo")
        except Rejected as exc:
            stats.rejected += 1
            log.info("klaviyo delivery rejected: %s %s", exc.status, exc.reason)
            return _error(exc)

    async def healthz(_: Request) -> JSONResponse:
        problem = await health.problem()
        body = {
            "ok": problem is None,
            "store": "ok" if problem is None else "failing",
            **asdict(stats),
            "queued": committer.queued,
        }
        if problem is not None:
            body["reason"] = problem
        return JSONResponse(body, status_code=200 if problem is None else 503)

    return Starlette(
        routes=[
            Route("/segment", segment, methods=["POST"]),
            Route("/klaviyo", klaviyo, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
